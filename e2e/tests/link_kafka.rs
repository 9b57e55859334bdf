//! Fiso-Link Kafka targets end to end on the real broker from `cargo xtask infra up`
//! (`FISO_E2E_KAFKA_BROKERS`): every key strategy, request and static headers, the publish
//! answer, and what the app gets for bad requests — each record read back from the broker.

use fiso_e2e::kafka::{brokers, consume, unique};
use fiso_e2e::{client, send, FisoProcess};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A Kafka target publishing to `topic` with the `key:` YAML block `key` (may be empty).
fn target(name: &str, topic: &str, key: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: {topic}\n\
         \x20     headers:\n        environment: production\n{key}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_strategy_publishes_the_body_with_headers() {
    let strategies: [(&str, &str); 6] = [
        ("uuid", "      key:\n        type: uuid\n"),
        (
            "header",
            "      key:\n        type: header\n        field: x-order-id\n",
        ),
        (
            "payload",
            "      key:\n        type: payload\n        field: customer.id\n",
        ),
        (
            "static",
            "      key:\n        type: static\n        value: ledger-1\n",
        ),
        ("random", "      key:\n        type: random\n"),
        ("none", ""),
    ];
    let topics: Vec<String> = strategies
        .iter()
        .map(|(name, _)| unique(&format!("link-{name}")))
        .collect();
    let mut config = format!(
        "listenAddr: 127.0.0.1:0\nkafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\ntargets:\n",
        brokers()
    );
    for ((name, key), topic) in strategies.iter().zip(&topics) {
        config.push_str(&target(name, topic, key));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let fiso = FisoProcess::start_link(&path).await;
    let proxy = fiso.link_addr().await;
    let body = json!({"order_id": "o-1", "customer": {"id": "c-9"}, "amount": 99.99});

    for ((name, _), topic) in strategies.iter().zip(&topics) {
        let answer = send(
            client()
                .post(format!("http://{proxy}/link/{name}"))
                .header("content-type", "application/json")
                .header("x-order-id", "o-1")
                .header("x-request-id", "req-123")
                .header("environment", "dev")
                .header("authorization", "Bearer app-token")
                .body(body.to_string()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text());
        let published = answer.json();
        assert_eq!(published["status"], "published", "{published}");
        assert_eq!(published["topic"], topic.as_str());
        let records = consume(topic, 1).await;
        let record = &records[0];
        assert_eq!(
            (
                published["partition"].as_i64(),
                published["offset"].as_i64()
            ),
            (Some(i64::from(record.partition)), Some(record.offset)),
            "where the answer says the record is"
        );
        let value: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(value, body, "{name}: the body as it came");
        let key = record
            .key
            .as_deref()
            .map(|k| String::from_utf8(k.to_vec()).unwrap());
        match *name {
            "uuid" => assert!(uuid_like(key.as_deref().unwrap()), "{key:?}"),
            "header" => assert_eq!(key.as_deref(), Some("o-1")),
            "payload" => assert_eq!(key.as_deref(), Some("c-9")),
            "static" => assert_eq!(key.as_deref(), Some("ledger-1")),
            "random" => assert_eq!(key.as_deref().map(str::len), Some(32), "{key:?}"),
            _ => assert_eq!(key, None, "no strategy: null key"),
        }
        let h = &record.headers;
        assert_eq!(
            h.get("x-request-id").map(String::as_str),
            Some("req-123"),
            "{h:?}"
        );
        assert_eq!(
            h.get("environment").map(String::as_str),
            Some("production"),
            "static wins"
        );
        assert_eq!(
            h.get("authorization"),
            None,
            "the app's credentials stay behind"
        );
    }
    let m = fiso.metrics().await;
    assert_eq!(
        m.get(
            "fiso_link_requests_total",
            &[
                ("target", "payload"),
                ("method", "POST"),
                ("status", "200"),
                ("mode", "kafka")
            ]
        ),
        Some(1.0),
        "{m}"
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_an_unreachable_broker_get_clear_answers() {
    let topic = unique("link-bad");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "listenAddr: 127.0.0.1:0\nkafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\n    down:\n      brokers: [\"127.0.0.1:1\"]\ntargets:\n{}\
             \x20 - name: nowhere\n    protocol: kafka\n    timeout: 2s\n    retry:\n      maxAttempts: 1\n    kafka:\n      cluster: down\n      topic: {topic}\n",
            brokers(),
            target("by-payload", &topic, "      key:\n        type: payload\n        field: customer.id\n"),
        ),
    )
    .unwrap();
    let fiso = FisoProcess::start_link(&path).await;
    let proxy = fiso.link_addr().await;
    let url = |t: &str| format!("http://{proxy}/link/{t}");

    let answer = send(client().get(url("by-payload"))).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("POST"));
    let answer = send(client().post(url("by-payload")).body("not json")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["code"], "INVALID_REQUEST");
    let answer = send(client().post(url("by-payload")).body(r#"{"customer":{}}"#)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("customer.id"), "{}", answer.text());
    let answer = send(client().post(url("missing")).body("{}")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = send(client().post(url("nowhere")).body("{}")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "KAFKA_PUBLISH_FAILED");
}
