//! The Temporal dev server of `cargo xtask infra up temporal` (`FISO_E2E_TEMPORAL_ADDR`, CLI at
//! `FISO_E2E_TEMPORAL_CLI`): what it recorded, read back with `temporal workflow describe /
//! show`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::Value;

use crate::infra;

pub fn temporal_addr() -> String {
    infra::var("FISO_E2E_TEMPORAL_ADDR")
}

/// `temporal <args> --address <dev server> --output json`, parsed; `None` when the CLI fails
/// (e.g. the workflow does not exist yet).
pub async fn temporal_json(args: &[&str]) -> Option<Value> {
    let out = tokio::process::Command::new(infra::var("FISO_E2E_TEMPORAL_CLI"))
        .args(args)
        .args(["--address", &temporal_addr(), "--output", "json"])
        .output()
        .await
        .expect("running the temporal CLI");
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "temporal {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

pub async fn describe(workflow_id: &str) -> Option<Value> {
    temporal_json(&["workflow", "describe", "--workflow-id", workflow_id]).await
}

/// The history events of `workflow_id`.
pub async fn history(workflow_id: &str) -> Vec<Value> {
    let h = temporal_json(&["workflow", "show", "--workflow-id", workflow_id])
        .await
        .unwrap_or_else(|| panic!("no history for workflow {workflow_id}"));
    h["events"].as_array().cloned().unwrap_or_default()
}

/// The attributes of the events of `event_type` (`EVENT_TYPE_WORKFLOW_EXECUTION_STARTED`, ...).
pub fn events<'a>(history: &'a [Value], event_type: &str, attributes: &str) -> Vec<&'a Value> {
    history
        .iter()
        .filter(|e| e["eventType"] == event_type)
        .map(|e| &e[attributes])
        .collect()
}

pub fn started(history: &[Value]) -> &Value {
    let s = events(
        history,
        "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED",
        "workflowExecutionStartedEventAttributes",
    );
    assert_eq!(s.len(), 1, "{history:#?}");
    s[0]
}

pub fn signaled(history: &[Value]) -> Vec<&Value> {
    events(
        history,
        "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED",
        "workflowExecutionSignaledEventAttributes",
    )
}

/// The payloads of `input` as (encoding, exact data text).
pub fn payloads(input: &Value) -> Vec<(String, String)> {
    let decode = |v: &Value| {
        let bytes = BASE64
            .decode(v.as_str().unwrap_or_else(|| panic!("base64 string: {v}")))
            .expect("base64");
        String::from_utf8(bytes).expect("UTF-8 payload")
    };
    input["payloads"]
        .as_array()
        .unwrap_or_else(|| panic!("no payloads in {input}"))
        .iter()
        .map(|p| (decode(&p["metadata"]["encoding"]), decode(&p["data"])))
        .collect()
}

/// The single `json/plain` payload of `input`, parsed.
pub fn single_json(input: &Value) -> Value {
    let p = payloads(input);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "json/plain");
    serde_json::from_str(&p[0].1).expect("JSON payload")
}
