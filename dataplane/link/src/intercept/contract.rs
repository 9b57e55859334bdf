//! The stdin → stdout contract between Fiso-Link and a WASM interceptor module: one HTTP
//! message as JSON in, changes (or a rejection) out. The README's "Link interceptors" section
//! is the user-facing version of this.
//!
//! # Input (stdin)
//!
//! ```json
//! {
//!   "direction": "outbound",             // or "inbound" (the upstream's answer)
//!   "method": "POST",
//!   "path": "/v1/orders",                // after /link/<target>, normalised, percent-encoded
//!   "query": "dry_run=1",                // as it came, "" when none
//!   "status": 200,                       // inbound only
//!   "headers": {"content-type": "application/json", "accept": ["a", "b"]},
//!   "payload": {"id": 1}                 // or "payload_base64": "..."; absent for an empty body
//! }
//! ```
//!
//! * `headers`: lowercase names; a header sent once is a string, a repeated one an array of its
//!   values in order (so `set-cookie` survives). Not shown, and never changed by a module:
//!   hop-by-hop headers (already stripped), `host`, `content-length`, and any header with a
//!   value that is not UTF-8. On the way out, the target's credential is injected *after* the
//!   interceptors: a module never sees it.
//! * `payload`: the body when it parses as JSON (whatever its `Content-Type`: parse success
//!   decides, so a JSON body sent as `text/plain` is still `payload`); otherwise
//!   `payload_base64`, the body's bytes in standard base64. No key for an empty body.
//!
//! # Output (stdout)
//!
//! One JSON object of changes merged over the input (absent keys keep their value, so `{}`
//! changes nothing and an unchanged body keeps its exact bytes), or
//! `{"reject":{"status","reason"}}` (see [`fiso_wasm::output`]).
//!
//! | key | rule |
//! |---|---|
//! | `payload` | the new body, this JSON value serialised; `null` empties the body |
//! | `payload_base64` | the new body, these bytes (standard base64) |
//! | `headers` | replaces the visible headers as a whole (a header left out is removed); string or array-of-strings values; `host`, `content-length` and hop-by-hop names are refused |
//! | `path` | outbound only: a new path starting with `/`; normalised and checked against the target's `allowedPaths` again (403 if it is outside them or escapes the root) |
//! | `query` | outbound only: the new query string (without `?`); `""` or `null` removes it |
//! | `direction`, `method`, `status` | may be echoed, must not change |
//!
//! Anything else fails the request with `INTERCEPTOR_FAILED` (or, with `failOpen`, leaves it
//! unchanged).

use base64::Engine as _;
use bytes::Bytes;
use fiso_config::link::InterceptorPhase;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use fiso_wasm::output::kind_of;

use crate::response::is_hop_by_hop;

/// Headers a module neither sees nor sets: they describe the connection or the framing, which
/// the proxy owns.
fn protected(name: &HeaderName) -> bool {
    name == header::HOST || name == header::CONTENT_LENGTH || is_hop_by_hop(name)
}

/// What a module sees of a message, and what the chain changed so far.
#[derive(Debug, Clone)]
pub struct View {
    pub phase: InterceptorPhase,
    /// The JSON given to the next module.
    pub json: Map<String, Value>,
    /// A module set `payload` / `payload_base64`.
    pub body_changed: bool,
    /// A module set `headers`.
    pub headers_changed: bool,
    /// A module set `path` / `query` (outbound).
    pub target_changed: bool,
}

/// The request line a message belongs to (inbound views show the request they answer).
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// Percent-encoded, normalised.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl View {
    pub fn new(
        phase: InterceptorPhase,
        line: &RequestLine<'_>,
        status: Option<u16>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Self {
        let mut json = Map::new();
        json.insert("direction".into(), phase.as_str().into());
        json.insert("method".into(), line.method.into());
        json.insert("path".into(), line.path.into());
        json.insert("query".into(), line.query.unwrap_or("").into());
        if let Some(status) = status {
            json.insert("status".into(), status.into());
        }
        json.insert("headers".into(), Value::Object(visible_headers(headers)));
        if !body.is_empty() {
            match serde_json::from_slice::<Value>(body) {
                Ok(payload) => json.insert("payload".into(), payload),
                Err(_) => json.insert(
                    "payload_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(body)
                        .into(),
                ),
            };
        }
        View {
            phase,
            json,
            body_changed: false,
            headers_changed: false,
            target_changed: false,
        }
    }

    /// The bytes written to the module's stdin.
    pub fn stdin(&self) -> Vec<u8> {
        serde_json::to_vec(&self.json).expect("a JSON map always serialises")
    }

    /// Merges a module's `changes`; on error nothing is changed. A `path` is stored as the
    /// module wrote it: the caller normalises and checks it.
    pub fn merge(&mut self, changes: Map<String, Value>) -> Result<(), String> {
        let mut next = self.clone();
        for (key, value) in changes {
            match key.as_str() {
                "payload" => {
                    next.json.remove("payload_base64");
                    next.json.insert(key, value);
                    next.body_changed = true;
                }
                "payload_base64" => {
                    let Value::String(text) = &value else {
                        return Err(format!(
                            "`payload_base64` must be a base64 string, got {}",
                            kind_of(&value)
                        ));
                    };
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|e| format!("`payload_base64` is not valid base64: {e}"))?;
                    next.json.remove("payload");
                    next.json.insert(key, value);
                    next.body_changed = true;
                }
                "headers" => {
                    check_headers(&value)?;
                    next.json.insert(key, value);
                    next.headers_changed = true;
                }
                "path" | "query" if self.phase == InterceptorPhase::Inbound => {
                    return Err(format!(
                        "`{key}` can only be changed by an outbound interceptor"
                    ));
                }
                "path" => match &value {
                    Value::String(p) if p.starts_with('/') => {
                        next.json.insert(key, value);
                        next.target_changed = true;
                    }
                    other => {
                        return Err(format!(
                            "`path` must be a string starting with `/`, got {other}"
                        ))
                    }
                },
                "query" => {
                    let query = match &value {
                        Value::Null => String::new(),
                        Value::String(q) => q.clone(),
                        other => {
                            return Err(format!("`query` must be a string or null, got {other}"))
                        }
                    };
                    if !query.is_empty()
                        && http::uri::PathAndQuery::try_from(format!("/?{query}")).is_err()
                    {
                        return Err(format!("`query` is not a valid URI query: {query:?}"));
                    }
                    next.json.insert(key, query.into());
                    next.target_changed = true;
                }
                "direction" | "method" | "status" => {
                    if self.json.get(&key) != Some(&value) {
                        return Err(format!(
                            "`{key}` must not change (input {}, output {value})",
                            self.json
                                .get(&key)
                                .map_or("nothing".into(), Value::to_string)
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "unknown top-level key `{other}` (payload, payload_base64, headers{})",
                        if self.phase == InterceptorPhase::Outbound {
                            ", path, query"
                        } else {
                            ""
                        }
                    ))
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// The body the view describes (meaningful once `body_changed`).
    pub fn body(&self) -> Bytes {
        if let Some(Value::String(b64)) = self.json.get("payload_base64") {
            // Checked by `merge`, or produced by `new`.
            return base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .unwrap_or_default();
        }
        match self.json.get("payload") {
            None | Some(Value::Null) => Bytes::new(),
            Some(v) => Bytes::from(serde_json::to_vec(v).expect("JSON serialises")),
        }
    }

    /// The body's size as the next module would get it.
    pub fn body_len(&self) -> usize {
        self.body().len()
    }

    /// `path` as the chain left it.
    pub fn path(&self) -> &str {
        self.json.get("path").and_then(Value::as_str).unwrap_or("/")
    }

    /// Stores the normalised form of the path.
    pub fn set_path(&mut self, path: String) {
        self.json.insert("path".into(), path.into());
    }

    /// `query` as the chain left it (`None` when empty).
    pub fn query(&self) -> Option<String> {
        self.json
            .get("query")
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
    }

    /// Applies the chain's header changes to `headers`: the visible headers are replaced by the
    /// view's; protected and non-UTF-8 ones stay as they were.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        if !self.headers_changed {
            return;
        }
        let visible: Vec<HeaderName> = visible_headers(headers)
            .keys()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in visible {
            headers.remove(name);
        }
        let Some(Value::Object(new)) = self.json.get("headers") else {
            return;
        };
        for (name, value) in new {
            // Checked by `merge`.
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let values: Vec<&str> = match value {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => continue,
            };
            for v in values {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.append(name.clone(), v);
                }
            }
        }
    }
}

/// The headers a module sees: lowercase name → value, or an array of values when repeated.
fn visible_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        if protected(name) {
            continue;
        }
        let values: Option<Vec<&str>> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        let Some(values) = values else {
            continue;
        };
        let value = match values.as_slice() {
            [one] => Value::String((*one).to_owned()),
            many => Value::Array(
                many.iter()
                    .map(|v| Value::String((*v).to_owned()))
                    .collect(),
            ),
        };
        out.insert(name.as_str().to_owned(), value);
    }
    out
}

fn check_headers(value: &Value) -> Result<(), String> {
    let Value::Object(headers) = value else {
        return Err(format!(
            "`headers` must be an object, got {}",
            kind_of(value)
        ));
    };
    for (name, value) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        if protected(&parsed) {
            return Err(format!(
                "header `{name}` cannot be set by an interceptor (the proxy owns it)"
            ));
        }
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let Value::String(s) = v else {
                return Err(format!(
                    "header `{name}` must be a string or an array of strings, got {value}"
                ));
            };
            HeaderValue::from_str(s)
                .map_err(|_| format!("header `{name}` has an invalid value {s:?}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn line() -> RequestLine<'static> {
        RequestLine {
            method: "POST",
            path: "/v1/orders",
            query: Some("a=1"),
        }
    }

    fn changes(v: Value) -> Map<String, Value> {
        let Value::Object(m) = v else { unreachable!() };
        m
    }

    #[test]
    fn the_input_shows_json_bodies_as_payload_and_others_as_base64() {
        let h = headers(&[
            ("content-type", b"text/plain"),
            ("accept", b"a"),
            ("accept", b"b"),
            ("host", b"localhost"),
            ("content-length", b"7"),
            ("x-raw", b"caf\xe9"),
        ]);
        let v = View::new(
            InterceptorPhase::Outbound,
            &line(),
            None,
            &h,
            &Bytes::from_static(b"{\"a\":1}"),
        );
        assert_eq!(
            Value::Object(v.json.clone()),
            json!({"direction": "outbound", "method": "POST", "path": "/v1/orders",
                   "query": "a=1", "headers": {"content-type": "text/plain", "accept": ["a", "b"]},
                   "payload": {"a": 1}}),
            "parse success decides, not Content-Type; host, content-length and non-UTF-8 values are hidden"
        );
        let v = View::new(
            InterceptorPhase::Inbound,
            &RequestLine {
                method: "GET",
                path: "/",
                query: None,
            },
            Some(404),
            &HeaderMap::new(),
            &Bytes::from_static(b"not json"),
        );
        assert_eq!(v.json["payload_base64"], json!("bm90IGpzb24="));
        assert_eq!(v.json["status"], json!(404));
        assert_eq!(v.json["query"], json!(""));
        let empty = View::new(
            InterceptorPhase::Outbound,
            &line(),
            None,
            &HeaderMap::new(),
            &Bytes::new(),
        );
        assert!(!empty.json.contains_key("payload") && !empty.json.contains_key("payload_base64"));
    }

    #[test]
    fn changes_merge_and_apply() {
        let mut h = headers(&[("x-a", b"1"), ("host", b"h"), ("x-raw", b"caf\xe9")]);
        let mut v = View::new(
            InterceptorPhase::Outbound,
            &line(),
            None,
            &h,
            &Bytes::from_static(b"{}"),
        );
        v.merge(changes(
            json!({"payload": {"b": 2}, "headers": {"x-b": ["1", "2"]},
                               "path": "/v2/x", "query": null, "method": "POST"}),
        ))
        .unwrap();
        assert!(v.body_changed && v.headers_changed && v.target_changed);
        assert_eq!(v.body(), Bytes::from_static(b"{\"b\":2}"));
        assert_eq!((v.path(), v.query()), ("/v2/x", None));
        v.apply_headers(&mut h);
        assert_eq!(h.get_all("x-b").iter().count(), 2);
        assert!(h.get("x-a").is_none(), "headers are replaced as a whole");
        assert_eq!(h.get("host").unwrap(), "h");
        assert!(
            h.get("x-raw").is_some(),
            "a header the module could not see is kept"
        );

        v.merge(changes(json!({"payload_base64": "AAE="}))).unwrap();
        assert_eq!(v.body(), Bytes::from_static(&[0, 1]));
        v.merge(changes(json!({"payload": null}))).unwrap();
        assert!(v.body().is_empty());
    }

    #[test]
    fn contract_violations_are_errors_and_change_nothing() {
        let v = View::new(
            InterceptorPhase::Inbound,
            &line(),
            Some(200),
            &HeaderMap::new(),
            &Bytes::new(),
        );
        for (bad, needle) in [
            (json!({"path": "/x"}), "only be changed by an outbound"),
            (json!({"query": "a"}), "only be changed by an outbound"),
            (json!({"status": 201}), "`status` must not change"),
            (json!({"method": "GET"}), "`method` must not change"),
            (json!({"headers": {"host": "evil"}}), "cannot be set"),
            (json!({"headers": {"content-length": "1"}}), "cannot be set"),
            (json!({"headers": {"x": 1}}), "string or an array"),
            (
                json!({"headers": {"bad name": "1"}}),
                "not a valid header name",
            ),
            (json!({"headers": {"x": "a\nb"}}), "invalid value"),
            (json!({"headers": []}), "must be an object"),
            (json!({"payload_base64": "!!"}), "not valid base64"),
            (json!({"payload_base64": 1}), "base64 string"),
            (json!({"data": {}}), "unknown top-level key `data`"),
        ] {
            let mut copy = v.clone();
            let err = copy.merge(changes(bad.clone())).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
            assert_eq!(copy.json, v.json);
        }
        let mut out = View::new(
            InterceptorPhase::Outbound,
            &line(),
            None,
            &HeaderMap::new(),
            &Bytes::new(),
        );
        for (bad, needle) in [
            (json!({"path": "relative"}), "starting with `/`"),
            (json!({"query": "a b"}), "not a valid URI query"),
            (json!({"query": 1}), "string or null"),
        ] {
            let err = out.merge(changes(bad.clone())).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
