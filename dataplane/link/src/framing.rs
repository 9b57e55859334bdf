//! What the route layer refuses about a request's framing and method before anything else
//! looks at it, the way nginx and Envoy do at their HTTP/1 codec:
//!
//! * a transfer coding other than a single `chunked` (`gzip, chunked`, `identity, chunked`,
//!   `chunked, chunked`) is 501 and the connection closes (RFC 9112 §6.1: a server that
//!   receives a transfer coding it does not understand answers 501; nginx and Envoy accept
//!   exactly `chunked`). hyper has already answered 400 when the last coding is not
//!   `chunked` (RFC 9112 §6.3); without this check the other codings would be silently dropped
//!   with the `Transfer-Encoding` header, and the upstream would get gzip bytes as the body;
//! * a method longer than [`MAX_METHOD_LEN`] bytes is 400, like a method nginx cannot parse
//!   (hyper has already answered 400 to one that is not an RFC 9110 token);
//! * `CONNECT` (not a forward proxy) and `TRACE` (an echoing upstream would hand the injected
//!   credential back to the app) are 405 with `Allow`.

use http::{header, HeaderMap, HeaderValue, Method};

use crate::response::{error, ErrorCode, Response};

/// Longest method forwarded. The longest registered method (`UPDATEREDIRECTREF`) has 17 bytes.
pub const MAX_METHOD_LEN: usize = 32;

/// What `Allow` lists in a 405 of the route layer: the methods forwarded that RFC 9110 and
/// PATCH (RFC 5789) define. Extension methods are forwarded too, but cannot be enumerated.
const ALLOWED: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");

/// The answer to a request whose framing or method is refused before routing.
pub fn refuse_framing(method: &Method, headers: &HeaderMap) -> Option<Response> {
    if method.as_str().len() > MAX_METHOD_LEN {
        return Some(error(
            ErrorCode::InvalidRequest,
            format!("the method is longer than {MAX_METHOD_LEN} bytes"),
        ));
    }
    let mut codings = fiso_runtime::http_client::list_items(headers, header::TRANSFER_ENCODING);
    let only_chunked = match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(first), None) => first.eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    };
    if !only_chunked {
        let mut response = error(
            ErrorCode::NotImplemented,
            "only the `chunked` transfer coding is implemented",
        );
        // The body's framing is not understood: nothing after it on this connection can be.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(response);
    }
    None
}

/// The answer to a method the proxy never forwards.
pub fn refuse_method(method: &Method) -> Option<Response> {
    // Methods are case-sensitive, but an upstream that is not would take `trace` for TRACE.
    let is = |name: &str| method.as_str().eq_ignore_ascii_case(name);
    let why = if is("CONNECT") {
        "CONNECT is not supported: this is not a forward proxy"
    } else if is("TRACE") {
        "TRACE is not supported: the upstream would echo the injected credentials"
    } else {
        return None;
    };
    let mut response = error(ErrorCode::MethodNotAllowed, why);
    response.headers_mut().insert(header::ALLOW, ALLOWED);
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(values: &[&'static str]) -> Option<u16> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
        }
        refuse_framing(&Method::POST, &headers).map(|r| r.status().as_u16())
    }

    #[test]
    fn only_a_single_chunked_coding_is_implemented() {
        assert_eq!(te(&[]), None);
        assert_eq!(te(&["chunked"]), None);
        assert_eq!(te(&["Chunked"]), None);
        assert_eq!(te(&[" chunked "]), None);
        for odd in [
            &["gzip, chunked"][..],
            &["identity, chunked"],
            &["chunked, chunked"],
            &["gzip", "chunked"],
            &["gzip"],
            &[""],
        ] {
            assert_eq!(te(odd), Some(501), "{odd:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        let r = refuse_framing(&Method::POST, &h).unwrap();
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn methods_are_bounded_in_length() {
        let at_limit = Method::from_bytes(&[b'M'; MAX_METHOD_LEN]).unwrap();
        assert!(refuse_framing(&at_limit, &HeaderMap::new()).is_none());
        let over = Method::from_bytes(&[b'M'; MAX_METHOD_LEN + 1]).unwrap();
        let r = refuse_framing(&over, &HeaderMap::new()).unwrap();
        assert_eq!(r.status().as_u16(), 400);
    }

    #[test]
    fn connect_and_trace_are_405_with_allow() {
        let lower = |m: &[u8]| Method::from_bytes(m).unwrap();
        for m in [
            Method::CONNECT,
            Method::TRACE,
            lower(b"trace"),
            lower(b"Connect"),
        ] {
            let r = refuse_method(&m).unwrap();
            assert_eq!(r.status().as_u16(), 405, "{m}");
            let allow = r.headers()[header::ALLOW].to_str().unwrap();
            assert!(
                !allow.contains("TRACE") && !allow.contains("CONNECT") && allow.contains("GET")
            );
        }
        for m in [
            Method::GET,
            Method::OPTIONS,
            Method::from_bytes(b"PROPFIND").unwrap(),
        ] {
            assert!(refuse_method(&m).is_none(), "{m}");
        }
    }
}
