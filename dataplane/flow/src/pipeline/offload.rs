//! Evaluating heavy CEL (loops within their budget) without holding up the async workers: the
//! other flows and the health server keep being served while an event burns its budget.

/// Runs `f`, which may take long (up to its CEL budget), without holding up the other tasks of
/// the async worker it is called on, nor competing with them for the CPU: on the multi-threaded
/// runtime the worker hands its queue to another thread for the duration, and `f` runs on a
/// thread of its own at a lower priority (nice 10), so other flows and the health server keep
/// being served while events burn their budget on every core.
pub(super) fn off_the_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| in_the_background(f))
        }
        _ => f(),
    }
}

/// `f` on a fresh thread with the CEL stack and a lowered priority; the thread ends with `f`,
/// so no thread of the runtime is ever left deprioritised (an unprivileged process could not
/// raise it back).
fn in_the_background<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut job = Some(f);
    let ran = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("fiso-cel".to_owned())
            .stack_size(fiso_config::cel_check::EVAL_STACK_SIZE)
            .spawn_scoped(scope, || {
                // On Linux the nice value is per thread: `0` is the calling thread. Failing to
                // lower it only loses the preference.
                // SAFETY: setpriority has no memory-safety preconditions.
                #[cfg(target_os = "linux")]
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                }
                job.take().map(|f| f())
            });
        match spawned {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread for a CEL evaluation; evaluating on the worker");
                None
            }
        }
    });
    // Out of threads, the job was not taken: evaluate it here rather than fail the event.
    ran.unwrap_or_else(|| {
        job.take()
            .map(|f| f())
            .expect("a job that did not run is still here")
    })
}
