//! Graceful shutdown on SIGTERM (kubelet stopping the pod) or SIGINT (Ctrl-C in `fiso dev`).

use tokio_util::sync::CancellationToken;

/// A token cancelled when the first SIGTERM or SIGINT arrives. Hand out `child_token()`s so
/// parts can also be stopped on their own. Must be called inside a Tokio runtime.
///
/// The handlers are installed before this returns, so a signal sent right after cannot take
/// the default action (killing the process without draining).
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let wait = next_signal();
    tokio::spawn(async move {
        let name = wait.await;
        tracing::info!(signal = name, "shutting down");
        cancel.cancel();
    });
    token
}

/// Completes at the next SIGTERM or SIGINT (its name). The handlers are installed when this is
/// called, so a signal that arrives before the future is polled is not missed; `fiso dev`
/// takes a second Ctrl-C as "stop now".
#[cfg(unix)]
pub fn next_signal() -> impl std::future::Future<Output = &'static str> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};

    let install = |kind, name| {
        signal(kind)
            .inspect_err(|e| tracing::error!(signal = name, error = %e, "cannot handle signal"))
            .ok()
    };
    let term = install(SignalKind::terminate(), "SIGTERM");
    let int = install(SignalKind::interrupt(), "SIGINT");
    async move {
        // A handler that could not be installed never fires.
        let next = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = next(term) => "SIGTERM",
            () = next(int) => "SIGINT",
        }
    }
}

/// Completes at the next Ctrl-C.
#[cfg(not(unix))]
pub fn next_signal() -> impl std::future::Future<Output = &'static str> + Send + 'static {
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(e) => {
                tracing::error!(error = %e, "cannot handle Ctrl-C");
                std::future::pending().await
            }
        }
    }
}
