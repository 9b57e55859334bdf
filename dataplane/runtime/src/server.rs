//! The data plane's HTTP servers (the Link proxy, Flow HTTP sources): HTTP/1.1 and h2c on one
//! listener, with a deadline for a request's headers so a client that trickles them
//! (slowloris) cannot hold a connection forever, and a graceful stop that lets requests in
//! flight finish.
//!
//! `axum::serve` exposes no hyper settings, hence this accept loop.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Default of the Link's `readHeaderTimeout`; what Flow HTTP sources use.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop`, then waits for open connections to finish their
/// requests in flight.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    read_header_timeout: Duration,
    stop: CancellationToken,
) where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let tcp = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: the listener itself is fine; back
                    // off briefly instead of spinning on the same error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(tcp), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
