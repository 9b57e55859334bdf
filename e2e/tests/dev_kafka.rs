//! The Kafka dev loop, on the real broker from `cargo xtask infra up`
//! (`FISO_E2E_KAFKA_BROKERS`): `fiso dev` on a `fiso init --source kafka` project says what its
//! consumer waits for until the group assigns it partitions (`/readyz` not ready meanwhile),
//! logs the assignment, prints a `fiso produce` line that works, shows the lag, leaves its group
//! when stopped (so the next `fiso dev` gets the partitions again, also right after a reload);
//! and a consumer whose broker cannot be reached says so once, with how to fix it.

use std::path::Path;
use std::process::Command;

use fiso_e2e::kafka::{brokers, create_topic, producer, send, unique};
use fiso_e2e::{
    eventually, fiso_bin, DevProcess, FisoProcess, FlowDir, Gate, Metrics, Reply, Script,
    SinkServer, DEADLINE,
};
use reqwest::StatusCode;
use serde_json::Value;

const FLOW: &str = "kafka-http-flow";

/// A `fiso init --source kafka` project reading `topic` as `group` into `sink_url`, without the
/// link proxy (whose fixed port parallel tests would share).
fn kafka_project(topic: &str, group: &str, sink_url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(fiso_bin())
        .args(["init", "--source", "kafka"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("fiso init runs");
    assert!(init.status.success(), "{init:?}");
    let flow = dir.path().join(format!("fiso/flows/{FLOW}.yaml"));
    let text = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("localhost:9092", &brokers())
        .replace("topic: orders", &format!("topic: {topic}"))
        .replace(
            &format!("consumerGroup: fiso-{FLOW}"),
            &format!("consumerGroup: {group}"),
        )
        .replace("http://localhost:8082/events", sink_url);
    std::fs::write(&flow, text).unwrap();
    std::fs::remove_file(dir.path().join("fiso/link/config.yaml")).unwrap();
    dir
}

/// `fiso <args>` in `dir`, which must succeed.
fn fiso_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(fiso_bin())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("FISO_KAFKA_BROKERS")
        .output()
        .expect("fiso runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fiso {args:?}: {text}");
    text
}

/// The flow's `/readyz` component.
fn flow_component(body: &Value) -> &Value {
    &body["components"][format!("flow/{FLOW}")]
}

/// The flow's lag summed over its partitions (`None`: no lag reported yet).
fn lag(m: &Metrics) -> Option<f64> {
    let samples: Vec<f64> = m
        .samples
        .iter()
        .filter(|s| {
            s.name == "fiso_flow_consumer_lag"
                && s.labels.get("flow").map(String::as_str) == Some(FLOW)
        })
        .map(|s| s.value)
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_waits_for_partitions_of_a_topic_created_later_and_delivers() {
    let topic = unique("dev-orders");
    let group = unique("dev-group");
    let sink = SinkServer::ok().await;
    let project = kafka_project(&topic, &group, &sink.url("/events"));
    let dev = DevProcess::start(project.path()).await;

    let banner = dev.banner();
    let try_line = format!("fiso produce --topic {topic} --file fiso/sample-event.json");
    assert!(banner.contains(&try_line), "{banner}");
    assert!(
        banner.contains(&format!("kafka topic {topic} on {}", brokers())),
        "{banner}"
    );

    // The topic does not exist yet: not ready, and `/readyz` and the log say what it waits for.
    let waiting = format!("waiting for partition assignment (group {group}, topic {topic})");
    let body = eventually(DEADLINE, || async {
        let (status, body) = dev.readyz().await;
        (status == StatusCode::SERVICE_UNAVAILABLE
            && flow_component(&body)["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(&waiting)))
        .then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("/readyz never said {waiting:?}\n{}", dev.logs().tail(40)));
    assert_eq!(flow_component(&body)["ready"], false, "{body}");
    dev.wait_for_log_since(0, &["waiting for partition assignment", &topic], DEADLINE)
        .await;

    // The banner's line, as a user runs it from the project's parent directory.
    let mark = dev.log_mark();
    let args: Vec<&str> = try_line.split_whitespace().skip(1).collect();
    let sent = fiso_in(project.path(), &args);
    assert!(sent.contains("sent 1 message(s)"), "{sent}");

    let assigned = dev
        .wait_for_log_since(mark, &["partitions assigned", &topic, &group], DEADLINE)
        .await;
    assert!(assigned.contains("partitions="), "{assigned}");
    let got = sink.wait_for_requests(1).await;
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(project.path().join("fiso/sample-event.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(got[0].json()["data"], sample);
    let body = dev.wait_for_readyz(StatusCode::OK, DEADLINE).await;
    assert_eq!(flow_component(&body)["ready"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_shows_the_lag_of_a_stalled_sink_and_leaves_the_group_on_ctrl_c() {
    let topic = unique("dev-lag");
    let group = unique("dev-group");
    create_topic(&topic, 1).await;
    let kafka = producer();
    for n in 0..5 {
        send(&kafka, &topic, 0, &format!("{{\"n\":{n}}}")).await;
    }
    let gate = Gate::new();
    let sink = SinkServer::start(Script::first(
        [Reply::status(200).held_until(&gate)],
        Reply::status(200),
    ))
    .await;
    let project = kafka_project(&topic, &group, &sink.url("/events"));
    let mut dev = DevProcess::start(project.path()).await;
    dev.wait_for_log_since(0, &["partitions assigned", "partitions=0"], DEADLINE)
        .await;
    sink.wait_for_requests(1).await;

    // The first record is held by the sink, none is committed: all five are still to do.
    let behind = eventually(DEADLINE, || async {
        lag(&dev.metrics().await).filter(|l| *l == 5.0)
    })
    .await;
    assert_eq!(behind, Some(5.0), "{}", dev.metrics().await);
    dev.wait_for_log_since(
        0,
        &["consumer lag: 5 record(s) not processed yet"],
        DEADLINE,
    )
    .await;

    let mark = dev.log_mark();
    gate.open();
    sink.wait_for_requests(5).await;
    let caught_up = eventually(DEADLINE, || async {
        lag(&dev.metrics().await).filter(|l| *l == 0.0)
    })
    .await;
    assert_eq!(caught_up, Some(0.0), "{}", dev.metrics().await);
    dev.wait_for_log_since(mark, &["consumer caught up"], DEADLINE)
        .await;

    let mark = dev.log_mark();
    dev.interrupt();
    let status = dev.wait_exit().await;
    assert!(status.success(), "{status}");
    let left = dev
        .logs()
        .matching(mark, |l| l.raw.contains("left the consumer group"));
    assert_eq!(left.len(), 1, "{}", dev.logs().tail(30));
}

/// Ctrl-C right after a reload that replaced the consumer: the next `fiso dev` of the same
/// group gets its partitions and delivers (before, no member left the group, and the next
/// join waited for the missing members for minutes with `/readyz` saying ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stopped_right_after_a_reload_leaves_the_group_for_the_next_run() {
    let topic = unique("dev-restart");
    let group = unique("dev-group");
    create_topic(&topic, 1).await;
    let kafka = producer();
    send(&kafka, &topic, 0, r#"{"n":1}"#).await;
    let sink = SinkServer::ok().await;
    let project = kafka_project(&topic, &group, &sink.url("/events"));
    let flow = project.path().join(format!("fiso/flows/{FLOW}.yaml"));

    let mut dev = DevProcess::start(project.path()).await;
    dev.wait_for_log_since(0, &["partitions assigned"], DEADLINE)
        .await;
    sink.wait_for_requests(1).await;

    // A source setting changed: the consumer is replaced, and stopped right after.
    let mark = dev.log_mark();
    let text = std::fs::read_to_string(&flow).unwrap().replace(
        "startOffset: earliest",
        "startOffset: earliest\n    commitInterval: 2s",
    );
    std::fs::write(&flow, text).unwrap();
    dev.wait_for_log_since(
        mark,
        &["flows reloaded", &format!("replaced=[\"{FLOW}\"]")],
        DEADLINE,
    )
    .await;
    dev.interrupt();
    let status = dev.wait_exit().await;
    assert!(status.success(), "{status}");

    let dev = DevProcess::start(project.path()).await;
    // A deadline, not an expectation: a join takes seconds.
    dev.wait_for_log_since(0, &["partitions assigned", &group], DEADLINE * 2)
        .await;
    dev.wait_for_readyz(StatusCode::OK, DEADLINE).await;
    send(&kafka, &topic, 0, r#"{"n":2}"#).await;
    let got = sink.wait_for_requests(2).await;
    assert_eq!(got[1].json()["data"]["n"], 2);
}

/// A broker that cannot be reached: one warning that says so once and how to fix it, and
/// `/readyz` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_said_once_with_the_fix() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "far.yaml",
        &format!(
            "name: far\nkafka:\n  clusters:\n    main:\n      brokers: [\"127.0.0.1:1\"]\n\
             source:\n  type: kafka\n  config:\n    cluster: main\n    topic: t\n\
             sink:\n  type: http\n  config:\n    url: {}\n",
            sink.url("/x")
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let warning = fiso
        .wait_for_log(|l| l.is("kafka broker unreachable"))
        .await;
    assert_eq!(warning.level(), Some("WARN"), "{}", warning.raw);
    let error = warning.str_field("error").unwrap_or_default();
    assert!(
        error.ends_with("is the broker at 127.0.0.1:1 running? `fiso doctor` checks"),
        "{error}"
    );
    assert!(!error.contains("BrokerTransportFailure"), "{error}");
    assert!(error.matches("transport failure").count() <= 1, "{error}");

    let body = fiso.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    let reason = body["components"]["flow/far"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with(
            "waiting for partition assignment (group fiso-far, topic t): cannot reach the broker"
        ),
        "{body}"
    );
    // Said once for the outage, however often librdkafka retried meanwhile.
    let warnings = fiso
        .logs()
        .matching(0, |l| l.is("kafka broker unreachable"))
        .len();
    assert_eq!(warnings, 1, "{}", fiso.logs().tail(30));
}
