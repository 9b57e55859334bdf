//! The HTTP(S) upstream of a target: the origin client of [`fiso_runtime::http_client`], one
//! pool per serving core (rustls, system roots plus the target's `caFile`, HTTP/1.1
//! and HTTP/2 by ALPN) addressed by host name, so `Host` and TLS SNI are the configured host.
//! The target's origin and base path are built once; a request only assembles its path and
//! query, and is sent in the form its client writes (no absolute URI over plain HTTP). Bodies
//! stream both ways. Redirects are handed to the app, not followed. `timeout` bounds the wait
//! for the response headers of one attempt.
//!
//! Hop-by-hop headers were stripped by the route layer before auth was injected; only the
//! upstream's answer is stripped here. A request that fails because the client's body broke
//! off, or that times out while waiting for the client's body, is the client's fault
//! ([`ClientFault`]), not the target's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument;

use axum::body::{Body, BodyDataStream};
use bytes::Bytes;
use fiso_config::link::{Protocol, TargetConfig};
use fiso_runtime::http_client::{self, ClientBuildError, ClientSettings, OriginClient};
use fiso_runtime::server::PerCore;
use futures::Stream;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, Uri};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::error::Elapsed;

use crate::client_fault::{BodyWatch, ClientFault, Watched};
use crate::forward::Forward;
use crate::response::{error, strip_hop_by_hop, ErrorCode, Request, Response};

/// Per-attempt wait for the response headers when the target sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("target has no host")]
    NoHost,
    #[error("`{0}` is not a valid host[:port]")]
    Authority(String),
    #[error("caFile {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// A target's upstream; cloning it (once per request) is one reference count.
#[derive(Clone)]
pub struct HttpUpstream(Arc<Target>);

struct Target {
    /// A pool per serving core: a core's requests never wait on another core's connections.
    client: PerCore<OriginClient<RequestBody>>,
    scheme: Scheme,
    /// `host[:port]`: the `Host` header and the TLS server name.
    authority: Authority,
    /// The configured `basePath` with a leading and no trailing slash, or empty.
    base_path: String,
    timeout: Duration,
}

impl HttpUpstream {
    pub fn new(cfg: &TargetConfig) -> Result<Self, UpstreamBuildError> {
        let host = cfg.host.as_deref().ok_or(UpstreamBuildError::NoHost)?;
        let scheme = match cfg.protocol {
            Protocol::Http => Scheme::HTTP,
            _ => Scheme::HTTPS,
        };
        let authority = match cfg.port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authority = Authority::try_from(authority.as_str())
            .map_err(|_| UpstreamBuildError::Authority(authority.clone()))?;
        let base_path = cfg.base_path.as_deref().unwrap_or("").trim_end_matches('/');
        let base_path = if base_path.is_empty() || base_path.starts_with('/') {
            base_path.to_owned()
        } else {
            format!("/{base_path}")
        };
        let settings = ClientSettings {
            ca_file: cfg.ca_file.as_deref().map(std::path::Path::new),
            connect_timeout: None,
        };
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| UpstreamBuildError::Authority(authority.to_string()))?;
        let client =
            PerCore::try_new(|| settings.build_for(&origin)).map_err(|e: ClientBuildError| {
                match &cfg.ca_file {
                    Some(path) if e.is_ca_file() => UpstreamBuildError::CaFile {
                        path: path.clone(),
                        message: e.to_string(),
                    },
                    _ => UpstreamBuildError::Client(e.to_string()),
                }
            })?;
        Ok(HttpUpstream(Arc::new(Target {
            client,
            scheme,
            authority,
            base_path,
            timeout: cfg.timeout.unwrap_or(DEFAULT_TIMEOUT),
        })))
    }
}

impl Target {
    /// The host and port connections go to, to name them in an error.
    fn host_and_port(&self) -> (&str, u16) {
        let default = if self.scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        (
            self.authority.host(),
            self.authority.port_u16().unwrap_or(default),
        )
    }

    /// The upstream URI of `forward`, in the form the client sends (the prebuilt scheme and
    /// authority only where it needs them): the base path, the forwarded path (`/` alone adds
    /// nothing to a base path) and the query as it came.
    fn uri(&self, forward: &Forward) -> Result<Uri, http::Error> {
        let query_len = forward.query.as_ref().map_or(0, |q| q.len() + 1);
        let mut line =
            String::with_capacity(self.base_path.len() + forward.path.as_str().len() + query_len);
        line.push_str(&self.base_path);
        if line.is_empty() || !forward.path.is_root() {
            forward.path.write_encoded(&mut line);
        }
        if let Some(q) = &forward.query {
            line.push('?');
            line.push_str(q);
        }
        let path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(line))?;
        self.client.get().uri(path_and_query)
    }
}

/// The client's request body on its way upstream: none, or its frames through the
/// [`BodyWatch`] that tells a client's failure from the upstream's.
enum RequestBody {
    Empty,
    Streamed(Watched<BodyDataStream>),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streamed(stream) => Pin::new(stream)
                .poll_next(cx)
                .map(|chunk| chunk.map(|data| data.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streamed(_) => SizeHint::default(),
        }
    }
}

/// Whether a failed attempt is the client's doing: its body broke off, or the attempt timed out
/// while waiting for the client's next bytes (the upstream was waiting for the body too).
fn client_fault<T, E>(
    body: &BodyWatch,
    sent: &Result<Result<T, E>, Elapsed>,
) -> Option<ClientFault> {
    match sent {
        Ok(Ok(_)) => None,
        Ok(Err(_)) => body.fault(),
        Err(_) => body
            .fault()
            .or_else(|| body.waiting_on_client().then_some(ClientFault::Stalled)),
    }
}

impl HttpUpstream {
    /// Sends `req` to the target and streams its answer back.
    pub async fn forward(self, req: Request) -> Response {
        let target = &*self.0;
        let (mut parts, body) = req.into_parts();
        // Taken, not cloned: each attempt gets a request of its own.
        let Some(forward) = parts.extensions.remove::<Forward>() else {
            return error(ErrorCode::NotFound, "no target for this request");
        };
        let uri = match target.uri(&forward) {
            Ok(uri) => uri,
            Err(_) => return error(ErrorCode::InvalidRequest, "the request path is not valid"),
        };
        let mut headers = parts.headers;
        // The caller's `Host` names this proxy, not the target: the client writes the target's.
        headers.remove(header::HOST);
        let (body, client_body) = if body.size_hint().exact() == Some(0) {
            (RequestBody::Empty, None)
        } else {
            let (stream, watch) = Watched::new(body.into_data_stream());
            (RequestBody::Streamed(stream), Some(watch))
        };
        let span = attempt_span(
            &parts.method,
            target.host_and_port(),
            parts.extensions.get::<AttemptNumber>(),
        );
        // The upstream continues the trace from this attempt.
        if let Some(trace) = fiso_runtime::otel::headers_of(&span) {
            set_trace_headers(&mut headers, &trace);
        }
        let mut request = http::Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let sent = tokio::time::timeout(target.timeout, target.client.get().request(request))
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            record_attempt(&span, &sent);
        }
        if let Some(fault) = client_body
            .as_deref()
            .and_then(|body| client_fault(body, &sent))
        {
            return fault.response();
        }
        let upstream = match sent {
            Ok(Ok(r)) => r,
            Err(_) => {
                return error(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "target `{}` did not answer within {}",
                        forward.target,
                        humantime::format_duration(target.timeout)
                    ),
                )
            }
            Ok(Err(e)) if http_client::is_timeout(&e) => {
                return error(
                    ErrorCode::UpstreamTimeout,
                    format!("target `{}` timed out", forward.target),
                )
            }
            Ok(Err(e)) => {
                // Named by host and port only: the URL's query may carry the app's credentials.
                let why = http_client::failure_in_words(&e, target.host_and_port());
                tracing::warn!(target_name = %forward.target, error = %why, "cannot reach target");
                tracing::debug!(target_name = %forward.target, error = %http_client::error_chain(&e), "cannot reach target (the whole chain)");
                return error(
                    ErrorCode::UpstreamUnreachable,
                    format!("cannot reach target `{}`: {why}", forward.target),
                );
            }
        };
        let (parts, body) = upstream.into_parts();
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = parts.status;
        *response.headers_mut() = parts.headers;
        strip_hop_by_hop(response.headers_mut());
        response
    }
}

/// The retry layer's attempt number (1-based) on a request, set only when traces are exported.
#[derive(Debug, Clone, Copy)]
pub struct AttemptNumber(pub u32);

/// The client span of one upstream attempt, per the HTTP semantic conventions.
fn attempt_span(
    method: &http::Method,
    (host, port): (&str, u16),
    attempt: Option<&AttemptNumber>,
) -> tracing::Span {
    if !fiso_runtime::otel::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "upstream",
        otel.name = method.as_str(),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        server.address = host,
        server.port = port,
        http.request.resend_count = attempt.map(|a| a.0.saturating_sub(1)).filter(|n| *n > 0),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    fiso_runtime::otel::record_ids(&span);
    span
}

fn record_attempt<B, E>(
    span: &tracing::Span,
    sent: &Result<Result<http::Response<B>, E>, tokio::time::error::Elapsed>,
) {
    let error_type = match sent {
        Ok(Ok(r)) => {
            span.record("http.response.status_code", r.status().as_u16());
            if !r.status().is_server_error() {
                return;
            }
            r.status().as_str().to_owned()
        }
        Ok(Err(_)) => ErrorCode::UpstreamUnreachable.as_str().to_owned(),
        Err(_) => ErrorCode::UpstreamTimeout.as_str().to_owned(),
    };
    span.record("error.type", error_type.as_str());
    span.record("otel.status_code", "ERROR");
}

/// `traceparent` / `tracestate` of the attempt, replacing the caller's.
fn set_trace_headers(headers: &mut http::HeaderMap, trace: &fiso_runtime::otel::TraceHeaders) {
    let value = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
    };
    match value(&trace.traceparent) {
        Some(tp) => headers.insert("traceparent", tp),
        None => headers.remove("traceparent"),
    };
    match value(&trace.tracestate) {
        Some(ts) => headers.insert("tracestate", ts),
        None => headers.remove("tracestate"),
    };
}
