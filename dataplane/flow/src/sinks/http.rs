//! HTTP sink: CloudEvents over HTTP (structured by default, binary on request), pooled
//! HTTP/1.1 + HTTP/2 connections with rustls ([`fiso_runtime::http_client`]), retries per the
//! flow's policy. The URL is parsed once; an attempt clones the prebuilt `Uri` and sends the
//! encoded event as one `Bytes` body. The sink's `timeout` bounds a whole attempt: the answer's
//! head and the (capped) reading of its body.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use fiso_config::flow::{
    ContentMode, HttpSinkConfig, DEFAULT_MAX_RESPONSE_BODY_SIZE, DEFAULT_SINK_TIMEOUT,
};
use fiso_runtime::http_client::{self, ClientSettings, OriginClient, ResponseBody};
use fiso_runtime::outline;
use fiso_runtime::server::PerCore;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, StatusCode, Uri};

use smallvec::SmallVec;
use tracing::field::Empty;
use tracing::Instrument;

use super::Sink;
use crate::cel::budget::Budget;
use crate::event::header_binding::{self, Binding};
use crate::event::json_format;
use crate::pipeline::delivery::{
    DeliveryContext, DeliveryError, DeliveryErrorKind, Receipt, SinkResponse,
    CORRELATION_HEADER_NAME, STRUCTURED_CONTENT_TYPE, TRACEPARENT, TRACESTATE,
};
use crate::retry::{parse_retry_after, with_retries, Attempt, RetryError, RetryPolicy};
use crate::{CloudEvent, FlowError, InputEvent};

/// The last thing that went wrong when retries ran out.
#[derive(Debug, Clone)]
pub enum LastFailure {
    Response(SinkResponse),
    Timeout,
    Network(String),
}

impl std::fmt::Display for LastFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastFailure::Response(r) => write!(f, "sink answered {}", r.status),
            LastFailure::Timeout => f.write_str("sink timed out"),
            LastFailure::Network(e) => write!(f, "network error: {e}"),
        }
    }
}

/// Why one delivery failed, as the HTTP sink tells it.
#[derive(Debug, thiserror::Error)]
enum HttpDeliveryError {
    /// A 4xx other than 429: retrying cannot help.
    #[error("sink rejected the event with {} (not retried)", .0.status)]
    Rejected(SinkResponse),
    /// Retryable failures until the policy gave up.
    #[error("delivery failed after {attempts} attempt(s): {last}")]
    Exhausted { attempts: u32, last: LastFailure },
    /// The request could not even be built (bad header value in the event, ...).
    #[error("cannot build the sink request: {0}")]
    Request(String),
}

impl From<HttpDeliveryError> for DeliveryError {
    fn from(e: HttpDeliveryError) -> Self {
        let message = e.to_string();
        match e {
            HttpDeliveryError::Rejected(r) => {
                DeliveryError::new(DeliveryErrorKind::Rejected, 1, message).with_response(r)
            }
            HttpDeliveryError::Exhausted { attempts, last } => match last {
                LastFailure::Timeout => {
                    DeliveryError::new(DeliveryErrorKind::Timeout, attempts, message)
                }
                LastFailure::Response(r) => {
                    let kind = if r.status == StatusCode::SERVICE_UNAVAILABLE {
                        DeliveryErrorKind::Unavailable
                    } else {
                        DeliveryErrorKind::Other
                    };
                    DeliveryError::new(kind, attempts, message).with_response(r)
                }
                LastFailure::Network(_) => {
                    DeliveryError::new(DeliveryErrorKind::Other, attempts, message)
                }
            },
            HttpDeliveryError::Request(_) => {
                DeliveryError::new(DeliveryErrorKind::Other, 0, message)
            }
        }
    }
}

/// Errors building the sink from config.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkBuildError {
    #[error("sink.config.url: {0}")]
    Url(String),
    #[error("sink.config.method: `{0}` is not an HTTP method")]
    Method(String),
    #[error("sink.config.headers.{0}: invalid header")]
    Header(String),
    #[error("sink.config.caFile: {0}")]
    Ca(String),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Bounds establishing a TCP connection to the sink.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured HTTP sink; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct HttpSink {
    /// A pool per serving core (boxed: the pools are large and every sink variant would pay
    /// for them): an HTTP source's request is delivered on the core that read it.
    client: Arc<PerCore<OriginClient<Full<Bytes>>>>,
    /// The sink's URL, as logged and named in spans and errors.
    uri: Uri,
    /// The same, in the form the client sends (built once: an attempt clones it).
    request_uri: Uri,
    timeout: Duration,
    method: Method,
    headers: HeaderMap,
    mode: ContentMode,
    policy: RetryPolicy,
    max_response_body: usize,
}

impl HttpSink {
    pub fn new(cfg: &HttpSinkConfig, policy: RetryPolicy) -> Result<Self, HttpSinkBuildError> {
        let mut url =
            url::Url::parse(&cfg.url).map_err(|e| HttpSinkBuildError::Url(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(HttpSinkBuildError::Url(format!(
                "`{}` is not an http(s) URL",
                cfg.url
            )));
        }
        let method = Method::from_bytes(cfg.method.as_bytes())
            .map_err(|_| HttpSinkBuildError::Method(cfg.method.clone()))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| HttpSinkBuildError::Header(k.clone()))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| HttpSinkBuildError::Header(k.clone()))?;
            headers.insert(name, value);
        }
        // Credentials in the URL become Basic auth (a configured `Authorization` wins) and
        // leave the URL, which is logged.
        if let Some(basic) = take_userinfo(&mut url) {
            if !headers.contains_key(AUTHORIZATION) {
                headers.insert(AUTHORIZATION, basic);
            }
        }
        url.set_fragment(None);
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| HttpSinkBuildError::Url(e.to_string()))?;
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        let ca_file = cfg.ca_file.as_deref();
        let settings = ClientSettings {
            ca_file: ca_file.map(std::path::Path::new),
            connect_timeout: Some(CONNECT_TIMEOUT),
        };
        let client = PerCore::try_new(|| settings.build_for(&uri)).map_err(|e| match ca_file {
            Some(ca) if e.is_ca_file() => HttpSinkBuildError::Ca(format!("{ca}: {e}")),
            _ => HttpSinkBuildError::Client(e.to_string()),
        })?;
        let target = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let request_uri = client
            .get()
            .uri(target)
            .map_err(|e| HttpSinkBuildError::Url(e.to_string()))?;
        Ok(HttpSink {
            client: Arc::new(client),
            uri,
            request_uri,
            timeout: cfg.timeout.unwrap_or(DEFAULT_SINK_TIMEOUT),
            method,
            headers,
            mode: cfg.mode.unwrap_or(ContentMode::Structured),
            policy,
            max_response_body: usize::try_from(
                cfg.max_response_body_size
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BODY_SIZE)
                    .bytes(),
            )
            .unwrap_or(usize::MAX),
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Delivers `event`, retrying 5xx / 429 / network errors; other 4xx fail at once.
    async fn send(
        &self,
        event: &CloudEvent,
        ctx: &DeliveryContext,
    ) -> Result<SinkResponse, HttpDeliveryError> {
        let (event_headers, body) = self.encode(event, ctx)?;
        let result = with_retries(&self.policy, |n| {
            let mut request = http::Request::new(Full::new(body.clone()));
            *request.method_mut() = self.method.clone();
            *request.uri_mut() = self.request_uri.clone();
            let headers = request.headers_mut();
            // Room for the event's headers and hyper's `content-length` and `host` from the
            // start: a clone has only the sink's own, and grew once or twice per attempt.
            headers.reserve(self.headers.len() + event_headers.len() + 2);
            headers.extend(self.headers.iter().map(|(n, v)| (n.clone(), v.clone())));
            for (name, value) in &event_headers {
                headers.insert(name.clone(), value.clone());
            }
            let span = self.attempt_span(n);
            // The sink continues the trace from this attempt.
            if let Some(trace) = fiso_runtime::otel::headers_of(&span) {
                set_trace_headers(request.headers_mut(), &trace);
            }
            let traced = span.clone();
            async move {
                if n > 0 {
                    tracing::debug!(url = %self.uri, attempt = n + 1, "retrying sink delivery");
                }
                // Boxed: an attempt's future (the exchange and its timer) is most of this
                // sink's, which every future above it would otherwise carry and copy.
                let attempt = outline::pinned(|| self.attempt(request)).await;
                record_attempt(&traced, &attempt);
                attempt
            }
            .instrument(span)
        })
        .await;
        match result {
            Ok(r) => Ok(r),
            Err(RetryError::Permanent(LastFailure::Response(r))) => {
                Err(HttpDeliveryError::Rejected(r))
            }
            Err(RetryError::Permanent(last)) => {
                Err(HttpDeliveryError::Exhausted { attempts: 1, last })
            }
            Err(RetryError::Exhausted { attempts, last }) => {
                Err(HttpDeliveryError::Exhausted { attempts, last })
            }
        }
    }

    /// The client span of attempt `n` (0-based), per the HTTP semantic conventions; the
    /// query string is left out of `url.path`-only attributes (it may carry secrets).
    fn attempt_span(&self, n: u32) -> tracing::Span {
        if !fiso_runtime::otel::enabled() {
            return tracing::Span::none();
        }
        let (host, port) = http_client::host_and_port(&self.uri);
        let span = tracing::info_span!(
            "deliver",
            otel.name = self.method.as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = self.method.as_str(),
            server.address = host,
            server.port = port,
            url.path = self.uri.path(),
            url.scheme = self.uri.scheme_str().unwrap_or("http"),
            http.request.resend_count = (n > 0).then_some(n),
            http.response.status_code = Empty,
            error.type = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        fiso_runtime::otel::record_ids(&span);
        span
    }

    /// One attempt, bounded as a whole by the sink's `timeout`: when it runs out while the
    /// answer's body is being read, the attempt keeps the status and what arrived.
    async fn attempt(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Attempt<SinkResponse, LastFailure> {
        let mut head: Option<Head> = None;
        let mut body = BytesMut::new();
        let exchange = async {
            let response = self.client.get().request(request).await?;
            let (parts, incoming) = response.into_parts();
            head = Some(Head {
                status: parts.status,
                retry_after: parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now())),
                content_type: parts.headers.get(CONTENT_TYPE).cloned(),
            });
            Ok::<_, http_client::RequestError>(
                read_capped(incoming, self.max_response_body, &mut body).await,
            )
        };
        let truncated = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(truncated)) => truncated,
            Ok(Err(e)) if http_client::is_timeout(&e) => {
                return Attempt::Retryable(LastFailure::Timeout, None)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %http_client::error_chain(&e), "sending to the sink failed (the whole chain)");
                return Attempt::Retryable(
                    LastFailure::Network(http_client::failure_in_words(
                        &e,
                        http_client::host_and_port(&self.uri),
                    )),
                    None,
                );
            }
            Err(_) if head.is_none() => return Attempt::Retryable(LastFailure::Timeout, None),
            Err(_) => {
                tracing::debug!("reading the sink's answer failed: timed out");
                false
            }
        };
        let Head {
            status,
            retry_after,
            content_type,
        } = head.expect("the answer's head arrived");
        if truncated {
            tracing::warn!(url = %self.uri, %status, limit = self.max_response_body, "the sink's answer exceeds maxResponseBodySize; the rest is not read");
        }
        let response = SinkResponse {
            status,
            content_type,
            body: body.freeze(),
            truncated,
        };
        if status.is_success() {
            Attempt::Success(response)
        } else if retryable(status) {
            Attempt::Retryable(LastFailure::Response(response), retry_after)
        } else {
            Attempt::Permanent(LastFailure::Response(response))
        }
    }

    fn encode(
        &self,
        event: &CloudEvent,
        ctx: &DeliveryContext,
    ) -> Result<(EventHeaders, Bytes), HttpDeliveryError> {
        let mut headers = EventHeaders::new();
        let bad =
            |what: &str| HttpDeliveryError::Request(format!("{what} is not a valid header value"));
        headers.push((
            CORRELATION_HEADER_NAME,
            HeaderValue::from_str(&ctx.correlation_id).map_err(|_| bad("correlation id"))?,
        ));
        // The caller's context, forwarded as it came; an attempt span replaces it when traces
        // are exported.
        if let Some(tp) = &ctx.traceparent {
            headers.push((
                TRACEPARENT,
                HeaderValue::from_str(tp).map_err(|_| bad("traceparent"))?,
            ));
            if let Some(ts) = &ctx.tracestate {
                headers.push((
                    TRACESTATE,
                    HeaderValue::from_str(ts).map_err(|_| bad("tracestate"))?,
                ));
            }
        }
        for (name, value) in &ctx.sink_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(&format!("interceptor header name {name:?}")))?;
            headers.push((
                name,
                HeaderValue::from_str(value).map_err(|_| bad("an interceptor header"))?,
            ));
        }
        match self.mode {
            ContentMode::Structured => {
                headers.push((
                    CONTENT_TYPE,
                    HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
                ));
                let body = json_format::to_vec(event)
                    .map_err(|e| HttpDeliveryError::Request(e.to_string()))?;
                Ok((headers, Bytes::from(body)))
            }
            ContentMode::Binary => {
                for (name, value) in Binding::Http.write(event) {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(&name))?;
                    // Percent-encoding leaves printable ASCII only: always a valid value.
                    let value = HeaderValue::from_str(&value).map_err(|_| bad(name.as_str()))?;
                    headers.push((name, value));
                }
                if let Some(ct) = header_binding::content_type(event) {
                    headers.push((
                        CONTENT_TYPE,
                        HeaderValue::from_str(ct).map_err(|_| bad("datacontenttype"))?,
                    ));
                }
                let body = match event.data() {
                    None => Bytes::new(),
                    Some(data) => data
                        .to_body()
                        .map_err(|e| HttpDeliveryError::Request(e.to_string()))?,
                };
                Ok((headers, body))
            }
        }
    }
}

/// The headers of one event, applied over the sink's own for every attempt: the correlation id
/// and the content type inline.
type EventHeaders = SmallVec<[(HeaderName, HeaderValue); 2]>;

impl Sink for HttpSink {
    type Prepared = ();

    fn prepare(&self, _input: &InputEvent, _budget: Budget) -> Result<(), FlowError> {
        Ok(())
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        (): (),
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        Ok(Receipt::Response(self.send(event, ctx).await?))
    }
}

/// `traceparent` / `tracestate` of the next hop, replacing the caller's.
fn set_trace_headers(headers: &mut HeaderMap, trace: &fiso_runtime::otel::TraceHeaders) {
    let header = |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
    match header(&trace.traceparent) {
        Some(tp) => headers.insert(TRACEPARENT, tp),
        None => headers.remove(TRACEPARENT),
    };
    match header(&trace.tracestate) {
        Some(ts) => headers.insert(TRACESTATE, ts),
        None => headers.remove(TRACESTATE),
    };
}

/// The answer of an attempt on its span: status code, and `error.type` when it failed.
fn record_attempt(span: &tracing::Span, attempt: &Attempt<SinkResponse, LastFailure>) {
    if span.is_disabled() {
        return;
    }
    let failure = match attempt {
        Attempt::Success(r) => {
            span.record("http.response.status_code", r.status.as_u16());
            return;
        }
        Attempt::Permanent(f) | Attempt::Retryable(f, _) => f,
    };
    let error_type = match failure {
        LastFailure::Response(r) => {
            span.record("http.response.status_code", r.status.as_u16());
            r.status.as_str().to_owned()
        }
        LastFailure::Timeout => "timeout".to_owned(),
        LastFailure::Network(_) => "network".to_owned(),
    };
    span.record("error.type", error_type.as_str());
    span.record("otel.status_code", "ERROR");
}

/// What an attempt keeps of the answer's head.
struct Head {
    status: StatusCode,
    retry_after: Option<Duration>,
    content_type: Option<HeaderValue>,
}

/// Reads the answer's body into `out` up to `cap` bytes; returns whether there was more. The
/// rest is never read, so an endless or huge answer costs at most `cap` bytes of memory;
/// dropping the body closes its connection instead of returning it to the pool. A body that
/// fails midway keeps what arrived (it only serves as the caller's answer or the dead letter's
/// `fiso-response-body`).
async fn read_capped(mut body: ResponseBody, cap: usize, out: &mut BytesMut) -> bool {
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                let room = cap - out.len();
                if chunk.len() > room {
                    out.extend_from_slice(&chunk[..room]);
                    return true;
                }
                out.extend_from_slice(&chunk);
            }
            None => return false,
            Some(Err(e)) => {
                tracing::debug!(error = %http_client::error_chain(&e), "reading the sink's answer failed");
                return false;
            }
        }
    }
}

/// The Basic credentials of a URL's userinfo (percent-decoded), removed from the URL.
fn take_userinfo(url: &mut url::Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut credentials = format!("{}:", decode(url.username()));
    if let Some(password) = url.password() {
        credentials.push_str(&decode(password));
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// 5xx and 429 are worth retrying; other statuses are final.
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: StatusCode) -> SinkResponse {
        SinkResponse {
            status,
            content_type: None,
            body: Bytes::from_static(b"answer"),
            truncated: false,
        }
    }

    fn sink(yaml: &str) -> HttpSink {
        let cfg: HttpSinkConfig = serde_yaml_ng::from_str(yaml).unwrap();
        HttpSink::new(&cfg, RetryPolicy::default()).unwrap()
    }

    /// A server that answers every connection with `answer` and then holds it open without a
    /// further byte: an in-process fake, for a stall no real server produces on demand.
    async fn stalling_server(answer: &'static str) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = tcp.read(&mut buf).await;
                    tcp.write_all(answer.as_bytes()).await.unwrap();
                    std::future::pending::<()>().await;
                });
            }
        });
        addr
    }

    fn request(sink: &HttpSink) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::from_static(b"{}")));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = sink.uri.clone();
        request
    }

    #[tokio::test]
    async fn the_timeout_bounds_the_whole_attempt_and_keeps_a_head_that_arrived() {
        let addr =
            stalling_server("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 100\r\n\r\npartial").await;
        let slow_body = sink(&format!("url: http://{addr}/e\ntimeout: 300ms\n"));
        match slow_body.attempt(request(&slow_body)).await {
            Attempt::Retryable(LastFailure::Response(r), None) => {
                assert_eq!(r.status, StatusCode::BAD_GATEWAY);
                assert_eq!(&r.body[..], b"partial");
            }
            _ => panic!("expected the 502 with the body that arrived"),
        }

        let addr = stalling_server("").await;
        let silent = sink(&format!("url: http://{addr}/e\ntimeout: 300ms\n"));
        assert!(matches!(
            silent.attempt(request(&silent)).await,
            Attempt::Retryable(LastFailure::Timeout, None)
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_network_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let gone = sink(&format!("url: http://{addr}/e\n"));
        match gone.attempt(request(&gone)).await {
            Attempt::Retryable(LastFailure::Network(text), None) => {
                assert_eq!(
                    text,
                    format!("connection refused at {addr} (nothing listens there?)")
                );
            }
            _ => panic!("expected a network error"),
        }
    }

    #[test]
    fn url_credentials_become_basic_auth_unless_configured() {
        let s = sink("url: https://user:p%40ss@example.com/events#frag\n");
        assert_eq!(s.uri, "https://example.com/events");
        assert_eq!(s.headers[AUTHORIZATION], "Basic dXNlcjpwQHNz");
        assert_eq!(s.headers[ACCEPT], "*/*");
        let s = sink("url: https://user:x@example.com/\nheaders:\n  Authorization: Bearer t\n");
        assert_eq!(s.headers[AUTHORIZATION], "Bearer t");
        let e = HttpSink::new(
            &serde_yaml_ng::from_str("url: ftp://example.com/\n").unwrap(),
            RetryPolicy::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("sink.config.url:"), "{e}");
    }

    #[test]
    fn failures_are_classified_for_the_sources() {
        let cases = [
            (
                HttpDeliveryError::Rejected(answer(StatusCode::BAD_REQUEST)),
                DeliveryErrorKind::Rejected,
                1,
                Some(StatusCode::BAD_REQUEST),
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 4,
                    last: LastFailure::Timeout,
                },
                DeliveryErrorKind::Timeout,
                4,
                None,
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 4,
                    last: LastFailure::Response(answer(StatusCode::SERVICE_UNAVAILABLE)),
                },
                DeliveryErrorKind::Unavailable,
                4,
                Some(StatusCode::SERVICE_UNAVAILABLE),
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 4,
                    last: LastFailure::Response(answer(StatusCode::TOO_MANY_REQUESTS)),
                },
                DeliveryErrorKind::Other,
                4,
                Some(StatusCode::TOO_MANY_REQUESTS),
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 2,
                    last: LastFailure::Network("connection refused".into()),
                },
                DeliveryErrorKind::Other,
                2,
                None,
            ),
            (
                HttpDeliveryError::Request("bad header".into()),
                DeliveryErrorKind::Other,
                0,
                None,
            ),
        ];
        for (error, kind, attempts, status) in cases {
            let text = error.to_string();
            let e = DeliveryError::from(error);
            assert_eq!(
                (e.kind, e.attempts(), e.sink_status()),
                (kind, attempts, status)
            );
            assert_eq!(e.to_string(), text, "the sink's own words");
        }
    }
}
