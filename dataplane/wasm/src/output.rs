//! What every interceptor contract shares on stdout: exactly one JSON object (surrounding
//! whitespace ignored) that is either **changes** merged over the input by the contract (a key
//! that is absent keeps its input value), or a **rejection**:
//!
//! ```json
//! {"reject": {"status": 422, "reason": "missing customer id"}}
//! ```
//!
//! `status` is an integer in `400..=599`; `reason` an optional string ([`DEFAULT_REJECT_REASON`]
//! when absent); `reject` must be the only top-level key. Anything else (not JSON, not an
//! object, trailing data) is an error the contract reports as `INTERCEPTOR_FAILED`.

use serde_json::{Map, Value};

/// Default rejection reason when a module gives none.
pub const DEFAULT_REJECT_REASON: &str = "rejected by interceptor";

/// A module's stdout, once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Keys to merge over the input (the contract checks each).
    Changes(Map<String, Value>),
    /// The module refused its input.
    Reject { status: u16, reason: String },
}

/// Decodes the stdout of a module. The error is a human-readable reason; the caller adds the
/// module name and the code.
pub fn parse(stdout: &[u8]) -> Result<Output, String> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err("the module wrote nothing to stdout".into());
    }
    let value: Value = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "stdout is not one JSON value: {e} (starts with {})",
            preview(stdout)
        )
    })?;
    let Value::Object(changes) = value else {
        return Err(format!(
            "stdout must be a JSON object, got {}",
            kind_of(&value)
        ));
    };
    if let Some(reject) = changes.get("reject") {
        if changes.len() != 1 {
            return Err("`reject` must be the only top-level key".into());
        }
        return decode_reject(reject);
    }
    Ok(Output::Changes(changes))
}

fn decode_reject(reject: &Value) -> Result<Output, String> {
    let Value::Object(body) = reject else {
        return Err("`reject` must be an object {\"status\", \"reason\"}".into());
    };
    if let Some(key) = body.keys().find(|k| *k != "status" && *k != "reason") {
        return Err(format!(
            "`reject.{key}` is not a known key (status, reason)"
        ));
    }
    let status = body
        .get("status")
        .and_then(Value::as_u64)
        .filter(|s| (400..=599).contains(s))
        .ok_or_else(|| {
            format!(
                "`reject.status` must be an integer in 400..=599, got {}",
                body.get("status")
                    .map_or("nothing".into(), Value::to_string)
            )
        })?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => DEFAULT_REJECT_REASON.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "`reject.reason` must be a string, got {}",
                kind_of(other)
            ))
        }
    };
    Ok(Output::Reject {
        status: status as u16,
        reason,
    })
}

/// Checks that `value` (the `headers` key of an output) is an object of strings.
pub fn check_headers(value: &Value) -> Result<(), String> {
    let Value::Object(headers) = value else {
        return Err(format!(
            "`headers` must be an object of strings, got {}",
            kind_of(value)
        ));
    };
    match headers.iter().find(|(_, v)| !v.is_string()) {
        Some((name, v)) => Err(format!("header `{name}` must be a string, got {v}")),
        None => Ok(()),
    }
}

/// "a string", "an object", ... for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The first bytes of a module's output, quoted, for error messages.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let more = if bytes.len() > MAX { "…" } else { "" };
    format!("{text:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_decoded_and_checked() {
        assert_eq!(
            parse(br#"{"reject":{"status":422,"reason":"bad"}}"#),
            Ok(Output::Reject {
                status: 422,
                reason: "bad".into()
            })
        );
        assert_eq!(
            parse(br#"{"reject":{"status":503}}"#),
            Ok(Output::Reject {
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
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn stdout_must_be_one_json_object() {
        for (bad, needle) in [
            ("", "wrote nothing"),
            ("  \n", "wrote nothing"),
            ("not json", "not one JSON value"),
            ("{} {}", "not one JSON value"),
            ("[1]", "must be a JSON object"),
        ] {
            let err = parse(bad.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert_eq!(
            parse(b" {\"a\":1}\n"),
            Ok(Output::Changes(serde_json::from_str(r#"{"a":1}"#).unwrap()))
        );
    }
}
