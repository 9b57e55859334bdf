//! What a sink must receive for a valid event, and what the caller must get for an invalid one:
//! the contract of the conformance suite. Each check returns every difference it finds (empty:
//! conforms), phrased so that a failure report names what Fiso got wrong.
//!
//! - Structured sink: `Content-Type: application/cloudevents+json`; the body is the expected
//!   event in the JSON format, member for member (JSON values compared as values, `data_base64`
//!   by the bytes it decodes to). An expected event without `time` means the input had none:
//!   Fiso stamps the receive time, any RFC 3339 value.
//! - Binary sink: every attribute but `datacontenttype` as a `ce-<name>` header of its canonical
//!   string, percent-encoded as http-protocol-binding §3.1.3.2 says (space, `"`, `%` and every
//!   character outside U+0021–U+007E as `%XX` of its UTF-8 bytes, upper-case hex, nothing else);
//!   `Content-Type` = `datacontenttype`, else `application/json` for `data` (json-format §3.1.2),
//!   else none; the body = the data bytes (JSON data compared as JSON values), empty without
//!   data.
//! - Refusal: 400 with `{"error":{"code":"INPUT_INVALID","message":…}}`, the message naming the
//!   problem.

use base64::Engine;
use serde_json::{Map, Value};

use crate::{Answer, Recorded};

/// The media type of a `Content-Type` value: parameters dropped, lower-cased.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `*/json` or `*/*+json` (json-format §3.1.1).
pub fn is_json_media_type(content_type: &str) -> bool {
    let media = media_type(content_type);
    media
        .split_once('/')
        .is_some_and(|(_, sub)| sub == "json" || sub.ends_with("+json"))
}

/// Media types whose UTF-8 content the suite expects as a `data` string in the JSON format:
/// `text/*`, `application/xml` and `*/*+xml`.
pub fn is_text_media_type(content_type: &str) -> bool {
    let media = media_type(content_type);
    media.starts_with("text/") || media == "application/xml" || media.ends_with("+xml")
}

/// http-protocol-binding §3.1.3.2: space, `"`, `%` and everything outside U+0021–U+007E as `%XX`
/// of the UTF-8 bytes, upper-case hex.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        if ch == ' ' || ch == '"' || ch == '%' || !('\u{21}'..='\u{7e}').contains(&ch) {
            let mut buf = [0; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// http-protocol-binding §3.1.3.2 on the way in: a value that is one double-quoted string (RFC
/// 7230 §3.2.6, as senders before 1.0.2 quoted whole values) loses its quotes and backslash
/// escapes — a `"` anywhere else is part of the value — then one round of percent-decoding.
/// `None` when a `%` is not followed by two hex digits or the bytes are not UTF-8.
pub fn decode_header_value(value: &str) -> Option<String> {
    let unquoted = unquote_whole(value).unwrap_or_else(|| value.to_owned());
    let mut bytes = Vec::with_capacity(unquoted.len());
    let mut rest = unquoted.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The content of `value` when it is exactly one quoted-string.
fn unquote_whole(value: &str) -> Option<String> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The canonical string of an attribute value (spec §Type System).
pub fn canonical(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON values equal as values: object member order does not matter, numbers compare by value.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                    (Some(x), Some(y), _, _) => x == y,
                    (_, _, Some(x), Some(y)) => x == y,
                    _ => x.as_f64().is_some() && x.as_f64() == y.as_f64(),
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn is_rfc3339(time: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(time).is_ok()
}

fn decode_base64(value: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str()?)
        .ok()
}

fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!(
            "base64 {}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

/// Members of `want` missing from, different in, or not expected in `got`, each named
/// `<prefix><name>`.
fn diff_members(
    want: &Map<String, Value>,
    got: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (k, w) in want {
        match got.get(k) {
            None => out.push(format!("missing `{prefix}{k}` (want {w})")),
            Some(g) if !json_eq(w, g) => out.push(format!("`{prefix}{k}`: got {g}, want {w}")),
            Some(_) => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            out.push(format!("unexpected `{prefix}{k}`: {g}"));
        }
    }
}

/// What a sink in structured mode received, against the expected event.
pub fn structured_sink(want: &Map<String, Value>, got: &Recorded) -> Vec<String> {
    let mut out = Vec::new();
    let content_type = got.header("content-type").unwrap_or_default();
    if media_type(content_type) != "application/cloudevents+json" {
        out.push(format!(
            "Content-Type {content_type:?}, want application/cloudevents+json"
        ));
    }
    let mut event = match serde_json::from_slice::<Value>(&got.body) {
        Ok(Value::Object(event)) => event,
        _ => {
            out.push(format!("body is not a JSON object: {}", show(&got.body)));
            return out;
        }
    };
    let mut want = want.clone();
    if !want.contains_key("time") {
        match event.remove("time") {
            Some(Value::String(t)) if is_rfc3339(&t) => {}
            Some(t) => out.push(format!("`time` stamped by Fiso is not RFC 3339: {t}")),
            None => out.push("no `time`: Fiso stamps the receive time".to_owned()),
        }
    }
    if let (Some(w), Some(g)) = (want.get("data_base64"), event.get("data_base64")) {
        match (decode_base64(w), decode_base64(g)) {
            (Some(w), Some(g)) if w == g => {}
            (Some(w), decoded) => out.push(format!(
                "`data_base64` {g}: decodes to {}, want {}",
                decoded.map_or("nothing (not base64)".to_owned(), |d| show(&d)),
                show(&w)
            )),
            (None, _) => out.push(format!("expected `data_base64` {w} is not base64")),
        }
        want.remove("data_base64");
        event.remove("data_base64");
    }
    diff_members(&want, &event, "", &mut out);
    out
}

/// What a sink in binary mode received, against the expected event.
pub fn binary_sink(want: &Map<String, Value>, got: &Recorded) -> Vec<String> {
    let mut out = Vec::new();
    let mut headers = Map::new();
    for name in got.headers.keys() {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let values: Vec<_> = got.headers.get_all(name).iter().collect();
        if values.len() > 1 {
            out.push(format!("header {name} appears {} times", values.len()));
        }
        let value = String::from_utf8_lossy(values[0].as_bytes()).into_owned();
        headers.insert(attr.to_owned(), Value::String(value));
    }
    let mut want_headers = Map::new();
    for (k, v) in want {
        if !matches!(k.as_str(), "datacontenttype" | "data" | "data_base64") {
            want_headers.insert(k.clone(), Value::String(percent_encode(&canonical(v))));
        }
    }
    if !want.contains_key("time") {
        match headers.remove("time") {
            Some(Value::String(t)) if is_rfc3339(&t) => {}
            Some(t) => out.push(format!("ce-time stamped by Fiso is not RFC 3339: {t}")),
            None => out.push("no ce-time: Fiso stamps the receive time".to_owned()),
        }
    }
    diff_members(&want_headers, &headers, "ce-", &mut out);

    let dct = want.get("datacontenttype").and_then(Value::as_str);
    let want_ct = dct.or(want.contains_key("data").then_some("application/json"));
    let got_ct = got.header("content-type");
    if got_ct != want_ct {
        out.push(format!("Content-Type {got_ct:?}, want {want_ct:?}"));
    }

    let body = &got.body[..];
    match (want.get("data"), want.get("data_base64")) {
        (None, None) if !body.is_empty() => {
            out.push(format!("a body without data: {}", show(body)));
        }
        (None, None) => {}
        (_, Some(b64)) => match decode_base64(b64) {
            Some(bytes) if bytes == body => {}
            Some(bytes) => out.push(format!("body {}, want {}", show(body), show(&bytes))),
            None => out.push(format!("expected `data_base64` {b64} is not base64")),
        },
        (Some(data), None) if dct.is_none_or(is_json_media_type) => {
            match serde_json::from_slice::<Value>(body) {
                Ok(got) if json_eq(data, &got) => {}
                Ok(got) => out.push(format!("body {got}, want {data}")),
                Err(_) => out.push(format!("body is not JSON: {}, want {data}", show(body))),
            }
        }
        (Some(Value::String(text)), None) => {
            if body != text.as_bytes() {
                out.push(format!("body {}, want {text:?}", show(body)));
            }
        }
        (Some(data), None) => out.push(format!(
            "expected data {data} is neither JSON ({dct:?}) nor a string"
        )),
    }
    out
}

/// The caller's answer to an invalid event: 400 `INPUT_INVALID`, the message containing `word`
/// (case-insensitive, as a whole word: `id` does not match "invalid").
pub fn refusal(answer: &Answer, word: &str) -> Vec<String> {
    let mut out = Vec::new();
    if answer.status != reqwest::StatusCode::BAD_REQUEST {
        out.push(format!("status {}, want 400", answer.status));
    }
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let code = &body["error"]["code"];
    if code != "INPUT_INVALID" {
        out.push(format!("error code {code}, want \"INPUT_INVALID\""));
    }
    match body["error"]["message"].as_str() {
        Some(message) if contains_word(message, word) => {}
        Some(message) => out.push(format!("error message {message:?} does not name {word:?}")),
        None => out.push(format!("no error message in {}", answer.text())),
    }
    out
}

/// `word` in `text`, case-insensitive, not inside a longer word.
pub fn contains_word(text: &str, word: &str) -> bool {
    let (text, word) = (text.to_lowercase(), word.to_lowercase());
    let inside = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(&word).any(|(at, _)| {
        !inside(text[..at].chars().next_back()) && !inside(text[at + word.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percent_encoding_follows_the_http_binding_example() {
        assert_eq!(
            percent_encode("Euro € 😀"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(percent_encode("a\"b%c~!"), "a%22b%25c~!");
    }

    #[test]
    fn header_values_are_unquoted_then_percent_decoded() {
        let decode = decode_header_value;
        assert_eq!(decode("Euro%20%e2%82%AC").as_deref(), Some("Euro €"));
        assert_eq!(decode(r#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(decode(r#""Euro%20%E2%82%AC""#).as_deref(), Some("Euro €"));
        let inner_quotes = r#"{"othervalue": 5}"#;
        assert_eq!(decode(inner_quotes).as_deref(), Some(inner_quotes));
        assert_eq!(decode(r#""a" "b""#).as_deref(), Some(r#""a" "b""#));
        assert_eq!(decode("\"open").as_deref(), Some("\"open"));
        assert_eq!(decode("100%2541").as_deref(), Some("100%41"));
        assert_eq!(decode("%C0%A0"), None);
        assert_eq!(decode("%zz"), None);
    }

    #[test]
    fn media_types() {
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.x+json"));
        assert!(!is_json_media_type("application/jsonx"));
        assert!(is_text_media_type("text/plain; charset=us-ascii"));
        assert!(!is_text_media_type("application/octet-stream"));
    }

    #[test]
    fn words_are_whole() {
        assert!(contains_word("missing attribute `id`", "id"));
        assert!(contains_word("bad ce-id header", "id"));
        assert!(!contains_word("invalid event", "id"));
        assert!(contains_word("Extension name `com_example`", "COM_EXAMPLE"));
    }

    fn recorded(headers: &[(&str, &str)], body: &[u8]) -> Recorded {
        let mut map = axum::http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Recorded {
            method: axum::http::Method::POST,
            path: "/in".to_owned(),
            query: None,
            host: None,
            version: axum::http::Version::HTTP_11,
            headers: map,
            body: bytes::Bytes::copy_from_slice(body),
            received_at: std::time::Instant::now(),
            status: axum::http::StatusCode::OK,
        }
    }

    fn event(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn binary_sink_headers_are_percent_encoded_canonical_strings() {
        let want = event(
            json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t",
            "subject": "Euro €", "extint": 5, "data": {"a": 1}}),
        );
        let mut headers = vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "a"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", "Euro%20%E2%82%AC"),
            ("ce-extint", "5"),
            ("ce-time", "2024-01-01T00:00:00.5+01:00"),
            ("content-type", "application/json"),
        ];
        let got = recorded(&headers, b"{ \"a\": 1 }");
        assert_eq!(binary_sink(&want, &got), Vec::<String>::new());
        headers[4] = ("ce-subject", "Euro%20%e2%82%ac");
        headers.push(("ce-extra", "x"));
        let got = recorded(&headers, b"");
        assert_eq!(
            binary_sink(&want, &got),
            [
                "`ce-subject`: got \"Euro%20%e2%82%ac\", want \"Euro%20%E2%82%AC\"",
                "unexpected `ce-extra`: \"x\"",
                "body is not JSON: \"\", want {\"a\":1}",
            ]
        );
    }

    #[test]
    fn structured_sink_compares_values_and_bytes() {
        let want = event(
            json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t",
            "time": "2024-01-01T00:00:00Z", "data_base64": "AAEC"}),
        );
        let ok = json!({"type": "t", "id": "a", "source": "/s", "specversion": "1.0",
            "time": "2024-01-01T00:00:00Z", "data_base64": "AAEC"});
        let ct = [("content-type", "application/cloudevents+json")];
        let got = recorded(&ct, ok.to_string().as_bytes());
        assert_eq!(structured_sink(&want, &got), Vec::<String>::new());
        let stamped = json!({"type": "t", "id": "a", "source": "/s", "specversion": "1.0",
            "time": "2024-01-01T00:00:00Z", "data": "\u{0}\u{1}\u{2}"});
        let mut want = want;
        want.remove("time");
        let got = recorded(&ct, stamped.to_string().as_bytes());
        assert_eq!(
            structured_sink(&want, &got),
            [
                "missing `data_base64` (want \"AAEC\")",
                "unexpected `data`: \"\\u0000\\u0001\\u0002\"",
            ]
        );
    }

    #[test]
    fn json_values_compare_as_values() {
        assert!(json_eq(
            &json!({"a": 1, "b": [1.5]}),
            &json!({"b": [1.5], "a": 1})
        ));
        assert!(!json_eq(
            &json!(9007199254740993u64),
            &json!(9007199254740992u64)
        ));
        assert!(!json_eq(&json!(null), &json!({})));
    }
}
