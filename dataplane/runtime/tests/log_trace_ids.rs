//! JSON log lines inside a traced span carry its ids at the top level. Its own binary: the
//! global subscriber can be installed only once.

use fiso_config::TracingConfig;
use fiso_runtime::logging::{LogFormat, LogSettings};
use serde_json::Value;

/// `(trace_id, span_id)` of `span`, read back from the `traceparent` it would propagate.
fn ids_of(span: &tracing::Span) -> (String, String) {
    let headers = fiso_runtime::otel::headers_of(span).expect("a traced span");
    let traceparent = headers.traceparent.unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    (parts[1].to_owned(), parts[2].to_owned())
}

#[test]
fn json_lines_inside_a_traced_span_have_its_ids_at_the_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fiso.log");
    // A collector nobody listens on: the spans' ids are what is checked, not their export.
    let tracing: TracingConfig =
        serde_yaml_ng::from_str("endpoint: http://127.0.0.1:1\ntimeout: 1s\n").unwrap();
    let guard = LogSettings::from_env_and_file(Some(&tracing))
        .unwrap()
        .with_format(LogFormat::Json)
        .with_file(&path)
        .init()
        .unwrap();
    assert!(guard.installed());
    assert!(fiso_runtime::otel::enabled());

    tracing::info!(flow = "orders", "outside any span");
    let flow = tracing::info_span!(target: "fiso_flow", "flow orders", flow = "orders");
    let attempt = tracing::info_span!(target: "fiso_flow", parent: &flow, "POST");
    flow.in_scope(|| tracing::info!(events = 1, "inside the flow span"));
    attempt.in_scope(|| tracing::warn!("inside the attempt span"));
    let (flow_ids, attempt_ids) = (ids_of(&flow), ids_of(&attempt));
    drop((attempt, flow));
    tracing::info!("after the spans");

    drop(guard); // flushes the file
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l: &Value| {
            !l["target"]
                .as_str()
                .unwrap_or("")
                .starts_with("opentelemetry")
        })
        .filter(|l: &Value| l["message"] != "exporting traces over OTLP")
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    let ids = |l: &Value| {
        (
            l.get("trace_id").map(|v| v.as_str().unwrap().to_owned()),
            l.get("span_id").map(|v| v.as_str().unwrap().to_owned()),
        )
    };
    assert_eq!(lines[0]["message"], "outside any span");
    assert_eq!(ids(&lines[0]), (None, None), "{}", lines[0]);
    assert!(lines[0].get("span").is_none());

    assert_eq!(lines[1]["message"], "inside the flow span");
    assert_eq!(
        ids(&lines[1]),
        (Some(flow_ids.0.clone()), Some(flow_ids.1.clone()))
    );
    // The rest of the line is as before: event fields flat, the span nested.
    assert_eq!(lines[1]["events"], 1);
    assert_eq!(lines[1]["level"], "INFO");
    assert_eq!(lines[1]["span"]["name"], "flow orders");
    assert_eq!(lines[1]["span"]["flow"], "orders");

    assert_eq!(lines[2]["message"], "inside the attempt span");
    assert_eq!(
        ids(&lines[2]),
        (Some(flow_ids.0.clone()), Some(attempt_ids.1.clone()))
    );
    assert_eq!(attempt_ids.0, flow_ids.0, "one trace");
    assert_ne!(attempt_ids.1, flow_ids.1);

    assert_eq!(lines[3]["message"], "after the spans");
    assert_eq!(ids(&lines[3]), (None, None));
}
