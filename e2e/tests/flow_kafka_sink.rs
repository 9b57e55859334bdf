//! Kafka sink and dead-letter queue end to end, on the real broker from `cargo xtask infra up`
//! (`FISO_E2E_KAFKA_BROKERS`): HTTP → Kafka with a CEL key, static headers and the CloudEvents
//! binary binding; an HTTP sink that always answers 503 with a `deadLetterTopic` → 202 and a DLQ
//! record with the exact `fiso-*` headers.

use std::collections::BTreeMap;

use fiso_e2e::kafka::{brokers, consume, unique};
use fiso_e2e::{client, post_json, FisoProcess, FlowDir, Reply, Script, SinkServer};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{json, Value};

const LISTEN: &str = "127.0.0.1:0";

fn kafka_section() -> String {
    format!(
        "kafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]",
        brokers()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_kafka_with_key_headers_and_binary_cloudevent() {
    let topic = unique("orders");
    let dir = FlowDir::new();
    dir.write(
        "tokafka.yaml",
        &format!(
            "name: tokafka\n\
             {}\n\
             source:\n  type: http\n  config:\n    listenAddr: \"{LISTEN}\"\n    path: /in\n\
             transform:\n  fields:\n    order_id: data.id\n    total: data.total\n\
             cloudevents:\n  type: '\"order.created\"'\n  source: '\"/shop\"'\n  subject: data.id\n\
             sink:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n\
             \x20   key: data.customer\n    headers:\n      x-team: payments\n",
            kafka_section()
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/in", fiso.http_addr(LISTEN).await);

    let answer = post_json(
        &client(),
        &url,
        &json!({"id": "o-1", "total": 12.5, "customer": "c-42"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(body["topic"], topic.as_str(), "{body}");

    let records = consume(&topic, 1).await;
    let r = &records[0];
    assert_eq!(body["partition"], r.partition, "{body}");
    assert_eq!(body["offset"], r.offset, "{body}");
    assert_eq!(r.key.as_deref(), Some(&b"c-42"[..]));
    let value: Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(value, json!({"order_id": "o-1", "total": 12.5}));
    let h = &r.headers;
    assert_eq!(h.get("x-team").map(String::as_str), Some("payments"));
    assert_eq!(h.get("ce_specversion").map(String::as_str), Some("1.0"));
    assert_eq!(h.get("ce_type").map(String::as_str), Some("order.created"));
    assert_eq!(h.get("ce_source").map(String::as_str), Some("/shop"));
    assert_eq!(h.get("ce_subject").map(String::as_str), Some("o-1"));
    assert!(h.get("ce_id").is_some_and(|id| !id.is_empty()), "{h:?}");
    assert!(h.contains_key("ce_time"), "{h:?}");
    assert_eq!(
        h.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        h.get("fiso-correlation-id").map(String::as_str),
        answer.header("fiso-correlation-id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_failure_is_dead_lettered_with_the_exact_headers() {
    let dlq_topic = unique("dlq");
    let sink = SinkServer::start(Script::always(
        Reply::status(503)
            .header("content-type", "text/plain")
            .body("x".repeat(3000)),
    ))
    .await;
    let dir = FlowDir::new();
    dir.write(
        "todlq.yaml",
        &format!(
            "name: todlq\n\
             {}\n\
             source:\n  type: http\n  config:\n    listenAddr: \"{LISTEN}\"\n    path: /in\n\
             sink:\n  type: http\n  config:\n    url: {}\n\
             errorHandling:\n  maxRetries: 2\n  initialInterval: 5ms\n  maxInterval: 50ms\n\
             \x20 deadLetterTopic: {dlq_topic}\n",
            kafka_section(),
            sink.url("/sink"),
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/in", fiso.http_addr(LISTEN).await);

    let sent = json!({"order": 7});
    let answer = send_with_correlation(&url, &sent, "corr-dlq-1").await;
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    let body: Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(body["status"], "dead_lettered", "{body}");
    assert_eq!(body["deadLetterTopic"], dlq_topic.as_str(), "{body}");
    assert_eq!(body["error"]["attempts"], 3, "{body}");
    assert_eq!(sink.count(), 3);

    let records = consume(&dlq_topic, 1).await;
    let r = &records[0];
    assert_eq!(r.key, None);
    assert_eq!(serde_json::from_slice::<Value>(&r.value).unwrap(), sent);
    let mut h = r.headers.clone();
    let failed_at = h.remove("fiso-failed-at").expect("fiso-failed-at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&failed_at).is_ok(),
        "{failed_at}"
    );
    let message = h.remove("fiso-error-message").expect("fiso-error-message");
    assert!(message.contains("503"), "{message}");
    let response_body = h.remove("fiso-response-body").expect("fiso-response-body");
    assert_eq!(response_body, "x".repeat(1024));
    let expected: BTreeMap<String, String> = [
        ("fiso-error-code", "SINK_DELIVERY_FAILED"),
        ("fiso-retry-count", "3"),
        ("fiso-flow-name", "todlq"),
        ("fiso-correlation-id", "corr-dlq-1"),
        ("fiso-http-status", "503"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(h, expected);
    let m = fiso.metrics().await;
    assert_eq!(m.value("fiso_flow_dlq_total", &[("flow", "todlq")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_mode_with_leader_acks_and_no_key() {
    let topic = unique("structured");
    let dir = FlowDir::new();
    dir.write(
        "structured.yaml",
        &format!(
            "name: structured\n\
             {}\n\
             source:\n  type: http\n  config:\n    listenAddr: \"{LISTEN}\"\n    path: /in\n\
             sink:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n\
             \x20   mode: structured\n    requiredAcks: \"1\"\n",
            kafka_section()
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/in", fiso.http_addr(LISTEN).await);

    let answer = post_json(&client(), &url, &json!({"n": 1})).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());

    let records = consume(&topic, 1).await;
    let r = &records[0];
    assert_eq!(r.key, None, "no key configured: a null key");
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/cloudevents+json")
    );
    assert!(!r.headers.contains_key("ce_id"), "{:?}", r.headers);
    let event: Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(event["specversion"], "1.0", "{event}");
    assert_eq!(event["data"], json!({"n": 1}), "{event}");
    assert!(
        event["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{event}"
    );
}

async fn send_with_correlation(url: &str, body: &Value, correlation: &str) -> (StatusCode, String) {
    let resp = client()
        .post(url)
        .header("fiso-correlation-id", correlation)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dlq_write_answers_with_the_original_failure() {
    let sink = SinkServer::start(Script::always(Reply::status(503))).await;
    let dir = FlowDir::new();
    dir.write(
        "dlqdown.yaml",
        &format!(
            "name: dlqdown\n\
             {}\n\
             source:\n  type: http\n  config:\n    listenAddr: \"{LISTEN}\"\n    path: /in\n\
             sink:\n  type: http\n  config:\n    url: {}\n\
             errorHandling:\n  maxRetries: 0\n  initialInterval: 5ms\n  maxInterval: 50ms\n\
             \x20 deadLetterTopic: \"not a valid topic!\"\n",
            kafka_section(),
            sink.url("/sink"),
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/in", fiso.http_addr(LISTEN).await);

    let answer = post_json(&client(), &url, &json!({"order": 8})).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(answer.json()["error"]["code"], "SINK_DELIVERY_FAILED");
    let m = fiso.metrics().await;
    assert_eq!(m.value("fiso_flow_dlq_total", &[("flow", "dlqdown")]), 0.0);
}
