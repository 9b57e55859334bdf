//! The Temporal sink end to end, on the dev server from `cargo xtask infra up temporal`
//! (`FISO_E2E_TEMPORAL_ADDR`, CLI at `FISO_E2E_TEMPORAL_CLI`): HTTP → Temporal start with a
//! templated workflow id, typed params, a redelivered event, signal-with-start, Kafka → Temporal
//! with the default ids, and an unreachable server. No worker runs: started workflows stay
//! running, and what Temporal recorded is read back with `temporal workflow describe / show`.

use std::time::Duration;

use fiso_e2e::kafka::{self, brokers, unique};
use fiso_e2e::temporal::{
    describe, events, history, payloads, signaled, single_json, started, temporal_addr,
    temporal_json,
};
use fiso_e2e::{client, eventually, infra, post_json, FisoProcess, FlowDir};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A flow file: HTTP source on `127.0.0.1:0` `/events`, Temporal sink with `sink_lines`.
fn http_flow(name: &str, host_port: &str, sink_lines: &str, extra: &str) -> String {
    format!(
        "name: {name}\n\
         source:\n  type: http\n  config:\n    listenAddr: \"127.0.0.1:0\"\n    path: /events\n\
         sink:\n  type: temporal\n  config:\n    hostPort: \"{host_port}\"\n{sink_lines}{extra}"
    )
}

/// A structured CloudEvent whose every attribute is known, so the payload can be compared
/// exactly.
fn cloud_event(id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "shop",
        "type": "order.created",
        "time": "2026-01-02T03:04:05Z",
        "datacontenttype": "application/json",
        "data": data,
    })
}

async fn start_http(dir: &FlowDir) -> (FisoProcess, String) {
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/events", fiso.http_addr("127.0.0.1:0").await);
    (fiso, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_event_starts_a_workflow_with_the_cloudevent_as_input() {
    let queue = unique("tq-start");
    let order = unique("A");
    let dir = FlowDir::new();
    dir.write(
        "start.yaml",
        &http_flow(
            "t-start",
            &temporal_addr(),
            &format!(
                "    taskQueue: {queue}\n    workflowType: ProcessOrder\n\
                 \x20   workflowIdExpr: \"order-{{{{.data.customerId}}}}-{{{{.data.orderId}}}}\"\n"
            ),
            "",
        ),
    );
    let (fiso, url) = start_http(&dir).await;
    let event = cloud_event(
        &unique("evt"),
        json!({"orderId": order, "customerId": 42, "amount": 12.5, "items": [{"sku": "x", "qty": 2}]}),
    );
    let answer = post_json(&client(), &url, &event).await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "{}\n{}",
        answer.text(),
        fiso.logs().tail(40)
    );
    let body = answer.json();
    let workflow_id = format!("order-42-{order}");
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(body["workflowId"], workflow_id.as_str(), "{body}");
    let run_id = body["runId"].as_str().expect("a run id").to_owned();
    assert!(!run_id.is_empty(), "{body}");

    let d = describe(&workflow_id).await.expect("the workflow exists");
    let info = &d["workflowExecutionInfo"];
    assert_eq!(info["type"]["name"], "ProcessOrder", "{d}");
    assert_eq!(info["taskQueue"], queue.as_str(), "{d}");
    assert_eq!(info["execution"]["runId"], run_id.as_str(), "{d}");
    assert_eq!(info["status"], "WORKFLOW_EXECUTION_STATUS_RUNNING", "{d}");

    let h = history(&workflow_id).await;
    let s = started(&h);
    assert_eq!(s["workflowType"]["name"], "ProcessOrder");
    assert_eq!(s["taskQueue"]["name"], queue.as_str());
    // The single argument is the CloudEvent as sent, in structured JSON.
    assert_eq!(single_json(&s["input"]), event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_become_typed_positional_json_arguments() {
    let queue = unique("tq-params");
    let dir = FlowDir::new();
    dir.write(
        "params.yaml",
        &http_flow(
            "t-params",
            &temporal_addr(),
            &format!(
                "    taskQueue: {queue}\n    workflowType: Typed\n    params:\n\
                 \x20     - expr: data.name\n\
                 \x20     - expr: data.count\n\
                 \x20     - expr: data.amount\n\
                 \x20     - expr: data.ok\n\
                 \x20     - expr: data.nothing\n\
                 \x20     - expr: \"[data.count, data.name]\"\n\
                 \x20     - expr: data.order\n"
            ),
            "",
        ),
    );
    let (fiso, url) = start_http(&dir).await;
    let id = unique("evt");
    let event = cloud_event(
        &id,
        json!({"name": "n-1", "count": 3, "amount": 99.5, "ok": true, "nothing": null,
               "order": {"id": "o-1", "lines": [1, 2]}}),
    );
    let answer = post_json(&client(), &url, &event).await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "{}\n{}",
        answer.text(),
        fiso.logs().tail(40)
    );
    // No workflowIdExpr: `<workflowType>-<event id>`.
    let workflow_id = format!("Typed-{id}");
    assert_eq!(answer.json()["workflowId"], workflow_id.as_str());
    let h = history(&workflow_id).await;
    let expected: Vec<(String, String)> = [
        r#""n-1""#,
        "3",
        "99.5",
        "true",
        "null",
        r#"[3,"n-1"]"#,
        r#"{"id":"o-1","lines":[1,2]}"#,
    ]
    .iter()
    .map(|d| ("json/plain".to_owned(), (*d).to_owned()))
    .collect();
    assert_eq!(payloads(&started(&h)["input"]), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_accepted_and_starts_no_second_execution() {
    let queue = unique("tq-dup");
    let dir = FlowDir::new();
    dir.write(
        "dup.yaml",
        &http_flow(
            "t-dup",
            &temporal_addr(),
            &format!("    taskQueue: {queue}\n    workflowType: Once\n"),
            "",
        ),
    );
    let (fiso, url) = start_http(&dir).await;
    let id = unique("evt");
    let event = cloud_event(&id, json!({"n": 1}));
    let first = post_json(&client(), &url, &event).await;
    let second = post_json(&client(), &url, &event).await;
    for a in [&first, &second] {
        assert_eq!(
            a.status,
            StatusCode::ACCEPTED,
            "{}\n{}",
            a.text(),
            fiso.logs().tail(40)
        );
    }
    let workflow_id = format!("Once-{id}");
    assert_eq!(first.json()["workflowId"], workflow_id.as_str());
    assert_eq!(second.json()["workflowId"], workflow_id.as_str());
    // The second answer names the execution the first one started.
    assert_eq!(first.json()["runId"], second.json()["runId"]);
    let query = format!("WorkflowId = '{workflow_id}'");
    let listed = eventually(Duration::from_secs(10), || async {
        temporal_json(&["workflow", "list", "--query", &query])
            .await
            .and_then(|v| v.as_array().cloned())
            .filter(|v| !v.is_empty())
    })
    .await
    .expect("the workflow is listed");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(
        started(&history(&workflow_id).await)["workflowId"],
        workflow_id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_mode_signals_with_start_then_signals_the_running_workflow() {
    let queue = unique("tq-signal");
    let cart = unique("cart");
    let dir = FlowDir::new();
    dir.write(
        "signal.yaml",
        &http_flow(
            "t-signal",
            &temporal_addr(),
            &format!(
                "    taskQueue: {queue}\n    workflowType: Cart\n    mode: signal\n\
                 \x20   signalName: item-added\n    workflowIdExpr: \"{{{{.data.cartId}}}}\"\n"
            ),
            "",
        ),
    );
    let (fiso, url) = start_http(&dir).await;
    let first = cloud_event(&unique("evt"), json!({"cartId": cart, "sku": "a"}));
    let second = cloud_event(&unique("evt"), json!({"cartId": cart, "sku": "b"}));
    let mut run_ids = Vec::new();
    for event in [&first, &second] {
        let a = post_json(&client(), &url, event).await;
        assert_eq!(
            a.status,
            StatusCode::ACCEPTED,
            "{}\n{}",
            a.text(),
            fiso.logs().tail(40)
        );
        assert_eq!(a.json()["workflowId"], cart.as_str());
        run_ids.push(a.json()["runId"].clone());
    }
    assert_eq!(
        run_ids[0], run_ids[1],
        "the second event signals the same run"
    );
    let h = history(&cart).await;
    let s = started(&h);
    assert_eq!(s["workflowType"]["name"], "Cart");
    assert_eq!(s["taskQueue"]["name"], queue.as_str());
    let signals = signaled(&h);
    assert_eq!(signals.len(), 2, "{h:#?}");
    for (signal, event) in signals.iter().zip([&first, &second]) {
        assert_eq!(signal["signalName"], "item-added");
        assert_eq!(&single_json(&signal["input"]), event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_start_one_workflow_each_with_stable_ids() {
    let topic = unique("k2t-in");
    let group = unique("k2t-group");
    let queue = unique("tq-kafka");
    let producer = kafka::producer();
    for i in 0..3 {
        let at = kafka::send(&producer, &topic, 0, &json!({"n": i}).to_string()).await;
        assert_eq!(at, (0, i64::from(i)));
    }
    let dir = FlowDir::new();
    dir.write(
        "k2t.yaml",
        &format!(
            "name: k2t\n\
             kafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\n\
             source:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n\
             \x20   consumerGroup: {group}\n    startOffset: earliest\n    commitInterval: 100ms\n\
             \x20   consumerProperties:\n      session.timeout.ms: \"2000\"\n      heartbeat.interval.ms: \"500\"\n\
             sink:\n  type: temporal\n  config:\n    hostPort: \"{}\"\n    taskQueue: {queue}\n\
             \x20   workflowType: Ingest\n",
            brokers(),
            temporal_addr()
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    for offset in 0..3 {
        let workflow_id = format!("Ingest-{topic}-0-{offset}");
        let found = eventually(Duration::from_secs(30), || describe(&workflow_id)).await;
        assert!(
            found.is_some(),
            "no workflow {workflow_id}\n{}",
            fiso.logs().tail(40)
        );
        let input = single_json(&started(&history(&workflow_id).await)["input"]);
        assert_eq!(
            input["id"],
            format!("{topic}-0-{offset}").as_str(),
            "{input}"
        );
        assert_eq!(input["data"], json!({"n": offset}), "{input}");
        assert_eq!(input["specversion"], "1.0", "{input}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_temporal_leaves_the_flow_running_but_unready() {
    // A port nothing listens on: bind it, read it back, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = FlowDir::new();
    dir.write(
        "down.yaml",
        &http_flow(
            "t-down",
            &format!("127.0.0.1:{port}"),
            "    taskQueue: q\n    workflowType: Never\n",
            "errorHandling:\n  maxRetries: 2\n  initialInterval: 10ms\n  maxInterval: 20ms\n",
        ),
    );
    let (fiso, url) = start_http(&dir).await;
    let body = fiso.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    let component = &body["components"]["flow/t-down/sink"];
    assert_eq!(component["ready"], false, "{body}");
    assert!(
        component["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Temporal") && r.contains(&port.to_string())),
        "{body}"
    );
    let answer = post_json(&client(), &url, &cloud_event("evt-down", json!({}))).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}\n{}",
        answer.text(),
        fiso.logs().tail(40)
    );
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "SINK_DELIVERY_FAILED", "{error}");
    assert_eq!(error["attempts"], 3, "{error}");
}

/// `fiso init --sink temporal` as a new user runs it: `fiso dev` starts a workflow per event and
/// the scaffold's Python worker (Temporal's SDK) runs it to completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_scaffold_worker_completes_the_workflows_fiso_dev_starts() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(fiso_e2e::fiso_bin())
        .args(["init", "--defaults", "--sink", "temporal"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let queue = unique("scaffold-queue");
    let flow = dir.path().join("fiso/flows/http-temporal-flow.yaml");
    let text = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("\":8081\"", "\"127.0.0.1:0\"")
        .replace("localhost:7233", &temporal_addr())
        .replace(
            "taskQueue: order-processing",
            &format!("taskQueue: {queue}"),
        );
    std::fs::write(&flow, text).unwrap();
    // The link proxy of the scaffold is not what this test is about: keep it off fixed ports.
    let link = dir.path().join("fiso/link/config.yaml");
    let text = std::fs::read_to_string(&link)
        .unwrap()
        .replace("\"127.0.0.1:3500\"", "\"127.0.0.1:0\"");
    std::fs::write(&link, text).unwrap();

    let mut dev = tokio::process::Command::new(fiso_e2e::fiso_bin())
        .args(["dev", "--metrics-addr", "127.0.0.1:0", "--no-service"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = first_line_with(dev.stdout.take().unwrap(), |l| {
        l.trim()
            .strip_prefix("curl -X POST ")
            .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
    })
    .await
    .expect("fiso dev prints the URL to try");

    let mut worker = tokio::process::Command::new(infra::var("FISO_E2E_TEMPORAL_PYTHON"))
        .arg(dir.path().join("fiso/temporal-worker/worker.py"))
        .env("TEMPORAL_ADDRESS", temporal_addr())
        .env("TASK_QUEUE", &queue)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let polling = first_line_with(worker.stdout.take().unwrap(), |l| {
        l.contains("worker polling task queue").then_some(())
    })
    .await;
    assert!(polling.is_some(), "the worker started");

    let order = unique("o");
    let answer = post_json(
        &client(),
        &url,
        &json!({"order_id": order, "amount": 99.99}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let workflow_id = answer.json()["workflowId"].as_str().unwrap().to_owned();
    assert_eq!(workflow_id, format!("order-{order}"));
    let completed = eventually(Duration::from_secs(30), || async {
        let d = describe(&workflow_id).await?;
        (d["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED").then_some(d)
    })
    .await;
    assert!(completed.is_some(), "{:?}", describe(&workflow_id).await);
    let done = events(
        &history(&workflow_id).await,
        "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED",
        "workflowExecutionCompletedEventAttributes",
    )
    .into_iter()
    .next()
    .cloned()
    .expect("a completion event");
    assert_eq!(
        single_json(&done["result"]),
        json!(format!("order {order} processed"))
    );
}

/// The first line of a child's stdout that `pick` accepts; the rest of the output keeps being
/// read in the background, so the child never writes into a closed pipe.
async fn first_line_with<T: Send + 'static>(
    out: tokio::process::ChildStdout,
    pick: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Option<T> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = tokio::sync::oneshot::channel();
    let file = std::fs::File::from(out.into_owned_fd().expect("a pipe"));
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if let Some(found) = tx.as_ref().and_then(|_| pick(&line)) {
                let _ = tx.take().expect("checked").send(found);
            }
        }
    });
    rx.await.ok()
}
