//! Serving on every core the way nginx's workers do (`listen … reuseport`): one thread per
//! core, each with its own single-threaded Tokio runtime and its own `SO_REUSEPORT` listener on
//! the address, so a connection is read, handled, forwarded and answered without a task, a
//! wake-up or an upstream connection crossing threads. The kernel spreads connections over the
//! listeners by their addresses; with one socket shared by every core, whichever core woke
//! first took a whole burst of connections, and kept them. A plain bind of the address comes
//! first, so a port in use (another Fiso included, which could otherwise join the group and take
//! a share of the connections) fails as it did with one listener. What must be shared
//! (breakers, rate limits, credentials, metrics) stays shared through `Arc`s; what is cheaper
//! per core (an upstream connection pool) is kept in a [`PerCore`].
//!
//! The number of cores is [`std::thread::available_parallelism`], which counts a cgroup's CPU
//! quota: a sidecar limited to one CPU serves on one thread.

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use socket2::{Domain, Socket, Type};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{serve, ServerTimeouts};

/// Connections each core's listener queues before accepting them (Tokio's and nginx's
/// `backlog`; the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

thread_local! {
    /// The core a serving thread (or a [`CoreThreads`] thread) serves (none on every other
    /// thread).
    static CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many serving threads a per-core server starts.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// One `T` per serving core plus one for every other thread (the process's shared runtime), so
/// that what a core's requests use is never contended by another core.
#[derive(Debug)]
pub struct PerCore<T>(Box<[T]>);

impl<T> PerCore<T> {
    /// `make` is called once per core and once more for the shared slot.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        PerCore((0..=cores()).map(|_| make()).collect())
    }

    /// `make` is called once per core and once more for the shared slot.
    pub fn try_new<E>(mut make: impl FnMut() -> Result<T, E>) -> Result<Self, E> {
        (0..=cores())
            .map(|_| make())
            .collect::<Result<Vec<_>, E>>()
            .map(|v| PerCore(v.into_boxed_slice()))
    }

    /// Every core's, and the shared one.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    /// The calling thread's own.
    pub fn get(&self) -> &T {
        let shared = self.0.len() - 1;
        let slot = CORE.with(Cell::get).map_or(shared, |core| core.min(shared));
        &self.0[slot]
    }
}

/// A thread per core, each with its own single-threaded Tokio runtime, kept for the process's
/// life: for long-lived tasks the caller spreads over the cores (a Kafka source's partition
/// workers), so that what such a task starts (an upstream connection, a timer) runs on its
/// thread and nothing it waits for is woken from another one. On these threads
/// [`PerCore::get`] gives the core's own. A task goes to the core with the fewest tasks.
#[derive(Debug)]
pub struct CoreThreads {
    cores: Vec<CoreThread>,
}

#[derive(Debug)]
struct CoreThread {
    runtime: tokio::runtime::Handle,
    tasks: Arc<AtomicUsize>,
    /// The thread runs until this is dropped: never for the process's threads, and at once for
    /// those started before one that could not be.
    _stop: oneshot::Sender<()>,
}

/// A core's share of a task: the runtime to spawn it on, counted busy until this is dropped.
#[derive(Debug)]
pub struct CoreLease {
    runtime: tokio::runtime::Handle,
    tasks: Arc<AtomicUsize>,
}

impl CoreLease {
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

impl Drop for CoreLease {
    fn drop(&mut self) {
        self.tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CoreThreads {
    /// The process's core threads, started on first use; `None` (said once) when they could
    /// not be started, and the caller's tasks stay on its own runtime.
    pub fn get() -> Option<&'static CoreThreads> {
        static THREADS: OnceLock<Option<CoreThreads>> = OnceLock::new();
        THREADS
            .get_or_init(|| match CoreThreads::start(cores()) {
                Ok(threads) => Some(threads),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the per-core threads; their tasks run on the shared runtime");
                    None
                }
            })
            .as_ref()
    }

    fn start(n: usize) -> io::Result<CoreThreads> {
        let cores = (0..n)
            .map(|core| {
                let (stop, stopped) = oneshot::channel::<()>();
                let handle = core_thread(&format!("fiso-core-{core}"), core, |runtime| {
                    let _ = runtime.block_on(stopped);
                })?;
                Ok(CoreThread {
                    runtime: handle,
                    tasks: Arc::new(AtomicUsize::new(0)),
                    _stop: stop,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(CoreThreads { cores })
    }

    /// The core with the fewest tasks now, leased for one more until the lease is dropped.
    pub fn lease(&self) -> CoreLease {
        let core = self
            .cores
            .iter()
            .min_by_key(|c| c.tasks.load(Ordering::Relaxed))
            .expect("at least one core");
        core.tasks.fetch_add(1, Ordering::Relaxed);
        CoreLease {
            runtime: core.runtime.clone(),
            tasks: Arc::clone(&core.tasks),
        }
    }
}

/// A server running on every core, started by [`PerCoreServer::start`].
#[derive(Debug)]
pub struct PerCoreServer {
    local_addr: SocketAddr,
    stopped: Vec<oneshot::Receiver<()>>,
}

impl PerCoreServer {
    /// Binds `addr` and serves an app made by `make_app` on every core until `stop`, as
    /// [`serve`] does. A binding error is returned before any thread starts; `name` names the
    /// threads (`{name}-{core}`).
    ///
    /// Each core gets an app of its own: an app is cloned for every request, and a reference
    /// count that two cores change on every request moves its cache line between them.
    pub fn start<S>(
        addr: SocketAddr,
        name: &str,
        make_app: impl Fn() -> S,
        timeouts: watch::Receiver<ServerTimeouts>,
        stop: CancellationToken,
    ) -> io::Result<Self>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let local_addr = std::net::TcpListener::bind(addr)?.local_addr()?;
        let listeners = (0..cores())
            .map(|_| reuse_port(local_addr))
            .collect::<io::Result<Vec<_>>>()?;
        // Cores already serving stop again when a later one cannot start.
        let started = stop.child_token();
        let on_error = started.clone().drop_guard();
        let mut stopped = Vec::with_capacity(listeners.len());
        for (core, listener) in listeners.into_iter().enumerate() {
            let (done, stopped_rx) = oneshot::channel();
            let (app, timeouts, stop) = (make_app(), timeouts.clone(), started.clone());
            core_thread(&format!("{name}-{core}"), core, move |runtime| {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, app, timeouts, stop).await,
                        Err(e) => {
                            tracing::error!(core, error = %e, "serving thread has no listener")
                        }
                    }
                });
                // Tasks still on this runtime (pooled upstream connections) end here,
                // before the server counts as stopped.
                drop(runtime);
                let _ = done.send(());
            })?;
            stopped.push(stopped_rx);
        }
        on_error.disarm();
        Ok(PerCoreServer {
            local_addr,
            stopped,
        })
    }

    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until every core has stopped (after `stop`, once requests in flight are answered).
    pub async fn stopped(self) {
        for core in self.stopped {
            // An error is a thread that panicked: it is not serving either.
            let _ = core.await;
        }
    }
}

/// Starts thread `name` for `core` with a single-threaded runtime of its own, handed to `run`;
/// returns that runtime's handle. On the thread [`PerCore::get`] gives the core's own. A flow's
/// CEL may be evaluated on it, so it gets the stack the CEL depth bound is made for.
fn core_thread(
    name: &str,
    core: usize,
    run: impl FnOnce(tokio::runtime::Runtime) + Send + 'static,
) -> io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(fiso_config::cel_check::EVAL_STACK_SIZE)
        .spawn(move || {
            CORE.with(|c| c.set(Some(core)));
            run(runtime);
        })?;
    Ok(handle)
}

/// A non-blocking listener on `addr` in the address's `SO_REUSEPORT` group.
fn reuse_port(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std's `TcpListener::bind`: a restart rebinds while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_goes_to_the_least_busy_core_and_gets_that_cores_slot() {
        let threads = CoreThreads::start(2).unwrap();
        let slots = Arc::new(PerCore(vec![0, 1, 2].into_boxed_slice()));
        let core_of = |lease: &CoreLease| {
            let slots = Arc::clone(&slots);
            lease.runtime().spawn(async move {
                let thread = std::thread::current().name().map(str::to_owned);
                (*slots.get(), thread)
            })
        };
        let (a, b) = (threads.lease(), threads.lease());
        let (on_a, on_b) = (core_of(&a).await.unwrap(), core_of(&b).await.unwrap());
        assert_ne!(on_a.0, on_b.0, "two leases, two cores");
        assert_eq!(on_a.1, Some(format!("fiso-core-{}", on_a.0)));
        assert_eq!(on_b.1, Some(format!("fiso-core-{}", on_b.0)));
        drop(a);
        let c = threads.lease();
        assert_eq!(
            core_of(&c).await.unwrap().0,
            on_a.0,
            "the core freed is the least busy"
        );
    }

    #[tokio::test]
    async fn core_threads_dropped_end_their_runtimes() {
        let threads = CoreThreads::start(1).unwrap();
        let runtime = threads.lease().runtime().clone();
        runtime.spawn(async {}).await.expect("running");
        drop(threads);
        // The thread ends its runtime once told; from then on a task spawned there is cancelled.
        while runtime.spawn(async {}).await.is_ok() {
            tokio::task::yield_now().await;
        }
    }
}
