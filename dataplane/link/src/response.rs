//! Responses the proxy answers itself: a JSON error body `{"error":{"code","message"}}` with a
//! stable code, like Fiso-Flow's, and `Retry-After` where the caller should come back later.

use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderValue, StatusCode};

pub type Request = http::Request<Body>;
pub type Response = http::Response<Body>;

/// nginx's non-standard "client closed request": logged and counted, never read by the client.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => unreachable!(),
};

/// Why the proxy answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    TargetNotFound,
    TargetUnavailable,
    PathNotAllowed,
    MethodNotAllowed,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    CircuitOpen,
    UpstreamUnreachable,
    UpstreamTimeout,
    /// The caller's request body stopped arriving.
    RequestTimeout,
    /// The caller hung up before its request was complete (nginx's 499).
    ClientClosedRequest,
    /// A transfer coding the proxy does not implement (anything but `chunked`).
    NotImplemented,
    KafkaPublishFailed,
    /// A WASM interceptor failed (trap, timeout, fuel, memory, bad or too large output).
    InterceptorFailed,
    /// A WASM interceptor rejected the message; the answer carries the module's status.
    InterceptorRejected,
    /// The upstream's answer is larger than an inbound interceptor's `maxInputSize`.
    InterceptorInputTooLarge,
    /// `protocol: app`: no app of that name runs in this process.
    AppNotFound,
    /// `protocol: app`: the app is starting, failing its health check or crash-looping.
    AppNotReady,
    /// `protocol: app`: the app did not answer within its `timeout`.
    AppTimeout,
    /// `protocol: app`: the app's answer is larger than the apps' response limit.
    AppResponseTooLarge,
    /// `protocol: app`: the call failed (connection refused or reset, trap, exit, bad answer).
    AppFailed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::TargetNotFound => "TARGET_NOT_FOUND",
            ErrorCode::TargetUnavailable => "TARGET_UNAVAILABLE",
            ErrorCode::PathNotAllowed => "PATH_NOT_ALLOWED",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::CircuitOpen => "CIRCUIT_OPEN",
            ErrorCode::UpstreamUnreachable => "UPSTREAM_UNREACHABLE",
            ErrorCode::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::ClientClosedRequest => "CLIENT_CLOSED_REQUEST",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::KafkaPublishFailed => "KAFKA_PUBLISH_FAILED",
            ErrorCode::InterceptorFailed => "INTERCEPTOR_FAILED",
            ErrorCode::InterceptorRejected => "INTERCEPTOR_REJECTED",
            ErrorCode::InterceptorInputTooLarge => "INTERCEPTOR_INPUT_TOO_LARGE",
            ErrorCode::AppNotFound => "APP_NOT_FOUND",
            ErrorCode::AppNotReady => "APP_NOT_READY",
            ErrorCode::AppTimeout => "APP_TIMEOUT",
            ErrorCode::AppResponseTooLarge => "APP_RESPONSE_TOO_LARGE",
            ErrorCode::AppFailed => "APP_FAILED",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NotFound | ErrorCode::TargetNotFound => StatusCode::NOT_FOUND,
            ErrorCode::PathNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::CircuitOpen | ErrorCode::TargetUnavailable | ErrorCode::AppNotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::UpstreamUnreachable
            | ErrorCode::KafkaPublishFailed
            | ErrorCode::InterceptorFailed
            | ErrorCode::InterceptorInputTooLarge
            | ErrorCode::AppNotFound
            | ErrorCode::AppResponseTooLarge
            | ErrorCode::AppFailed => StatusCode::BAD_GATEWAY,
            // The nominal status; the answer carries the one the module chose (400..=599).
            ErrorCode::InterceptorRejected => StatusCode::FORBIDDEN,
            ErrorCode::UpstreamTimeout | ErrorCode::AppTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::ClientClosedRequest => CLIENT_CLOSED_REQUEST,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// Whether the proxy answered this because of the request itself (a 4xx it made up):
    /// such an answer says nothing about the target's health.
    pub fn is_client_error(self) -> bool {
        self.status().is_client_error()
    }
}

/// Marks a response the proxy made up (no upstream answered), so the layers above can tell it
/// from an upstream's own 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError(pub ErrorCode);

/// The JSON error response for `code`.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code.as_str(), "message": message.into()}});
    let mut response = http::Response::new(Body::from(body.to_string()));
    *response.status_mut() = code.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(ProxyError(code));
    response
}

/// [`error`] with `Retry-After` in whole seconds (at least 1).
pub fn error_retry_after(code: ErrorCode, message: impl Into<String>, after: Duration) -> Response {
    let mut response = error(code, message);
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// A JSON success body.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = http::Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, and the
/// pre-standard `Keep-Alive` / `Proxy-Connection`).
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const HOP_BY_HOP_UNREGISTERED: [&str; 2] = ["keep-alive", "proxy-connection"];

pub(crate) fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || HOP_BY_HOP_UNREGISTERED.iter().any(|n| name == n)
}

/// Removes the hop-by-hop headers: never forwarded either way, nor whatever the `Connection`
/// header names.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Most messages have none: one look at each of their few names, instead of a lookup of
    // every hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<http::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in HOP_BY_HOP_UNREGISTERED {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed_and_no_other() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("connection", "x-conn, keep-alive"),
            ("x-conn", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "2"),
            ("content-type", "text/plain"),
        ] {
            headers.append(
                header::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);

        let mut plain = headers.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, headers, "nothing hop-by-hop: untouched");
    }
}
