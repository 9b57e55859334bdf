//! Hot reload of the flow directory: added, changed and removed files take effect; an invalid
//! file keeps the last good version serving and is reported; requests keep succeeding while a
//! flow is rewritten under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fiso_e2e::{
    client, client_builder, eventually, post_json, FisoProcess, FlowDir, HttpFlow, LogLine,
    SinkServer, DEADLINE,
};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SHARED: &str = "127.0.0.1:0";

/// A flow on the shared address whose events carry `v: <literal>`.
fn versioned_flow(name: &str, sink: &SinkServer, literal: &str) -> String {
    HttpFlow::named(name, SHARED, sink)
        .with(&format!(
            "transform:\n  fields:\n    v: '\"{literal}\"'\n    n: \"data.n\""
        ))
        .yaml()
}

/// `flows reloaded: …` saying that `name` was `kind` (`started`, `replaced`, `stopped`), in
/// words: `flows reloaded: replaced `r`; started `a`, `b``.
fn reloaded(kind: &'static str, name: &str) -> impl Fn(&LogLine) -> bool {
    let quoted = format!("`{name}`");
    move |l: &LogLine| {
        l.message()
            .and_then(|m| m.strip_prefix("flows reloaded: "))
            .is_some_and(|changes| {
                changes
                    .split("; ")
                    .any(|c| c.starts_with(kind) && c.contains(&quoted))
            })
    }
}

/// POSTs `{"n": n}` and returns the `data` the sink received for it.
async fn deliver(url: &str, sink: &SinkServer, n: u64) -> Value {
    let before = sink.count();
    let answer = post_json(&client(), url, &json!({ "n": n })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    sink.wait_for_requests(before + 1).await[before].json()["data"].clone()
}

fn reload_failures(metrics: &fiso_e2e::Metrics) -> f64 {
    metrics.value(
        "fiso_config_reload_total",
        &[("component", "flow"), ("result", "failure")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_changed_invalid_fixed_and_removed_files_take_effect() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    // Keeps the shared server up when `r` goes away, so that its path answers 404.
    dir.write("base.yaml", &versioned_flow("base", &sink, "base"));
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;
    let r = format!("http://{addr}/r");

    // Added.
    let mark = fiso.log_mark();
    dir.write("r.yaml", &versioned_flow("r", &sink, "one"));
    fiso.wait_for_log_since(mark, reloaded("started", "r"))
        .await;
    assert_eq!(deliver(&r, &sink, 1).await, json!({"v": "one", "n": 1}));

    // Changed.
    let mark = fiso.log_mark();
    dir.write("r.yaml", &versioned_flow("r", &sink, "two"));
    fiso.wait_for_log_since(mark, reloaded("replaced", "r"))
        .await;
    assert_eq!(deliver(&r, &sink, 2).await, json!({"v": "two", "n": 2}));

    // Invalid: the last good version keeps serving, and the problem is reported.
    let failures_before = reload_failures(&fiso.metrics().await);
    let mark = fiso.log_mark();
    dir.write("r.yaml", "name: r\nsource: [this is not a flow\n");
    let logged = fiso
        .wait_for_log_since(mark, |l| {
            l.is("invalid flow config; keeping the last good version")
                && l.str_field("file") == Some("r.yaml")
        })
        .await;
    assert_eq!(logged.level(), Some("ERROR"));
    let metrics = eventually(DEADLINE, || async {
        Some(fiso.metrics().await).filter(|m| reload_failures(m) > failures_before)
    })
    .await
    .expect("fiso_config_reload_total{component=\"flow\",result=\"failure\"} increments");
    assert_eq!(
        metrics.get(
            "fiso_config_last_reload_successful",
            &[("component", "flow")]
        ),
        Some(0.0),
        "{metrics}"
    );
    let readyz = eventually(DEADLINE, || async {
        let (status, body) = fiso.readyz().await;
        (body["warnings"].get("config/r.yaml").is_some()).then_some((status, body))
    })
    .await
    .expect("/readyz warns about r.yaml");
    assert_eq!(
        readyz.0,
        StatusCode::OK,
        "a kept config is a warning, not unreadiness: {}",
        readyz.1
    );
    let config = fiso.config().await;
    assert!(
        config["flow"]["problems"]["r.yaml"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "{config:#}"
    );
    assert_eq!(deliver(&r, &sink, 3).await, json!({"v": "two", "n": 3}));

    // Fixed.
    let mark = fiso.log_mark();
    dir.write("r.yaml", &versioned_flow("r", &sink, "three"));
    fiso.wait_for_log_since(mark, reloaded("replaced", "r"))
        .await;
    fiso.wait_for_log_since(mark, |l| {
        l.is("flow config is valid again") && l.str_field("file") == Some("r.yaml")
    })
    .await;
    assert_eq!(deliver(&r, &sink, 4).await, json!({"v": "three", "n": 4}));
    let (_, body) = fiso.readyz().await;
    assert!(body.get("warnings").is_none(), "{body}");
    let config = fiso.config().await;
    assert_eq!(config["flow"]["problems"], json!({}), "{config:#}");
    let metrics = fiso.metrics().await;
    assert_eq!(
        metrics.get(
            "fiso_config_last_reload_successful",
            &[("component", "flow")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // Removed: its path is gone, the other flow on the server still serves.
    let mark = fiso.log_mark();
    dir.remove("r.yaml");
    fiso.wait_for_log_since(mark, reloaded("stopped", "r"))
        .await;
    let answer = post_json(&client(), &r, &json!({"n": 5})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    assert_eq!(
        deliver(&format!("http://{addr}/base"), &sink, 6).await,
        json!({"v": "base", "n": 6})
    );
}

/// Clients POSTing to one URL in a loop until stopped, counting what did not succeed.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

/// Bounds each client's loop even if the test stalls.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

impl Load {
    /// `clients` tasks; half reuse connections, half open a new one per request.
    fn start(url: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|i| {
                let http = if i % 2 == 0 {
                    client()
                } else {
                    client_builder().pool_max_idle_per_host(0).build().unwrap()
                };
                let url = url.to_owned();
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    for n in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let sent = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(json!({ "n": n }).to_string())
                            .send()
                            .await;
                        let failure = match sent {
                            Ok(resp) if resp.status().is_success() => {
                                // Read the body so the connection can be reused.
                                let _ = resp.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(resp) => {
                                let status = resp.status();
                                let body = resp.text().await.unwrap_or_default();
                                format!("client {i}: {status} {body}")
                            }
                            Err(e) => format!("client {i}: {e:?}"),
                        };
                        failures.lock().unwrap().push(failure);
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            clients,
        }
    }

    /// Stops the clients; returns how many requests succeeded and the failures.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.await.expect("client task");
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_a_flow_is_rewritten() {
    const CLIENTS: usize = 4;
    const REWRITES: usize = 16;

    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write("hot.yaml", &versioned_flow("hot", &sink, "v0"));
    dir.write("other.yaml", &versioned_flow("other", &sink, "other"));
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/hot", fiso.http_addr(SHARED).await);
    let load = Load::start(&url, CLIENTS);

    // Wait until the clients are under way, then rewrite the flow again and again.
    sink.wait_for_requests(CLIENTS).await;
    for version in 1..=REWRITES {
        let mark = fiso.log_mark();
        dir.write(
            "hot.yaml",
            &versioned_flow("hot", &sink, &format!("v{version}")),
        );
        fiso.wait_for_log_since(mark, reloaded("replaced", "hot"))
            .await;
    }
    // Let the last version serve a few requests, then stop.
    let served = sink.count();
    sink.wait_for_requests(served + CLIENTS).await;
    let (ok, failures) = load.finish().await;

    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads, e.g. {:#?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > REWRITES, "only {ok} requests were made");
    // Every answered request was delivered, once; several versions served them.
    let delivered = sink.requests();
    assert_eq!(delivered.len(), ok);
    let versions: std::collections::BTreeSet<String> = delivered
        .iter()
        .filter_map(|r| r.json()["data"]["v"].as_str().map(str::to_owned))
        .collect();
    assert!(
        versions.len() > 2,
        "versions seen by the sink: {versions:?}"
    );
    // And the last rewrite is the one in effect.
    assert_eq!(
        deliver(&url, &sink, 0).await,
        json!({"v": format!("v{REWRITES}"), "n": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_moves_to_a_renamed_flow_without_a_gap() {
    const CLIENTS: usize = 2;

    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    let flow = |name: &str| {
        HttpFlow::new(name, SHARED, "/orders", &sink.url("/in"))
            .with(&format!("transform:\n  fields:\n    by: '\"{name}\"'"))
            .yaml()
    };
    dir.write("orders.yaml", &flow("orders-v1"));
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/orders", fiso.http_addr(SHARED).await);
    let load = Load::start(&url, CLIENTS);
    sink.wait_for_requests(CLIENTS).await;

    // The same file now names another flow on the same path: one reload stops the old flow
    // and starts the new one, which takes the path over.
    let mark = fiso.log_mark();
    dir.write("orders.yaml", &flow("orders-v2"));
    let reload = fiso
        .wait_for_log_since(mark, reloaded("started", "orders-v2"))
        .await;
    assert!(
        reload
            .str_field("stopped")
            .is_some_and(|s| s.contains("\"orders-v1\"")),
        "{}",
        reload.raw
    );
    let served = sink.count();
    sink.wait_for_requests(served + CLIENTS).await;
    let (ok, failures) = load.finish().await;

    assert!(
        failures.is_empty(),
        "{} of {} requests failed while the path moved, e.g. {:#?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
    let errors = fiso
        .logs()
        .matching(mark, |l| l.is("flow stopped with error"));
    assert!(errors.is_empty(), "{errors:#?}");
    let (status, body) = fiso.readyz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["components"].get("flow/orders-v1").is_none(), "{body}");
    assert_eq!(
        body["components"]["flow/orders-v2"]["ready"], true,
        "{body}"
    );
    assert_eq!(deliver(&url, &sink, 0).await, json!({"by": "orders-v2"}));
}
