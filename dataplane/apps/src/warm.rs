//! The warm instances of a `pooled` app: up to `poolSize` guests instantiated ahead of their
//! request (module instantiated, WASIX environment, preopens and stdio built), so that a request
//! only writes its stdin and calls `_start`.
//!
//! A WASI command runs once, so each instance serves one request; taking one starts the
//! instantiation of its replacement on a blocking thread. The pool belongs to one version of the
//! app: a reload builds a new pool and the old one is dropped with its unstarted instances, and
//! replacements finished after that are dropped too. An instantiation that fails (memory limit,
//! preopen) is logged once and the pool stops refilling: each request then instantiates its own
//! guest (and answers with the failure), and the first that succeeds restarts the refilling.

use std::io::Write as _;
use std::sync::{Arc, Mutex, Weak};

use wasmer_wasix::virtual_fs::{Pipe, PipeTx};

use crate::engine::{Capture, Exit, Guest, Instance, LogLines, RunHandle, Stdio};
use crate::metrics::AppMetrics;

/// A guest instantiated for one request, with the host ends of its stdio.
pub(crate) struct Ready {
    pub(crate) instance: Instance,
    stdin: PipeTx,
    pub(crate) stdout: Capture,
    pub(crate) stderr: LogLines,
}

impl Ready {
    /// Instantiates `guest` on this thread, stopped by `run`, its stdout bounded to `stdout_limit`.
    pub(crate) fn instantiate(
        guest: &Guest,
        run: Arc<RunHandle>,
        stdout_limit: u64,
    ) -> Result<Ready, Exit> {
        let (stdin, guest_stdin) = stdin_pipe();
        let stdout = Capture::stdout(stdout_limit, run.clone());
        let stderr = LogLines::new(&guest.app, "stderr");
        let instance = guest.instantiate(
            run,
            Stdio {
                stdin: Box::new(guest_stdin),
                stdout: Box::new(stdout.clone()),
                stderr: Box::new(stderr.clone()),
            },
        )?;
        Ok(Ready {
            instance,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Gives the guest `input` as its whole stdin and runs it to its end on this thread.
    pub(crate) fn start(self, input: &[u8]) -> Exit {
        let Ready {
            instance,
            mut stdin,
            stderr,
            ..
        } = self;
        // The pipe is unbounded and the guest has not started: the write cannot block or fail
        // while the guest end is alive, and dropping the sender is the guest's end of file.
        let _ = stdin.write_all(input);
        drop(stdin);
        let exit = instance.start();
        stderr.flush_rest();
        exit
    }
}

/// The guest end of a pipe whose only sender is the returned host end.
fn stdin_pipe() -> (PipeTx, Pipe) {
    let (host, guest_rx) = Pipe::new().split();
    // A `Pipe` carries a sender of its own, which would keep the guest from ever seeing end of
    // file: give the guest end one that is already closed.
    let (mut closed, _) = Pipe::new().split();
    closed.close();
    (host, Pipe::combine(closed, guest_rx))
}

pub(crate) struct WarmPool {
    app: String,
    guest: Arc<Guest>,
    size: usize,
    stdout_limit: u64,
    metrics: AppMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ready: Vec<Ready>,
    /// Instantiations under way.
    filling: usize,
    /// The last instantiation failed: stop refilling until a request's own succeeds.
    failing: bool,
}

impl WarmPool {
    /// A pool of `size` instances of `guest`, filling in the background from now on.
    pub(crate) fn start(
        app: &str,
        guest: Arc<Guest>,
        size: usize,
        stdout_limit: u64,
        metrics: AppMetrics,
    ) -> Arc<Self> {
        let pool = Arc::new(WarmPool {
            app: app.to_owned(),
            guest,
            size,
            stdout_limit,
            metrics,
            state: Mutex::default(),
        });
        pool.metrics.set_warm(app, 0);
        pool.fill();
        pool
    }

    /// A warm instance if one is ready; starts instantiating its replacement either way.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Ready> {
        let ready = {
            let mut state = self.lock();
            let ready = state.ready.pop();
            self.metrics.set_warm(&self.app, state.ready.len());
            ready
        };
        self.fill();
        ready
    }

    /// A request instantiated the guest itself: preparing instances works again.
    pub(crate) fn recovered(self: &Arc<Self>) {
        let was_failing = std::mem::replace(&mut self.lock().failing, false);
        if was_failing {
            self.fill();
        }
    }

    fn fill(self: &Arc<Self>) {
        let missing = {
            let mut state = self.lock();
            if state.failing {
                return;
            }
            let missing = self.size.saturating_sub(state.ready.len() + state.filling);
            state.filling += missing;
            missing
        };
        for _ in 0..missing {
            let pool = Arc::downgrade(self);
            let guest = self.guest.clone();
            let stdout_limit = self.stdout_limit;
            tokio::task::spawn_blocking(move || {
                let ready = Ready::instantiate(&guest, Arc::default(), stdout_limit);
                drop(guest);
                Self::filled(&pool, ready);
            });
        }
    }

    fn filled(pool: &Weak<Self>, ready: Result<Ready, Exit>) {
        // A pool dropped meanwhile (reload, removal): the instance goes with it.
        let Some(pool) = pool.upgrade() else { return };
        let mut state = pool.lock();
        state.filling -= 1;
        match ready {
            Ok(ready) => state.ready.push(ready),
            Err(exit) => {
                if !state.failing {
                    tracing::warn!(app = %pool.app, "cannot prepare a warm instance: the guest {exit}");
                }
                state.failing = true;
            }
        }
        pool.metrics.set_warm(&pool.app, state.ready.len());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
