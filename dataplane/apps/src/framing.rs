//! The stdin/stdout framing of `pooled` and `perRequest` apps: one HTTP request in, one HTTP
//! response out, each a single JSON document.
//!
//! On stdin (then end of file):
//!
//! ```json
//! {"method":"POST","path":"/process","query":"a=1","headers":{"content-type":"application/json"},"body":"{\"x\":1}"}
//! ```
//!
//! `query` is the raw query string (`""` when none), header names are lowercase and repeated
//! headers are joined with `", "`. `body` is the request body as text when it is UTF-8, else
//! `body_base64` carries it (standard alphabet, padded); an empty body is `"body":""`.
//!
//! On stdout, the guest writes:
//!
//! ```json
//! {"status":200,"headers":{"content-type":"text/plain"},"body":"hello"}
//! ```
//!
//! `status` defaults to 200 and `headers` to none. `body` is sent as is when it is a string; any
//! other JSON value (an object, an array, a number) is sent as JSON with `content-type:
//! application/json` unless `headers` says otherwise; `body_base64` carries binary bodies.
//! Leading and trailing whitespace around the document is ignored; anything else is an error
//! (`APP_FAILED`), as are an exit code other than 0 and an empty stdout.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a guest may write to stdout beyond the response body itself (status, headers, JSON
/// escaping): stdout is bounded to `4/3 * body limit + OVERHEAD` (base64 being the worst case).
pub const OVERHEAD: usize = 64 * 1024;

/// Header name → value, in order.
type Headers = serde_json::Map<String, Value>;

#[derive(Serialize)]
struct RequestDoc<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

/// The stdin document of `request`.
pub fn encode_request(request: &http::Request<Bytes>) -> Vec<u8> {
    let mut headers = Headers::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let body = request.body();
    let text = std::str::from_utf8(body).ok();
    let doc = RequestDoc {
        method: request.method().as_str(),
        path: request.uri().path(),
        query: request.uri().query().unwrap_or(""),
        headers,
        body: text,
        body_base64: text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(body)),
    };
    serde_json::to_vec(&doc).expect("a request document serialises")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseDoc {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_base64: Option<String>,
}

/// Why a guest's stdout is not a response. Never carries the stdout itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("the app wrote nothing on stdout")]
    Empty,
    #[error("stdout is not a response document: {0}")]
    Invalid(String),
    #[error("the response body exceeds {0} bytes")]
    TooLarge(usize),
}

/// Parses a guest's stdout into a response whose body is at most `max_body` bytes.
pub fn decode_response(
    stdout: &[u8],
    max_body: usize,
) -> Result<http::Response<Bytes>, FramingError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(FramingError::Empty);
    }
    let doc: ResponseDoc = serde_json::from_slice(stdout).map_err(|e| {
        FramingError::Invalid(format!(
            "{} at line {} column {}",
            classify(&e),
            e.line(),
            e.column()
        ))
    })?;
    let status = StatusCode::from_u16(doc.status.unwrap_or(200))
        .map_err(|_| FramingError::Invalid("`status` is not an HTTP status".into()))?;
    let mut json = false;
    let body: Bytes = match (doc.body, doc.body_base64) {
        (Some(_), Some(_)) => {
            return Err(FramingError::Invalid(
                "give `body` or `body_base64`, not both".into(),
            ))
        }
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| FramingError::Invalid("`body_base64` is not base64".into()))?
            .into(),
        (Some(Value::String(s)), None) => s.into(),
        (Some(Value::Null), None) | (None, None) => Bytes::new(),
        (Some(v), None) => {
            json = true;
            serde_json::to_vec(&v)
                .expect("a JSON value serialises")
                .into()
        }
    };
    if body.len() > max_body {
        return Err(FramingError::TooLarge(max_body));
    }
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    for (name, value) in doc.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FramingError::Invalid(format!("`{name}` is not a header name")))?;
        let values = match value {
            Value::String(s) => vec![s],
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(FramingError::Invalid(format!(
                        "header `{name}` has a value that is not a string"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(FramingError::Invalid(format!(
                    "header `{name}` is not a string or a list of strings"
                )))
            }
        };
        for v in values {
            let v = HeaderValue::from_str(&v).map_err(|_| {
                FramingError::Invalid(format!("header `{name}` has an invalid value"))
            })?;
            response.headers_mut().append(name.clone(), v);
        }
    }
    if json && !response.headers().contains_key(http::header::CONTENT_TYPE) {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(response)
}

/// serde_json's message without the data it quotes.
fn classify(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => "not JSON".into(),
        Category::Io => "unreadable".into(),
        Category::Data => {
            let msg = e.to_string();
            match msg.find(" at line ") {
                Some(i) => msg[..i].to_owned(),
                None => msg,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_document_has_text_or_base64_body() {
        let req = http::Request::post("/process?a=1&b=2")
            .header("X-One", "1")
            .header("x-one", "2")
            .body(Bytes::from_static(b"{\"x\":1}"))
            .unwrap();
        let doc: Value = serde_json::from_slice(&encode_request(&req)).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"method":"POST","path":"/process","query":"a=1&b=2",
                "headers":{"x-one":"1, 2"},"body":"{\"x\":1}"})
        );
        let req = http::Request::get("/")
            .body(Bytes::from_static(&[0xff, 0]))
            .unwrap();
        let doc: Value = serde_json::from_slice(&encode_request(&req)).unwrap();
        assert_eq!(doc["body_base64"], "/wA=");
        assert!(doc.get("body").is_none());
    }

    #[test]
    fn response_document_forms() {
        let r = decode_response(b" {\"body\":\"hi\"}\n", 10).unwrap();
        assert_eq!((r.status().as_u16(), r.body().as_ref()), (200, &b"hi"[..]));
        let r = decode_response(
            br#"{"status":201,"headers":{"x-a":["1","2"]},"body":{"ok":true}}"#,
            100,
        )
        .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.body().as_ref(), br#"{"ok":true}"#);
        let r = decode_response(br#"{"body_base64":"/wA="}"#, 2).unwrap();
        assert_eq!(r.body().as_ref(), [0xff, 0]);
    }

    #[test]
    fn bad_documents_are_errors_without_the_data() {
        assert_eq!(
            decode_response(b"  \n", 10).unwrap_err(),
            FramingError::Empty
        );
        let e = decode_response(b"secret-token", 10).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = decode_response(br#"{"stauts":200}"#, 10).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert_eq!(
            decode_response(br#"{"body":"12345"}"#, 4).unwrap_err(),
            FramingError::TooLarge(4)
        );
        assert!(decode_response(br#"{"body":"12345"}"#, 5).is_ok());
        assert!(decode_response(br#"{"status":1000}"#, 5).is_err());
    }
}
