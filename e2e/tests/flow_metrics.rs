//! `/metrics` after a known sequence of events: exact counter values per flow label.

use fiso_e2e::{client, post_json, FisoProcess, FlowDir, HttpFlow, Reply, Script, SinkServer};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_match_what_happened() {
    // Two deliveries succeed, the third attempt fails (and is not retried).
    let sink = SinkServer::start(Script::first(
        [Reply::status(200), Reply::status(200)],
        Reply::status(500),
    ))
    .await;
    let dir = FlowDir::new();
    dir.write(
        "m.yaml",
        &HttpFlow::new("m", "127.0.0.1:0", "/m", &sink.url("/in"))
            .with("transform:\n  fields:\n    total: \"data.price * 2\"")
            .with("errorHandling:\n  maxRetries: 0")
            .yaml(),
    );
    // A second flow whose series must stay apart from m's.
    dir.write(
        "quiet.yaml",
        &HttpFlow::new("quiet", "127.0.0.1:0", "/quiet", &sink.url("/in")).yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/m", fiso.http_addr("127.0.0.1:0").await);
    let http = client();

    for price in [1, 2] {
        let answer = post_json(&http, &url, &json!({ "price": price })).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let answer = post_json(&http, &url, &json!({"cost": 3})).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let answer = post_json(&http, &url, &json!({"price": 4})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());

    // Every outcome is counted before the caller is answered.
    let m = fiso.metrics().await;
    let flow = ("flow", "m");
    for (status, expected) in [("success", 2.0), ("invalid", 1.0), ("failed", 1.0)] {
        assert_eq!(
            m.get("fiso_flow_events_total", &[flow, ("status", status)]),
            Some(expected),
            "fiso_flow_events_total{{status={status}}}\n{m}"
        );
    }
    assert_eq!(
        m.get(
            "fiso_flow_transform_errors_total",
            &[flow, ("error_type", "TRANSFORM_FAILED")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        m.get("fiso_flow_sink_delivery_errors_total", &[flow]),
        Some(1.0),
        "{m}"
    );
    for (phase, count) in [("transform", 4.0), ("sink", 3.0), ("total", 4.0)] {
        assert_eq!(
            m.get(
                "fiso_flow_event_duration_seconds_count",
                &[flow, ("phase", phase)]
            ),
            Some(count),
            "duration count for phase {phase}\n{m}"
        );
        assert_eq!(
            m.get(
                "fiso_flow_event_duration_seconds_bucket",
                &[flow, ("phase", phase), ("le", "+Inf")]
            ),
            Some(count),
            "{m}"
        );
    }
    assert_eq!(m.get("fiso_flow_up", &[flow]), Some(1.0), "{m}");
    assert_eq!(
        m.get("fiso_flow_up", &[("flow", "quiet")]),
        Some(1.0),
        "{m}"
    );
    // A flow's event series exist from its start, at 0, so rates and alerts see it before its
    // first event.
    for status in ["success", "invalid", "failed"] {
        assert_eq!(
            m.get(
                "fiso_flow_events_total",
                &[("flow", "quiet"), ("status", status)]
            ),
            Some(0.0),
            "{m}"
        );
    }
    assert!(m.text.contains("# TYPE fiso_flow_events counter"), "{m}");
    assert!(
        m.text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}
