//! A programmable HTTP sink: records every request (method, path, headers, body) and answers
//! from a script ("503 twice, then 200", "429 with `Retry-After: 1`", "hold until released").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::DEADLINE;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The `Host` header, or the `:authority` of an HTTP/2 request.
    pub host: Option<String>,
    pub version: axum::http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request (with its body) had arrived.
    pub received_at: Instant,
    /// The status the script answered it with.
    pub status: StatusCode,
}

impl Recorded {
    /// A header as text (`None` when absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "sink body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Released by the test to let held replies go out.
#[derive(Debug, Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(watch::Sender::new(false)))
    }
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every held reply (now and later) go out.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    gate: Option<Gate>,
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status: StatusCode::from_u16(status).expect("a valid status code"),
            headers: Vec::new(),
            body: Bytes::new(),
            gate: None,
        }
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, body: &Value) -> Self {
        Reply::status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Holds the answer (after recording the request) until `gate` opens.
    pub fn held_until(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    fn to_response(&self) -> Response {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.status_mut() = self.status;
        for (k, v) in &self.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        resp
    }
}

/// The replies to give, in order: each of `first` once, then `then` for every request after.
#[derive(Debug, Clone)]
pub struct Script {
    first: VecDeque<Reply>,
    then: Reply,
}

impl Script {
    pub fn always(reply: Reply) -> Self {
        Script {
            first: VecDeque::new(),
            then: reply,
        }
    }

    pub fn first(first: impl IntoIterator<Item = Reply>, then: Reply) -> Self {
        Script {
            first: first.into_iter().collect(),
            then,
        }
    }

    fn next(&mut self) -> Reply {
        self.first.pop_front().unwrap_or_else(|| self.then.clone())
    }
}

struct SinkState {
    script: Mutex<Script>,
    requests: Mutex<Vec<Recorded>>,
    received: watch::Sender<usize>,
}

impl SinkState {
    fn requests(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A sink server on 127.0.0.1 (free port); stops when dropped.
pub struct SinkServer {
    addr: SocketAddr,
    state: Arc<SinkState>,
    task: JoinHandle<()>,
}

impl SinkServer {
    /// Answers every request with `200 {"received":true}`.
    pub async fn ok() -> Self {
        Self::start(Script::always(Reply::json(
            200,
            &serde_json::json!({"received": true}),
        )))
        .await
    }

    pub async fn start(script: Script) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), script).await
    }

    /// [`Self::start`] on `addr` (e.g. the address of a sink that was stopped: a sink coming
    /// back after an outage).
    pub async fn start_at(addr: SocketAddr, script: Script) -> Self {
        let (listener, addr, state, app) = Self::prepare(addr, script).await;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SinkServer { addr, state, task }
    }

    /// [`Self::start`] over TLS (HTTP/1.1 and HTTP/2 by ALPN) with `cert`'s certificate.
    pub async fn start_tls(script: Script, cert: &crate::tls::TestCert) -> Self {
        let (listener, addr, state, app) =
            Self::prepare("127.0.0.1:0".parse().unwrap(), script).await;
        let acceptor = cert.acceptor();
        let task = tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, service) = (acceptor.clone(), service.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        SinkServer { addr, state, task }
    }

    async fn prepare(
        addr: SocketAddr,
        script: Script,
    ) -> (
        tokio::net::TcpListener,
        SocketAddr,
        Arc<SinkState>,
        axum::Router,
    ) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("binding the sink server");
        let addr = listener.local_addr().expect("sink address");
        let state = Arc::new(SinkState {
            script: Mutex::new(script),
            requests: Mutex::default(),
            received: watch::Sender::new(0),
        });
        let app = axum::Router::new()
            .fallback(record_and_reply)
            .with_state(Arc::clone(&state));
        (listener, addr, state, app)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests().clone()
    }

    /// The requests received after the first `start` ones (cheap polling of a busy sink).
    pub fn requests_from(&self, start: usize) -> Vec<Recorded> {
        self.state
            .requests()
            .get(start..)
            .unwrap_or_default()
            .to_vec()
    }

    pub fn count(&self) -> usize {
        self.state.requests().len()
    }

    /// Waits until at least `n` requests arrived (panics after `DEADLINE`); returns them all.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.state.received.subscribe();
        // The watch's read guard is dropped here, before the requests' lock is taken: a
        // handler publishes its count holding that lock, so keeping the guard deadlocks.
        let reached = tokio::time::timeout(DEADLINE, rx.wait_for(|count| *count >= n))
            .await
            .is_ok_and(|waited| waited.is_ok());
        assert!(
            reached,
            "the sink got {} request(s), expected at least {n}",
            self.count()
        );
        self.requests()
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record_and_reply(State(state): State<Arc<SinkState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let reply = state
        .script
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .next();
    // The count is published under the requests' lock: two handlers that published after it
    // could do so out of order, and leave the count below what arrived.
    {
        let mut requests = state.requests();
        requests.push(Recorded {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            host: parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| parts.uri.authority().map(|a| a.to_string())),
            version: parts.version,
            headers: parts.headers,
            body,
            received_at: Instant::now(),
            status: reply.status,
        });
        state.received.send_replace(requests.len());
    }
    if let Some(gate) = &reply.gate {
        gate.wait().await;
    }
    reply.to_response()
}
