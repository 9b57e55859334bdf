//! Retry per target: `maxAttempts` attempts in all, waiting per `backoff` (exponential /
//! constant / linear from `initialInterval`, capped at `maxInterval`, ±`jitter`) or the
//! upstream's `Retry-After` (capped at `maxInterval`). A 5xx, a 429 and a connection error are
//! retried; idempotent methods always, POST / PATCH only with an `Idempotency-Key` header or
//! `retryNonIdempotent: true`. After the last attempt the last upstream response is returned
//! as it came, body included.
//!
//! A body is buffered for replay only up to [`REPLAY_LIMIT`]: a larger (or unknown-length and
//! longer) body streams through in a single attempt. Buffering waits for the caller's body at
//! most the target's `timeout` (then 408 `REQUEST_TIMEOUT`): a client that stops sending
//! (slowloris) does not hold the request forever. A body that breaks off while it is buffered
//! is the client's fault ([`ClientFault`]): nothing is sent upstream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use fiso_config::link::{
    RetryConfig, DEFAULT_JITTER, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
};
use fiso_runtime::backoff::{base_delay, parse_retry_after};
use fiso_runtime::outline;
use futures::future::BoxFuture;
use futures::StreamExt;
use http::{header, Method, StatusCode};
use http_body_util::BodyExt;

use crate::client_fault::ClientFault;
use crate::layer::{Concern, Next};
use crate::metrics::LinkMetrics;
use crate::response::{error, ErrorCode, Request, Response};

/// Largest body kept in memory so that it can be sent again.
pub const REPLAY_LIMIT: usize = 1024 * 1024;

/// The retry settings of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: fiso_config::common::Backoff,
    pub initial: Duration,
    pub max: Duration,
    pub jitter: f64,
    /// Retry POST / PATCH without an `Idempotency-Key` too.
    pub non_idempotent: bool,
    /// How long the caller's body may take to arrive when it is buffered for replays.
    pub body_timeout: Duration,
}

impl RetryPolicy {
    pub fn new(cfg: Option<&RetryConfig>, non_idempotent: bool, body_timeout: Duration) -> Self {
        let cfg = cfg.cloned().unwrap_or_default();
        RetryPolicy {
            max_attempts: cfg.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
            backoff: cfg.backoff.unwrap_or_default(),
            initial: cfg.initial_interval.unwrap_or(DEFAULT_RETRY_INITIAL),
            max: cfg.max_interval.unwrap_or(DEFAULT_RETRY_MAX),
            jitter: cfg.jitter.unwrap_or(DEFAULT_JITTER).clamp(0.0, 1.0),
            non_idempotent,
            body_timeout,
        }
    }

    /// The wait before retry `retry` (0 = the first retry).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max);
        }
        let base = base_delay(self.backoff, self.initial, self.max, retry);
        if self.jitter == 0.0 {
            return base;
        }
        // Uniform in [base·(1-jitter), base·(1+jitter)], never beyond maxInterval.
        let factor = 1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0);
        base.mul_f64(factor).min(self.max)
    }

    /// Whether a request may be sent more than once.
    pub fn may_retry(&self, req: &Request) -> bool {
        if self.max_attempts <= 1 {
            return false;
        }
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        idempotent || self.non_idempotent || req.headers().contains_key("idempotency-key")
    }
}

/// Whether an answer is worth another attempt.
pub fn is_retryable(response: &Response) -> bool {
    let status = response.status();
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// The retry concern of one target.
#[derive(Clone)]
pub struct Retry {
    target: Arc<str>,
    policy: Arc<RetryPolicy>,
    metrics: LinkMetrics,
}

impl Retry {
    pub fn new(target: &str, policy: RetryPolicy, metrics: LinkMetrics) -> Self {
        Retry {
            target: target.into(),
            policy: Arc::new(policy),
            metrics,
        }
    }
}

impl Concern for Retry {
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response> {
        if !self.policy.may_retry(&req) {
            return next.handle(req);
        }
        let (this, next) = (self.clone(), Arc::clone(next));
        outline::pinned(|| async move {
            let (parts, body) = req.into_parts();
            let buffered =
                tokio::time::timeout(this.policy.body_timeout, replayable(&parts.headers, body));
            let body = match buffered.await {
                Ok(Replay::Buffered(bytes)) => bytes,
                Ok(Replay::Streaming(body)) => {
                    return next.handle(Request::from_parts(parts, body)).await;
                }
                Ok(Replay::Broken(fault)) => return fault.response(),
                Err(_) => {
                    let mut response = error(
                        ErrorCode::RequestTimeout,
                        format!(
                            "the request body did not arrive within {}",
                            humantime::format_duration(this.policy.body_timeout)
                        ),
                    );
                    response.extensions_mut().insert(ClientFault::Stalled);
                    return response;
                }
            };
            let mut attempt = 1;
            loop {
                let mut req = Request::new(Body::from(body.clone()));
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                *req.extensions_mut() = parts.extensions.clone();
                if fiso_runtime::otel::enabled() {
                    req.extensions_mut()
                        .insert(crate::upstream::AttemptNumber(attempt));
                }
                let response = next.handle(req).await;
                if attempt >= this.policy.max_attempts || !is_retryable(&response) {
                    return response;
                }
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let wait = this.policy.delay(attempt - 1, retry_after);
                tracing::debug!(
                    target_name = %this.target, status = response.status().as_u16(),
                    attempt, wait_ms = wait.as_millis() as u64, "retrying upstream request"
                );
                // The answer is dropped unread: the connection goes back to the pool or closes.
                drop(response);
                tokio::time::sleep(wait).await;
                attempt += 1;
                this.metrics.retry(&this.target, attempt);
            }
        })
    }
}

enum Replay {
    Buffered(Bytes),
    Streaming(Body),
    /// The caller's body broke off before it was complete.
    Broken(ClientFault),
}

/// Reads `body` into memory if it fits in [`REPLAY_LIMIT`]; otherwise hands back a body that
/// streams what was read followed by the rest.
async fn replayable(headers: &http::HeaderMap, body: Body) -> Replay {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > REPLAY_LIMIT as u64) {
        return Replay::Streaming(body);
    }
    let mut body = body;
    let mut read = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Replay::Buffered(read.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
                if read.len() > REPLAY_LIMIT {
                    let head =
                        futures::stream::once(async move { Ok::<_, axum::Error>(read.freeze()) });
                    let rest = body.into_data_stream();
                    return Replay::Streaming(Body::from_stream(head.chain(rest)));
                }
            }
            Some(Err(e)) => return Replay::Broken(ClientFault::of(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::layer::{layer, leaf};

    fn policy(max_attempts: u32, jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: fiso_config::common::Backoff::Exponential,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter,
            non_idempotent: false,
            body_timeout: Duration::from_secs(30),
        }
    }

    /// An upstream answering `statuses` in turn (the last one forever), counting calls and
    /// recording when each came (tokio's paused clock).
    /// When each upstream call came (tokio's paused clock) and the body it carried.
    type Calls = Arc<std::sync::Mutex<Vec<(tokio::time::Instant, Bytes)>>>;

    fn upstream(statuses: Vec<u16>) -> (Next, Calls) {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let n = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&calls);
        let up = leaf((), move |(), req: Request| {
            let i = n.fetch_add(1, Ordering::SeqCst) as usize;
            let status = statuses[i.min(statuses.len() - 1)];
            let seen = Arc::clone(&seen);
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                seen.lock()
                    .unwrap()
                    .push((tokio::time::Instant::now(), body));
                let mut r = Response::new(Body::from(format!("answer {i}")));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                if status == 429 {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                }
                r
            }
        });
        (up, calls)
    }

    fn request(method: Method, body: &'static str) -> Request {
        let mut r = Request::new(Body::from(body));
        *r.method_mut() = method;
        r
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_exponential_delays_then_returns_the_last_answer() {
        let (up, calls) = upstream(vec![503]);
        let svc = layer(
            Retry::new("t", policy(4, 0.0), LinkMetrics::unregistered()),
            up,
        );
        let start = tokio::time::Instant::now();
        let response = svc.handle(request(Method::PUT, "payload")).await;
        assert_eq!(response.status(), 503);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "answer 3", "the last upstream answer, intact");
        let calls = calls.lock().unwrap();
        let at: Vec<u128> = calls
            .iter()
            .map(|(t, _)| (*t - start).as_millis())
            .collect();
        assert_eq!(at, [0, 100, 300, 700]);
        assert!(
            calls.iter().all(|(_, b)| b == "payload"),
            "the body is replayed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_success_stops() {
        let (up, calls) = upstream(vec![429, 200]);
        let svc = layer(
            Retry::new("t", policy(3, 0.0), LinkMetrics::unregistered()),
            up,
        );
        let start = tokio::time::Instant::now();
        let response = svc.handle(request(Method::GET, "")).await;
        assert_eq!(response.status(), 200);
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        // Retry-After: 1 is capped at maxInterval (1s).
        assert_eq!((calls[1].0 - start).as_millis(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn post_is_retried_only_with_an_idempotency_key_or_when_allowed() {
        let (up, calls) = upstream(vec![502]);
        let svc = layer(
            Retry::new("t", policy(3, 0.0), LinkMetrics::unregistered()),
            up,
        );
        svc.handle(request(Method::POST, "x")).await;
        assert_eq!(calls.lock().unwrap().len(), 1);
        let mut keyed = request(Method::POST, "x");
        keyed
            .headers_mut()
            .insert("idempotency-key", http::HeaderValue::from_static("k1"));
        svc.handle(keyed).await;
        assert_eq!(calls.lock().unwrap().len(), 4);

        let (up, calls) = upstream(vec![502]);
        let mut p = policy(2, 0.0);
        p.non_idempotent = true;
        let svc = layer(Retry::new("t", p, LinkMetrics::unregistered()), up);
        svc.handle(request(Method::PATCH, "x")).await;
        assert_eq!(calls.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        let (up, calls) = upstream(vec![404]);
        let svc = layer(
            Retry::new("t", policy(3, 0.0), LinkMetrics::unregistered()),
            up,
        );
        let response = svc.handle(request(Method::GET, "")).await;
        assert_eq!(response.status(), 404);
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_beyond_the_replay_limit_streams_once() {
        let (up, calls) = upstream(vec![503]);
        let svc = layer(
            Retry::new("t", policy(3, 0.0), LinkMetrics::unregistered()),
            up,
        );
        let big = vec![b'x'; REPLAY_LIMIT + 10];
        let mut req = Request::new(Body::from(big.clone()));
        *req.method_mut() = Method::PUT;
        let response = svc.handle(req).await;
        assert_eq!(response.status(), 503);
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1.len(), big.len(), "nothing lost");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_answered_408_after_the_timeout() {
        let (up, calls) = upstream(vec![200]);
        let svc = layer(
            Retry::new("t", policy(3, 0.0), LinkMetrics::unregistered()),
            up,
        );
        // The caller sent a few bytes and then nothing more (the sender stays open).
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
        let body = Body::from_stream(tokio_stream_of(rx));
        let mut req = Request::new(body);
        *req.method_mut() = Method::PUT;
        let started = tokio::time::Instant::now();
        let response = svc.handle(req).await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(
            calls.lock().unwrap().is_empty(),
            "nothing reached the upstream"
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_breaks_off_is_the_clients_fault_and_never_sent() {
        let (up, calls) = upstream(vec![200]);
        let svc = layer(
            Retry::new("t", policy(3, 0.0), LinkMetrics::unregistered()),
            up,
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
        tx.send(Err(std::io::ErrorKind::UnexpectedEof.into()))
            .await
            .unwrap();
        let mut req = Request::new(Body::from_stream(tokio_stream_of(rx)));
        *req.method_mut() = Method::PUT;
        let response = svc.handle(req).await;
        assert_eq!(response.status().as_u16(), 499);
        assert_eq!(response.extensions().get(), Some(&ClientFault::Closed));
        assert!(calls.lock().unwrap().is_empty(), "nothing sent upstream");
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send + 'static {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy(3, 0.2);
        for _ in 0..1000 {
            let d = p.delay(1, None).as_millis();
            assert!((160..=240).contains(&d), "{d}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(9))),
            Duration::from_secs(1)
        );
    }
}
