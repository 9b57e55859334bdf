//! WASM interceptors in real flows (`fiso flow`, HTTP source → HTTP sink, and a Kafka source on
//! the test broker): a module that rewrites the event, one that rejects it, one that loops, one
//! that allocates without bound, one that prints garbage — with their statuses, metrics, the
//! DLQ for Kafka, `failOpen`, a rewritten module picked up by hot reload, and the process
//! surviving all of it. Modules are compiled from the WAT sources of the engine's tests.

use std::time::Duration;

use fiso_e2e::kafka::{brokers, consume, unique};
use fiso_e2e::wasm::engine_module;
use fiso_e2e::{client, eventually, fiso_bin, post_json, FisoProcess, FlowDir, SinkServer};
use pretty_assertions::assert_eq;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

/// An HTTP → HTTP flow on `/<name>` with one interceptor (`extra` = more config lines).
fn flow(name: &str, sink_url: &str, module_file: &str, extra: &str) -> String {
    format!(
        "name: {name}\n\
         source:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:0\n    path: /{name}\n\
         interceptors:\n  - type: wasm\n    config:\n      module: {module_file}\n{extra}\
         sink:\n  type: http\n  config:\n    url: {sink_url}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptors_rewrite_reject_and_fail_without_taking_the_flow_down() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    for name in ["uppercase", "reject", "loop", "grow", "garbage", "echo"] {
        std::fs::write(dir.path().join(format!("{name}.wasm")), engine_module(name)).unwrap();
    }
    let url = sink.url("/in");
    dir.write("upper.yaml", &flow("upper", &url, "uppercase.wasm", ""));
    dir.write(
        "rejecting.yaml",
        &flow("rejecting", &url, "reject.wasm", ""),
    );
    dir.write(
        "looping.yaml",
        &flow("looping", &url, "loop.wasm", "      timeout: 200ms\n"),
    );
    dir.write(
        "greedy.yaml",
        &flow("greedy", &url, "grow.wasm", "      memoryLimit: 8MiB\n"),
    );
    dir.write("noisy.yaml", &flow("noisy", &url, "garbage.wasm", ""));
    dir.write(
        "lenient.yaml",
        &flow("lenient", &url, "garbage.wasm", "      failOpen: true\n"),
    );
    dir.write("mirror.yaml", &flow("mirror", &url, "echo.wasm", ""));
    let fiso = FisoProcess::start(&dir.path()).await;
    let http = fiso.http_addr("127.0.0.1:0").await;
    let post = |path: &'static str| {
        let url = format!("http://{http}/{path}");
        async move { post_json(&client(), &url, &json!({"key": "value", "n": 1})).await }
    };

    // The seed's example: {"data":{"key":"value"}} → {"data":{"key":"VALUE"}}.
    let answer = post("upper").await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let got = sink.wait_for_requests(1).await;
    assert_eq!(got[0].json()["data"], json!({"key": "VALUE"}));

    let answer = post("rejecting").await;
    assert_eq!(answer.status.as_u16(), 422, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "INTERCEPTOR_REJECTED");
    assert_eq!(answer.json()["error"]["message"], "bad");

    for (path, why) in [
        ("looping", "timed out"),
        ("greedy", "memory"),
        ("noisy", "json"),
    ] {
        let answer = post(path).await;
        assert_eq!(answer.status.as_u16(), 500, "{path}: {}", answer.text());
        assert_eq!(
            answer.json()["error"]["code"],
            "INTERCEPTOR_FAILED",
            "{path}"
        );
        let message = answer.json()["error"]["message"].to_string().to_lowercase();
        assert!(message.contains(&why.to_lowercase()), "{path}: {message}");
    }
    assert_eq!(sink.count(), 1, "nothing refused reached the sink");

    // failOpen: the event goes on unchanged.
    let answer = post("lenient").await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(
        sink.wait_for_requests(2).await[1].json()["data"],
        json!({"key": "value", "n": 1})
    );
    // The process survived the loop, the allocation and the garbage.
    let answer = post("mirror").await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(
        sink.wait_for_requests(3).await[2].json()["data"],
        json!({"key": "value", "n": 1})
    );
    let m = fiso.metrics().await;
    let get = |name: &str, labels: &[(&str, &str)]| m.get(name, labels);
    assert_eq!(
        get(
            "fiso_flow_interceptor_rejections_total",
            &[("flow", "rejecting")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        get(
            "fiso_flow_interceptor_fail_open_total",
            &[("flow", "lenient")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        get(
            "fiso_flow_transform_errors_total",
            &[("flow", "looping"), ("error_type", "INTERCEPTOR_FAILED")]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_module_is_picked_up_by_hot_reload() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    let file = dir.path().join("step.wasm");
    std::fs::write(&file, engine_module("echo")).unwrap();
    dir.write(
        "step.yaml",
        &flow("step", &sink.url("/in"), "step.wasm", ""),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let http = fiso.http_addr("127.0.0.1:0").await;
    let url = format!("http://{http}/step");
    let answer = post_json(&client(), &url, &json!({"key": "value"})).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(
        sink.wait_for_requests(1).await[0].json()["data"],
        json!({"key": "value"})
    );

    let aside = dir.path().join("step.wasm.new");
    std::fs::write(&aside, engine_module("uppercase")).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    let upper = eventually(Duration::from_secs(15), || async {
        post_json(&client(), &url, &json!({"key": "value"})).await;
        let last = sink.requests().pop()?;
        (last.json()["data"] == json!({"key": "VALUE"})).then_some(())
    })
    .await;
    assert!(upper.is_some(), "{}", fiso.logs().tail(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_a_failure_is_dead_lettered_and_a_rejection_committed() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    std::fs::write(dir.path().join("garbage.wasm"), engine_module("garbage")).unwrap();
    std::fs::write(dir.path().join("reject.wasm"), engine_module("reject")).unwrap();
    let (failing, rejecting) = (unique("wasm-fail"), unique("wasm-reject"));
    let kafka_flow = |name: &str, topic: &str, module: &str| {
        format!(
            "name: {name}\n\
             kafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\n\
             source:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n\
             \x20   startOffset: earliest\n    commitInterval: 100ms\n\
             \x20   consumerProperties:\n      session.timeout.ms: \"2000\"\n      heartbeat.interval.ms: \"500\"\n\
             interceptors:\n  - type: wasm\n    config:\n      module: {module}\n\
             sink:\n  type: http\n  config:\n    url: {}\n",
            brokers(),
            sink.url("/in")
        )
    };
    // Fresh flow names: fresh consumer groups and DLQ topic on a long-lived broker.
    let (failing_flow, rejecting_flow) = (unique("failing"), unique("rejecting"));
    dir.write(
        "failing.yaml",
        &kafka_flow(&failing_flow, &failing, "garbage.wasm"),
    );
    dir.write(
        "rejecting.yaml",
        &kafka_flow(&rejecting_flow, &rejecting, "reject.wasm"),
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for topic in [&failing, &rejecting] {
        producer
            .send(
                FutureRecord::<str, str>::to(topic).payload(r#"{"key":"value"}"#),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    fiso.wait_for_log(|l| l.is("event dead-lettered")).await;
    let dead = consume(&format!("fiso-dlq-{failing_flow}"), 1).await;
    assert_eq!(
        dead[0].headers.get("fiso-error-code").map(String::as_str),
        Some("INTERCEPTOR_FAILED")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&dead[0].value).unwrap(),
        json!({"key": "value"})
    );
    fiso.wait_for_metric(
        "fiso_flow_interceptor_rejections_total",
        &[("flow", rejecting_flow.as_str())],
        1.0,
    )
    .await;
    assert_eq!(sink.count(), 0);
}

#[test]
fn transform_test_runs_the_interceptors_and_validate_loads_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("upper.wasm"), engine_module("uppercase")).unwrap();
    let flow_file = dir.path().join("f.yaml");
    std::fs::write(
        &flow_file,
        flow("f", "http://127.0.0.1:9/in", "upper.wasm", ""),
    )
    .unwrap();
    let out = std::process::Command::new(fiso_bin())
        .args([
            "transform",
            "test",
            "--format",
            "json",
            "--input",
            r#"{"key":"value"}"#,
            "--flow",
        ])
        .arg(&flow_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["cloudevent"]["data"], json!({"key": "value"}));
    assert_eq!(printed["intercepted"]["data"], json!({"key": "VALUE"}));

    std::fs::write(
        &flow_file,
        flow(
            "f",
            "http://127.0.0.1:9/in",
            "upper.wasm",
            "      runtime: wasmer\n",
        ),
    )
    .unwrap();
    // The suite's binary has the `wasmer` feature (the `fiso-wasmer` image's build): the same
    // module validates under wasmer. A build without it refuses the flow; that error is the
    // `fiso-wasm` unit test `runtime_wasmer_needs_the_feature`, run by CI's build without it.
    let out = std::process::Command::new(fiso_bin())
        .arg("validate")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
