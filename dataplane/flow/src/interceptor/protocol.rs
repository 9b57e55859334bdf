//! The stdin → stdout contract between Fiso-Flow and a WASM interceptor module.
//!
//! # Contract
//!
//! An interceptor is a WASI preview 1 *command* module (it exports `_start`). For every event
//! Fiso-Flow starts a fresh instance, writes **one JSON object** to its stdin, closes stdin, runs
//! `_start` to completion and reads **one JSON object** from its stdout.
//!
//! ## Input (stdin)
//!
//! The CloudEvent in the CloudEvents JSON format plus the transport headers:
//!
//! ```json
//! {
//!   "specversion": "1.0",
//!   "id": "9f1c…",
//!   "source": "/orders",
//!   "type": "order.created",
//!   "subject": "ORD-1",                 // optional attributes, when set
//!   "time": "2026-01-01T00:00:00Z",
//!   "datacontenttype": "application/json",
//!   "myextension": "value",             // extension attributes, when set
//!   "data": {"key": "value"},           // JSON or text data; bytes are "data_base64"; absent without data
//!   "headers": {"x-request-id": "abc"}  // always present, may be empty; string values
//! }
//! ```
//!
//! ## Output (stdout)
//!
//! Exactly one JSON object (surrounding whitespace, e.g. the trailing newline of `println`, is
//! ignored). Its keys are **changes merged over the input**: a key that is absent keeps its input
//! value, so a module may write only `{"data": …}` (the upstream Go example does exactly that).
//!
//! | key | rule |
//! |---|---|
//! | `data` | replaces the data with this JSON value (`null` is JSON null data, as in the JSON format), or with text for a non-JSON `datacontenttype` |
//! | `data_base64` | replaces the data with these bytes (base64) |
//! | `specversion`, `id` | may be echoed, must not change (an event's identity is not the interceptor's to change) |
//! | `source`, `type` | non-empty strings |
//! | `subject`, `datacontenttype`, `dataschema` | strings; `null` removes the attribute |
//! | `time` | an RFC 3339 timestamp string; `null` removes it |
//! | `headers` | an object of string values; replaces the headers as a whole |
//! | any other key | a CloudEvents extension attribute: the name must be `[a-z0-9]+`, the value a string, a boolean or a 32-bit integer; `null` removes it |
//!
//! Extension types follow the JSON format: strings, booleans and integers keep their type; a
//! Protobuf-typed extension (bytes, URI, timestamp) comes back as its string.
//!
//! Anything else (not JSON, not an object, trailing data, an invalid extension
//! name or value, ...) fails the event with `INTERCEPTOR_FAILED`.
//!
//! ## Rejection
//!
//! Instead of an event a module may reject it (the shape every interceptor contract shares,
//! [`fiso_wasm::output`]):
//!
//! ```json
//! {"reject": {"status": 422, "reason": "missing customer id"}}
//! ```
//!
//! `status` is an integer in `400..=599` (an HTTP source answers with it); `reason` is an optional
//! string. `reject` must be the only top-level key. A rejected event is not delivered to the sink.
//!
//! ## Environment
//!
//! `args` = `[<module file name>]`; the environment holds exactly the configured `env`; the
//! configured `preopens` are visible read-only; there is no network and no other filesystem.
//! stderr is captured (the first 4 KiB appear in error messages); a non-zero exit code, a trap,
//! the timeout, the memory limit, the fuel budget or the stdout limit fail the event.

use fiso_wasm::output::{self, check_headers, Output};
use serde_json::{Map, Value};

/// Attributes an interceptor may echo but not change.
const IMMUTABLE: [&str; 2] = ["specversion", "id"];
/// Required string attributes that may change but not disappear.
const REQUIRED: [&str; 2] = ["source", "type"];
/// Optional string attributes (`null` removes them).
const OPTIONAL_STRINGS: [&str; 3] = ["subject", "datacontenttype", "dataschema"];

/// What a module answered, once checked against the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The event with the module's changes merged in, in the input shape.
    Event(Value),
    /// The module refused the event.
    Reject { status: u16, reason: String },
}

pub use fiso_wasm::output::DEFAULT_REJECT_REASON;

/// Decodes the stdout of a module and merges it over `input` (an object in the input shape).
///
/// The error is a human-readable reason; the caller adds the module name and the code.
pub fn decode_output(input: &Map<String, Value>, stdout: &[u8]) -> Result<Answer, String> {
    match output::parse(stdout)? {
        Output::Reject { status, reason } => Ok(Answer::Reject { status, reason }),
        Output::Changes(changes) => merge(input.clone(), changes)
            .map(Value::Object)
            .map(Answer::Event),
    }
}

fn merge(
    mut event: Map<String, Value>,
    changes: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    for (key, value) in changes {
        let k = key.as_str();
        match k {
            // JSON data, `null` included (json-format §3.1.1), or bytes: either replaces both.
            "data" => {
                event.remove("data_base64");
                event.insert(key, value);
            }
            "data_base64" => match value {
                Value::String(_) => {
                    event.remove("data");
                    event.insert(key, value);
                }
                other => {
                    return Err(format!(
                        "`data_base64` must be a base64 string, got {other}"
                    ))
                }
            },
            _ if IMMUTABLE.contains(&k) => {
                if event.get(k) != Some(&value) {
                    return Err(format!(
                        "`{k}` must not change (input {}, output {value})",
                        event.get(k).map_or("nothing".into(), Value::to_string)
                    ));
                }
            }
            _ if REQUIRED.contains(&k) => match &value {
                Value::String(s) if !s.is_empty() => {
                    event.insert(key, value);
                }
                _ => return Err(format!("`{k}` must be a non-empty string, got {value}")),
            },
            _ if OPTIONAL_STRINGS.contains(&k) => match value {
                Value::String(_) | Value::Null => set_or_remove(&mut event, key, value),
                other => return Err(format!("`{k}` must be a string or null, got {other}")),
            },
            "time" => match &value {
                Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
                    event.insert(key, value);
                }
                Value::Null => {
                    event.remove(k);
                }
                other => {
                    return Err(format!(
                        "`time` must be an RFC 3339 timestamp string or null, got {other}"
                    ))
                }
            },
            "headers" => {
                check_headers(&value)?;
                event.insert(key, value);
            }
            _ => {
                check_extension(k, &value)?;
                set_or_remove(&mut event, key, value);
            }
        }
    }
    Ok(event)
}

fn set_or_remove(event: &mut Map<String, Value>, key: String, value: Value) {
    if value.is_null() {
        event.remove(&key);
    } else {
        event.insert(key, value);
    }
}

/// A CloudEvents extension: `[a-z0-9]+` name; Boolean, Integer (32-bit) or String value.
fn check_extension(name: &str, value: &Value) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!(
            "unknown top-level key `{name}`: not a CloudEvents extension name ([a-z0-9]+)"
        ));
    }
    let ok = match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        Value::Array(_) | Value::Object(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "extension `{name}` must be a string, a boolean or a 32-bit integer, got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input() -> Map<String, Value> {
        let Value::Object(m) = json!({
            "specversion": "1.0", "id": "e1", "source": "/s", "type": "t",
            "subject": "sub", "data": {"key": "value"}, "headers": {"a": "1"}
        }) else {
            unreachable!()
        };
        m
    }

    fn event(out: &str) -> Result<Value, String> {
        match decode_output(&input(), out.as_bytes())? {
            Answer::Event(v) => Ok(v),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn the_upstream_example_only_replaces_data() {
        let out = event("{\"data\":{\"key\":\"VALUE\"}}\n").unwrap();
        let mut expected = input();
        expected.insert("data".into(), json!({"key": "VALUE"}));
        assert_eq!(out, Value::Object(expected));
    }

    #[test]
    fn attributes_headers_and_extensions_merge_over_the_input() {
        let out = event(
            r#"{"type":"t2","subject":null,"time":"2026-01-01T00:00:00Z",
                "headers":{"b":"2"},"tenant":"acme","prio":3,"id":"e1","data":null}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"specversion": "1.0", "id": "e1", "source": "/s", "type": "t2",
                   "headers": {"b": "2"}, "time": "2026-01-01T00:00:00Z",
                   "tenant": "acme", "prio": 3, "data": null}),
            "`data: null` is JSON null data, as in the JSON format"
        );
    }

    #[test]
    fn rejections_are_decoded_and_checked() {
        let ok = decode_output(&input(), br#"{"reject":{"status":422,"reason":"bad"}}"#);
        assert_eq!(
            ok,
            Ok(Answer::Reject {
                status: 422,
                reason: "bad".into()
            })
        );
        let default = decode_output(&input(), br#"{"reject":{"status":503}}"#);
        assert_eq!(
            default,
            Ok(Answer::Reject {
                status: 503,
                reason: DEFAULT_REJECT_REASON.into()
            })
        );
        for bad in [
            r#"{"reject":{"status":200}}"#,
            r#"{"reject":{"status":600,"reason":"x"}}"#,
            r#"{"reject":{"status":"422"}}"#,
            r#"{"reject":{"status":422,"reason":5}}"#,
            r#"{"reject":{"status":422,"extra":1}}"#,
            r#"{"reject":{"status":422},"data":{}}"#,
            r#"{"reject":true}"#,
        ] {
            assert!(decode_output(&input(), bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn contract_violations_are_errors() {
        for (bad, needle) in [
            ("", "wrote nothing"),
            ("  \n", "wrote nothing"),
            ("not json", "not one JSON value"),
            ("{} {}", "not one JSON value"),
            ("[1]", "must be a JSON object"),
            (r#"{"id":"other"}"#, "`id` must not change"),
            (r#"{"specversion":"0.3"}"#, "`specversion` must not change"),
            (r#"{"source":""}"#, "non-empty string"),
            (r#"{"type":null}"#, "non-empty string"),
            (r#"{"subject":1}"#, "string or null"),
            (r#"{"time":"yesterday"}"#, "RFC 3339"),
            (r#"{"headers":{"a":1}}"#, "header `a`"),
            (r#"{"headers":[]}"#, "`headers` must be an object"),
            (r#"{"data_base64":5}"#, "base64 string"),
            (r#"{"Tenant":"x"}"#, "not a CloudEvents extension name"),
            (r#"{"my-ext":"x"}"#, "not a CloudEvents extension name"),
            (r#"{"ext":{"a":1}}"#, "32-bit integer"),
            (r#"{"ext":1.5}"#, "32-bit integer"),
            (r#"{"ext":4294967296}"#, "32-bit integer"),
        ] {
            let err = event(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
