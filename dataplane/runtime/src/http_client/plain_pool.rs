//! The connection pool of one plain-HTTP origin, on [`h1`]'s connections.
//!
//! hyper-util's pool is general (any number of hosts, HTTP/2 multiplexing, checkout waiters)
//! and pays for it on every request: a hashed pool key, a boxed future, and a task spawned to
//! wait until the connection is free again. An origin of the Link or the Flow's HTTP sink is
//! one host, so here a request takes the most recently used idle connection off a stack (or
//! opens one), and the connection goes back on the stack when its answer has been read to the
//! end, by whoever reads it: no key, and no task.
//!
//! Kept from hyper-util's client: connections come from the same `HttpConnector` (its connect
//! timeout, `TCP_NODELAY`, keepalive, and its words for a DNS failure); a request that a
//! reused connection could not even start sending (the server closed it while idle) is sent
//! again on another connection; an idle connection is closed after the idle timeout; `Host` is
//! written unless the request has one; the request line is in origin form.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt as _;

use super::h1::{AnswerBody, Conn, ExchangeError};
use super::RequestError;

/// What a request body must be to go through a pool.
pub trait PoolBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}
impl<B> PoolBody for B where B: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) struct PlainPool {
    connector: HttpConnector,
    /// The origin's URI: the connector resolves and connects to its host and port.
    origin: Uri,
    host: HeaderValue,
    /// Most recently used last.
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    reaper_started: AtomicBool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl PlainPool {
    pub(super) fn new(
        connector: HttpConnector,
        origin: Uri,
        host: HeaderValue,
        idle_timeout: Duration,
    ) -> Self {
        PlainPool {
            connector,
            origin,
            host,
            idle: Mutex::new(Vec::new()),
            idle_timeout,
            reaper_started: AtomicBool::new(false),
        }
    }

    /// Sends `request` (to this pool's origin, whatever its URI's scheme and authority) and
    /// returns the answer as soon as its head has arrived.
    pub(super) async fn request<B: PoolBody>(
        self: &Arc<Self>,
        mut request: Request<B>,
    ) -> Result<Response<ResponseBody>, RequestError> {
        // An absolute URI is written in origin form (`OriginClient::uri` makes it so already).
        if request.uri().authority().is_some() {
            let target = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(target);
        }
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.host.clone());
        }
        let (conn, reused) = match self.checkout() {
            Some(conn) => (conn, true),
            // Apart: connecting is KiBs of future that a request on a pooled connection never
            // needs.
            None => (crate::outline::boxed(|| self.connect()).await?, false),
        };
        let answer = conn
            .exchange(reused, request, || crate::outline::boxed(|| self.connect()))
            .await?;
        let (parts, ()) = answer.response.into_parts();
        let mut body = ResponseBody(Inner::Plain {
            body: answer.body,
            pool: Arc::clone(self),
        });
        body.give_back_if_read();
        Ok(Response::from_parts(parts, body))
    }

    /// The most recently used idle connection that is still open and not expired.
    pub(super) fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() < self.idle_timeout && !conn.closed_while_idle() {
                return Some(conn);
            }
        }
        None
    }

    fn check_in(&self, conn: Conn) {
        let since = Instant::now();
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Idle { conn, since });
    }

    async fn connect(self: &Arc<Self>) -> Result<Conn, RequestError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(|e| RequestError::Connect(e.into()))?;
        self.start_reaper();
        Ok(Conn::new(io.into_inner()))
    }

    /// Closes idle connections past the idle timeout, until the pool is dropped. Started with
    /// the first connection, on its runtime.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = self.idle_timeout / 2;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pool) = Weak::upgrade(&pool) else {
                    return;
                };
                pool.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|idle| idle.since.elapsed() < pool.idle_timeout);
            }
        });
    }
}

/// The body of an answer: from a pool's connection, which goes back to the pool once the body
/// has been read to its end (a body dropped before that closes it), or hyper-util's (TLS).
pub struct ResponseBody(Inner);

enum Inner {
    Plain {
        body: AnswerBody,
        pool: Arc<PlainPool>,
    },
    Tls(Incoming),
}

impl ResponseBody {
    pub(super) fn unpooled(inner: Incoming) -> Self {
        ResponseBody(Inner::Tls(inner))
    }

    fn give_back_if_read(&mut self) {
        if let Inner::Plain { body, pool } = &mut self.0 {
            if let Some(conn) = body.take_reusable() {
                pool.check_in(conn);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        match &mut this.0 {
            Inner::Plain { body, .. } => {
                let frame = body.poll_frame(cx);
                if let Poll::Ready(None | Some(Ok(_))) = frame {
                    this.give_back_if_read();
                }
                frame
            }
            Inner::Tls(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map_err(ExchangeError::Tls),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Plain { body, .. } => body.is_end_stream(),
            Inner::Tls(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Plain { body, .. } => body.size_hint(),
            Inner::Tls(incoming) => incoming.size_hint(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Plain { .. } => "ResponseBody(http)",
            Inner::Tls(_) => "ResponseBody(https)",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper::server::conn::http1 as server;
    use hyper_util::rt::TokioIo;
    use tokio::sync::mpsc;

    use super::*;
    use crate::http_client::{ClientSettings, POOL_IDLE_TIMEOUT};

    /// A real HTTP/1.1 server on 127.0.0.1 that answers `{Host} {request target}`, or 64 KiB
    /// at `/big`, and counts the connections it accepted and saw end.
    struct Upstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        ended: mpsc::UnboundedReceiver<()>,
    }

    async fn upstream(keep_alive: bool) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let ended = ended_tx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let body = if req.uri().path() == "/big" {
                            Bytes::from(vec![b'x'; 64 * 1024])
                        } else {
                            let host = req.headers()[HOST].to_str().unwrap().to_owned();
                            Bytes::from(format!("{host} {}", req.uri()))
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    });
                    let _ = server::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                    let _ = ended.send(());
                });
            }
        });
        Upstream {
            addr,
            accepted,
            ended,
        }
    }

    fn pool(addr: SocketAddr, idle_timeout: Duration) -> Arc<PlainPool> {
        Arc::new(PlainPool::new(
            ClientSettings::default().tcp_connector(),
            format!("http://{addr}/").parse().unwrap(),
            HeaderValue::from_str(&addr.to_string()).unwrap(),
            idle_timeout,
        ))
    }

    fn get(uri: String) -> Request<Empty<Bytes>> {
        Request::get(uri).body(Empty::new()).unwrap()
    }

    async fn text(answer: Response<ResponseBody>) -> String {
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_reuse_one_connection_in_origin_form_with_the_origins_host() {
        let up = upstream(true).await;
        let pool = pool(up.addr, POOL_IDLE_TIMEOUT);
        let addr = up.addr;
        for _ in 0..3 {
            let answer = pool.request(get(format!("http://{addr}/here?x=1"))).await;
            assert_eq!(text(answer.unwrap()).await, format!("{addr} /here?x=1"));
        }
        let mut own_host = get(format!("http://{addr}/"));
        own_host
            .headers_mut()
            .insert(HOST, HeaderValue::from_static("virtual.example"));
        let answer = pool.request(own_host).await.unwrap();
        assert_eq!(text(answer).await, "virtual.example /");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_is_free_again_only_when_its_answer_was_read() {
        let up = upstream(true).await;
        let pool = pool(up.addr, POOL_IDLE_TIMEOUT);
        let big = format!("http://{}/big", up.addr);
        let unread = pool.request(get(big.clone())).await.unwrap();
        let second = pool.request(get(big.clone())).await.unwrap();
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "the first is busy");
        assert_eq!(text(unread).await.len(), 64 * 1024);
        assert_eq!(text(second).await.len(), 64 * 1024);
        for _ in 0..2 {
            let answer = pool.request(get(big.clone())).await.unwrap();
            assert_eq!(text(answer).await.len(), 64 * 1024);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "both were reused");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let mut up = upstream(false).await;
        let pool = pool(up.addr, POOL_IDLE_TIMEOUT);
        for n in 1..=2 {
            let answer = pool.request(get(format!("http://{}/", up.addr))).await;
            assert_eq!(text(answer.unwrap()).await, format!("{} /", up.addr));
            up.ended.recv().await.unwrap();
            assert_eq!(up.accepted.load(Ordering::SeqCst), n);
        }
    }

    /// A server that answers 413 as soon as a request's head arrives and never reads its body
    /// (a real server would; holding it is the fault), counting connections.
    async fn early_answering_server() -> (SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    let _ = tcp.read(&mut head).await;
                    let answer = "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
                    tcp.write_all(answer.as_bytes()).await.unwrap();
                    std::future::pending::<()>().await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_connection_still_sending_its_request_is_not_handed_to_the_next() {
        let (addr, accepted) = early_answering_server().await;
        let pool: Arc<PlainPool> = Arc::new(PlainPool::new(
            ClientSettings::default().tcp_connector(),
            format!("http://{addr}/").parse().unwrap(),
            HeaderValue::from_str(&addr.to_string()).unwrap(),
            POOL_IDLE_TIMEOUT,
        ));
        let post = |size: usize| {
            Request::post(format!("http://{addr}/upload"))
                .body(Full::new(Bytes::from(vec![b'x'; size])))
                .unwrap()
        };
        // More than the socket buffers hold: the body can never be written out.
        let stuck = pool.request(post(64 * 1024 * 1024)).await.unwrap();
        assert_eq!(stuck.status(), 413);
        let next = tokio::time::timeout(Duration::from_secs(60), pool.request(post(10)))
            .await
            .expect("the next request is not queued behind the unsent body")
            .unwrap();
        assert_eq!(next.status(), 413);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A server that answers each request as if keeping the connection open, and closes the
    /// first connection when told (while it sits idle in the pool), counting connections.
    async fn idle_closing_server() -> (
        SocketAddr,
        Arc<AtomicUsize>,
        tokio::sync::oneshot::Sender<()>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let (close, told) = tokio::sync::oneshot::channel::<()>();
        let (closed, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut on_close = Some((told, closed));
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let first = on_close.take();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        let n = tcp.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    tcp.write_all(answer.as_bytes()).await.unwrap();
                    match first {
                        Some((told, closed)) => {
                            told.await.unwrap();
                            drop(tcp);
                            closed.send(()).unwrap();
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (addr, accepted, close, closed_rx)
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_server_closed_while_idle_goes_out_on_another() {
        let (addr, accepted, close, closed) = idle_closing_server().await;
        let pool = pool(addr, POOL_IDLE_TIMEOUT);
        let answer = pool.request(get(format!("http://{addr}/"))).await;
        assert_eq!(text(answer.unwrap()).await, "ok");
        assert_eq!(pool.idle.lock().unwrap().len(), 1, "kept for the next");
        close.send(()).unwrap();
        closed.await.unwrap();
        let answer = pool.request(get(format!("http://{addr}/"))).await;
        assert_eq!(text(answer.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let mut up = upstream(true).await;
        let pool = pool(up.addr, Duration::from_millis(50));
        let answer = pool.request(get(format!("http://{}/", up.addr))).await;
        text(answer.unwrap()).await;
        // A watchdog, not a timing assertion: without the reaper this would never end.
        tokio::time::timeout(Duration::from_secs(60), up.ended.recv())
            .await
            .expect("the idle connection is closed")
            .unwrap();
        assert!(pool.idle.lock().unwrap().is_empty());
    }
}
