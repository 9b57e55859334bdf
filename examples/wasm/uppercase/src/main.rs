//! A Fiso interceptor: reads the event JSON from stdin, uppercases every string value of its
//! `data` (at any depth) and writes the change to stdout.
//!
//! Following the contract, it only writes the keys it changes (`{"data": ...}`): Fiso merges
//! them over the event, so attributes and headers stay as they were. An event without `data`
//! is rejected with status 422, to show the rejection answer.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{json, Value};

fn uppercase(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.to_uppercase(),
        Value::Array(items) => items.iter_mut().for_each(uppercase),
        Value::Object(fields) => fields.values_mut().for_each(uppercase),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn answer(event: Value) -> Value {
    match event.get("data") {
        Some(data) if !data.is_null() => {
            let mut data = data.clone();
            uppercase(&mut data);
            json!({ "data": data })
        }
        _ => json!({ "reject": { "status": 422, "reason": "the event has no data" } }),
    }
}

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let event: Value = match serde_json::from_slice(&input) {
        Ok(event) => event,
        Err(e) => {
            // stderr ends up in Fiso's INTERCEPTOR_FAILED message.
            eprintln!("stdin is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut output = serde_json::to_vec(&answer(event)).expect("a JSON value serializes");
    output.push(b'\n');
    match std::io::stdout().lock().write_all(&output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppercases_nested_strings_only() {
        let out =
            answer(json!({"id": "e1", "data": {"key": "value", "n": 1, "l": ["a", {"b": "c"}]}}));
        assert_eq!(
            out,
            json!({"data": {"key": "VALUE", "n": 1, "l": ["A", {"b": "C"}]}})
        );
    }

    #[test]
    fn rejects_an_event_without_data() {
        assert_eq!(answer(json!({"id": "e1"}))["reject"]["status"], 422);
    }
}
