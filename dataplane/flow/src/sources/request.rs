//! What request-response sources (HTTP, gRPC) read from a request's headers the same way: the
//! correlation id, the trace context and the headers interceptors see.

use axum::http::{HeaderMap, HeaderName};

use crate::pipeline::delivery::{CORRELATION_HEADER, TRACEPARENT, TRACESTATE};

/// `fiso-correlation-id` > `x-correlation-id` > `x-request-id` > trace id of `traceparent` >
/// a new UUIDv7.
pub fn correlation_id(headers: &HeaderMap) -> String {
    // Names built at compile time: a `&str` name is parsed and checked on every lookup.
    const NAMES: [HeaderName; 3] = [
        HeaderName::from_static(CORRELATION_HEADER),
        HeaderName::from_static("x-correlation-id"),
        HeaderName::from_static("x-request-id"),
    ];
    for name in &NAMES {
        if let Some(v) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
        {
            return v.trim().to_owned();
        }
    }
    if let Some(trace_id) = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| tp.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return trace_id.to_owned();
    }
    crate::event::id::new_uuid_v7()
}

/// The `traceparent` header, when it is text.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    text(headers, &TRACEPARENT)
}

/// The `tracestate` header, when it is text.
pub fn tracestate(headers: &HeaderMap) -> Option<String> {
    text(headers, &TRACESTATE)
}

fn text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The text headers of a request, lower-case names, without the connection-level ones.
pub fn text_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "connection"
                    | "keep-alive"
                    | "transfer-encoding"
                    | "te"
                    | "upgrade"
                    | "host"
                    | "content-length"
            )
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// A header map from name / value pairs (the HTTP source's tests use it too).
    pub(in crate::sources) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn correlation_id_precedence() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            correlation_id(&headers(&[
                ("fiso-correlation-id", "a"),
                ("x-correlation-id", "b"),
                ("x-request-id", "c"),
                ("traceparent", tp)
            ])),
            "a"
        );
        assert_eq!(
            correlation_id(&headers(&[
                ("x-correlation-id", "b"),
                ("x-request-id", "c")
            ])),
            "b"
        );
        assert_eq!(
            correlation_id(&headers(&[("x-request-id", "c"), ("traceparent", tp)])),
            "c"
        );
        assert_eq!(
            correlation_id(&headers(&[("traceparent", tp)])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let generated = correlation_id(&HeaderMap::new());
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
    }
}
