//! A `transform.fields` expression compiled, loaded and evaluated the way a flow does it: within
//! the CEL bounds, constants folded and events evaluated within the default budget, on a thread
//! with the stack flows evaluate on.
//!
//! Input: the CEL expression, a NUL byte, then the event as JSON (a bare payload, or a structured
//! CloudEvent when it has `specversion`). Without a NUL byte the whole input is the expression
//! and the event is `{}`; a payload that is not JSON becomes a JSON string. Compile and
//! evaluation errors are fine; panics, stack overflows and hangs are not.

use fiso_config::cel_check::on_eval_stack;
use fiso_flow::{Budget, FlowDefaults, InputEvent, Scope, Transformer};
use indexmap::IndexMap;
use serde_json::Value;

pub fn run(data: &[u8]) {
    let (expr, payload) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let payload = serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()));

    let fields = IndexMap::from([("out".to_owned(), expr.to_owned())]);
    on_eval_stack(|| {
        let Ok(transformer) = Transformer::compile_with(&fields, Budget::DEFAULT) else {
            return;
        };
        let defaults = FlowDefaults::new("fuzz");
        let Ok(input) = InputEvent::from_json(payload, defaults.event()) else {
            return;
        };
        let _ = transformer.transform(&Scope::with_budget(&input, Budget::DEFAULT));
    })
    .expect("a thread for the evaluation");
}
