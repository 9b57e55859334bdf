//! Stopping a running guest from outside its own control flow.
//!
//! wasmer has no epoch interruption nor interrupt handle. What it has is the `Metering`
//! middleware: every module is compiled with a remaining-points global that the generated code
//! checks and decrements at each basic block, trapping when the points run out. Forcing that
//! global to 0 therefore makes the guest trap at its next branch, call or loop header; a guest
//! blocked in a WASI host call (`poll_oneoff`) is woken by a SIGKILL to its WASIX process
//! instead. [`Run`] is the per-run handle that does both; the [`Watchdog`] thread calls it at
//! the deadline (an interceptor's event, a pooled app's run), the memory limit and the output
//! limit call it from the guest's own thread, and the apps' supervisor calls it to stop a
//! long-running app (`fiso-apps` runs its guests with these same pieces).
//!

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use wasmer_wasix::wasmer_wasix_types::wasi::Signal;
use wasmer_wasix::WasiProcess;

/// How often the watchdog rewrites 0 into the points of a stopped guest until it returns: the
/// guest's own `points -= cost` (a load and a store) can overwrite a single write.
const REWRITE_EVERY: Duration = Duration::from_millis(1);

/// Why a run was stopped from outside; the first reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Timeout,
    /// `memory.grow` (or the initial memory) asked for this many bytes, above `memoryLimit`.
    MemoryLimit(u64),
    OutputTooLarge,
    /// Fiso stops the app: shutdown, reload, or its removal from the config.
    Shutdown,
}

/// One guest run (one event).
#[derive(Default)]
pub struct Run {
    points: Mutex<Option<PointsPtr>>,
    stopped: OnceLock<Stop>,
    /// Set once instantiated, to wake the guest from a blocking host call.
    process: OnceLock<WasiProcess>,
    /// Current size of the guest's linear memory, in bytes (an app's `fiso_app_memory_bytes` gauge).
    pub memory: AtomicU64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("stopped", &self.stopped.get())
            .finish_non_exhaustive()
    }
}

/// The instance's remaining-points global (`VMGlobalDefinition::val`, an `i64`).
struct PointsPtr(NonNull<i64>);

// SAFETY: the pointer is only dereferenced under `Run::points`' lock, and `Run::disarm` removes
// it (under that lock) before the store owning the global is dropped; see `Run::arm`.
unsafe impl Send for PointsPtr {}

impl Run {
    /// Registers the remaining-points global of the instance being created.
    ///
    /// # Safety
    /// `points` must point to the `i64` value of a global owned by the store this run executes
    /// in, and [`Run::disarm`] must be called before that store is dropped (see [`Disarm`]).
    pub unsafe fn arm(&self, points: NonNull<i64>) {
        let mut slot = self.lock_points();
        *slot = Some(PointsPtr(points));
        if self.stopped.get().is_some() {
            // A deadline that passed during instantiation: stop before the first instruction.
            exhaust(&slot);
        }
    }

    /// Forgets the points global: nothing writes to it any more.
    pub fn disarm(&self) {
        *self.lock_points() = None;
    }

    pub fn set_process(&self, process: WasiProcess) {
        let process = self.process.get_or_init(|| process);
        if self.stopped.get().is_some() {
            process.signal_process(Signal::Sigkill);
        }
    }

    /// Makes the guest trap at its next basic block and wakes it from a blocking host call.
    /// Idempotent; keeps the first reason.
    pub fn stop(&self, reason: Stop) {
        let _ = self.stopped.set(reason);
        exhaust(&self.lock_points());
        if let Some(process) = self.process.get() {
            process.signal_process(Signal::Sigkill);
        }
    }

    pub fn stopped(&self) -> Option<Stop> {
        self.stopped.get().copied()
    }

    fn lock_points(&self) -> MutexGuard<'_, Option<PointsPtr>> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn exhaust(points: &Option<PointsPtr>) {
    if let Some(PointsPtr(ptr)) = points {
        // SAFETY: armed pointers are valid (see `Run::arm`) and 8-byte aligned (a
        // `VMGlobalDefinition` is 16-byte aligned). The guest reads and writes the same `i64` with
        // plain loads and stores from JIT code, outside Rust's memory model; an aligned 8-byte
        // store is single-copy atomic on every 64-bit target wasmer supports, so the guest sees
        // either the old value or 0, and a lost race is repaired by the next rewrite.
        unsafe { AtomicI64::from_ptr(ptr.as_ptr()).store(0, Ordering::Relaxed) };
    }
}

/// Calls [`Run::disarm`] when dropped: declare it after the `Store` so that it runs first.
pub struct Disarm<'a>(pub &'a Run);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

/// One process-wide thread that stops runs at their deadline. It sleeps until the earliest
/// deadline (not on a fixed tick), then rewrites the points of every expired run every
/// [`REWRITE_EVERY`] until the run ends and unregisters.
pub struct Watchdog {
    runs: Mutex<Watched>,
    wake: Condvar,
}

#[derive(Default)]
struct Watched {
    next_id: u64,
    runs: HashMap<u64, (Instant, Arc<Run>)>,
}

/// Unregisters a run from the watchdog when dropped.
pub struct Watch {
    watchdog: &'static Watchdog,
    id: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchdog.lock().runs.remove(&self.id);
    }
}

impl Watchdog {
    pub fn get() -> Result<&'static Watchdog, String> {
        static WATCHDOG: OnceLock<Result<&'static Watchdog, String>> = OnceLock::new();
        WATCHDOG
            .get_or_init(|| {
                let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
                    runs: Mutex::default(),
                    wake: Condvar::new(),
                }));
                std::thread::Builder::new()
                    .name("fiso-wasmer-watchdog".into())
                    .spawn(move || watchdog.serve())
                    .map_err(|e| format!("cannot start the wasmer watchdog thread: {e}"))?;
                Ok(watchdog)
            })
            .clone()
    }

    /// Stops `run` at `deadline` unless the returned guard was dropped before.
    pub fn watch(&'static self, deadline: Instant, run: Arc<Run>) -> Watch {
        let mut watched = self.lock();
        let id = watched.next_id;
        watched.next_id += 1;
        watched.runs.insert(id, (deadline, run));
        drop(watched);
        self.wake.notify_one();
        Watch { watchdog: self, id }
    }

    fn lock(&self) -> MutexGuard<'_, Watched> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self) {
        let mut watched = self.lock();
        loop {
            let now = Instant::now();
            let mut wake_at: Option<Instant> = None;
            for (deadline, run) in watched.runs.values() {
                let at = if *deadline <= now {
                    run.stop(Stop::Timeout);
                    now + REWRITE_EVERY
                } else {
                    *deadline
                };
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
            watched = match wake_at {
                None => self.wake.wait(watched).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    self.wake
                        .wait_timeout(watched, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}
