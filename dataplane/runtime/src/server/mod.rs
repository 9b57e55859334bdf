//! The data plane's HTTP servers (the Link proxy, Flow HTTP sources, the metrics / health port):
//! HTTP/1.1 and h2c on one listener, and every connection has a deadline, so that idle or
//! trickling clients cannot hold file descriptors until the process runs out:
//!
//! - from accept to a complete first request: `readHeaderTimeout` (nginx
//!   `client_header_timeout`) — a connection that sends nothing, trickles its headers, or opens
//!   HTTP/2 and never a stream is closed;
//! - between requests: `idleTimeout` (nginx `keepalive_timeout`; HTTP/2 frames without a stream
//!   do not count), then `readHeaderTimeout` from the next request's first byte;
//! - a request body that stops arriving for `bodyTimeout` (nginx `client_body_timeout`) fails
//!   the read with [`BodyTimeout`], which handlers answer 408;
//! - a connection closed with a request body unread lingers ([`socket`]), so an early answer
//!   (413, 403, 404, 408) reaches a client that is still sending.
//!
//! Accepting backs off while the process is out of file descriptors ([`accept`]). Stopping lets
//! requests in flight finish. A server on the hot path runs on every core ([`PerCoreServer`]).
//!
//! `axum::serve` exposes none of this, hence this accept loop.

mod accept;
mod activity;
mod body;
mod per_core;
pub mod socket;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use fiso_config::common::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_READ_HEADER_TIMEOUT as READ_HEADER,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

pub use accept::Acceptor;
pub use body::{body_timeout, is_body_timeout, BodyTimeout, TrackedBody};
pub use per_core::{cores, CoreLease, CoreThreads, PerCore, PerCoreServer};

use activity::ConnActivity;
use body::ProgressBody;
use socket::Socket;

/// Default `readHeaderTimeout` of the Link and Flow HTTP sources.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = READ_HEADER;

/// How long an HTTP/2 connection may take to close after its deadline (GOAWAY sent).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Server PINGs on an HTTP/2 connection that received nothing for this long; a peer that
/// does not answer within [`H2_KEEPALIVE_TIMEOUT`] is gone (its requests are abandoned).
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadlines of one server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    pub read_header: Duration,
    pub idle: Duration,
    pub body: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            read_header: READ_HEADER,
            idle: DEFAULT_IDLE_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
        }
    }
}

impl ServerTimeouts {
    /// The configured values, defaults where unset.
    pub fn from_config(
        read_header: Option<Duration>,
        idle: Option<Duration>,
        body: Option<Duration>,
    ) -> Self {
        let d = Self::default();
        ServerTimeouts {
            read_header: read_header.unwrap_or(d.read_header),
            idle: idle.unwrap_or(d.idle),
            body: body.unwrap_or(d.body),
        }
    }

    /// For a server whose timeouts never change.
    pub fn fixed(self) -> watch::Receiver<ServerTimeouts> {
        watch::channel(self).1
    }
}

/// Serves `app` on `listener` until `stop`, then waits for open connections to finish their
/// requests in flight. Each new connection takes the current `timeouts`.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    timeouts: watch::Receiver<ServerTimeouts>,
    stop: CancellationToken,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's watchdog bounds the head (and idle time, which hyper's own header
        // timer would cut to readHeaderTimeout).
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    let connections = TaskTracker::new();
    let mut acceptor = Acceptor::new(listener);
    loop {
        let tcp = tokio::select! {
            () = stop.cancelled() => break,
            tcp = acceptor.accept() => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let t = *timeouts.borrow();
        let activity = ConnActivity::new();
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let request = activity.request_started(req.version() == http::Version::HTTP_2);
                let req = req.map(|b| ProgressBody::wrap(b, t.body, request.activity().clone()));
                let answer = app.clone().oneshot(req);
                async move {
                    let Ok(response) = answer.await;
                    Ok::<_, Infallible>(response.map(|b| TrackedBody::new(b, request)))
                }
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(Socket::new(tcp, activity.clone())), service)
            .into_owned();
        // The deadline and the stop are watched by a task of their own, so that the
        // connection's task, woken several times per request, polls nothing but the
        // connection and one flag.
        let (close, closing) = oneshot::channel();
        tokio::spawn(watch_connection(activity, t, stop.clone(), close));
        connections.spawn(async move {
            tokio::pin!(connection);
            let stopping = tokio::select! {
                biased;
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                    return;
                }
                Ok(stopping) = closing => stopping,
            };
            connection.as_mut().graceful_shutdown();
            if stopping {
                let _ = connection.await;
            } else {
                tracing::debug!("closing a connection past its deadline");
                let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
            }
        });
    }
    drop(acceptor);
    connections.close();
    connections.wait().await;
}

/// Tells a connection to close, with `true` when the server stops and `false` when the
/// connection is past its deadline; ends without a word when the connection has.
async fn watch_connection(
    activity: Arc<ConnActivity>,
    t: ServerTimeouts,
    stop: CancellationToken,
    mut close: oneshot::Sender<bool>,
) {
    let stopping = tokio::select! {
        () = close.closed() => return,
        () = activity.expired(&t) => false,
        () = stop.cancelled() => true,
    };
    let _ = close.send(stopping);
}
