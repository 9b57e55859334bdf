//! The metrics port over real sockets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

use fiso_runtime::health::{self, BoundServer, ServeError};
use fiso_runtime::{watch, HealthState, MetricsRegistry, Readiness};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/json");
        serde_json::from_str(&self.body).unwrap()
    }
}

/// HTTP/1.1 GET with `Connection: close`, so the reply ends at EOF.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("no header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<_, _> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers.contains_key("transfer-encoding"),
        "expected a sized body"
    );
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn start(state: HealthState) -> (BoundServer, CancellationToken) {
    let stop = CancellationToken::new();
    let server = health::serve("127.0.0.1:0", state, stop.clone())
        .await
        .unwrap();
    assert_ne!(server.local_addr.port(), 0);
    (server, stop)
}

#[tokio::test]
async fn healthz_is_always_ok() {
    let (server, _stop) = start(HealthState::default()).await;
    let reply = get(server.local_addr, "/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok");
    assert_eq!(get(server.local_addr, "/nope").await.status, 404);
}

#[tokio::test]
async fn readyz_lists_unready_components_until_all_are_ready() {
    let readiness = Readiness::new();
    let (server, _stop) = start(HealthState::new(MetricsRegistry::new(), readiness.clone())).await;
    let addr = server.local_addr;

    let reply = get(addr, "/readyz").await;
    assert_eq!(reply.status, 503, "not started yet");
    assert_eq!(
        reply.json(),
        json!({"status": "unready", "started": false, "components": {}})
    );

    readiness.set_ready("link");
    readiness.set_not_ready("flow/order-events", "sink http://orders:8080 unreachable");
    readiness.mark_started();
    let reply = get(addr, "/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.json(),
        json!({
            "status": "unready",
            "started": true,
            "components": {
                "flow/order-events": {
                    "ready": false,
                    "reason": "sink http://orders:8080 unreachable"
                },
                "link": {"ready": true}
            }
        })
    );

    readiness.set_ready("flow/order-events");
    let reply = get(addr, "/readyz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ready");

    readiness.set_not_ready("flow/payments", "restarting (attempt 2)");
    assert_eq!(get(addr, "/readyz").await.status, 503);
    readiness.remove("flow/payments");
    assert_eq!(get(addr, "/readyz").await.status, 200);
}

#[tokio::test]
async fn metrics_serves_registered_families_as_openmetrics() {
    let metrics = MetricsRegistry::new();
    let events: Family<Vec<(String, String)>, Counter> = Family::default();
    metrics
        .register(
            "fiso_flow_events_total",
            "Total events processed",
            events.clone(),
        )
        .unwrap();
    events
        .get_or_create(&vec![
            ("flow".into(), "order-events".into()),
            ("status".into(), "success".into()),
        ])
        .inc_by(3);
    metrics.config_reload().success("flow");

    let (server, _stop) = start(HealthState::new(metrics, Readiness::new())).await;
    let reply = get(server.local_addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "# TYPE fiso_flow_events counter\n",
        "fiso_flow_events_total{flow=\"order-events\",status=\"success\"} 3\n",
        "fiso_config_reload_total{component=\"flow\",result=\"success\"} 1\n",
        "fiso_config_reload_total{component=\"flow\",result=\"failure\"} 0\n",
        "fiso_config_last_reload_successful{component=\"flow\"} 1\n",
    ] {
        assert!(
            reply.body.contains(line),
            "missing {line:?} in\n{}",
            reply.body
        );
    }
    assert!(reply.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn config_shows_what_is_loaded_and_follows_reloads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), "name: orders\n").unwrap();
    let state = HealthState::default();
    let (server, _stop) = start(state.clone()).await;

    assert_eq!(get(server.local_addr, "/config").await.json(), json!({}));

    let files = watch::snapshot(dir.path(), watch::is_yaml).unwrap().files;
    let loaded_at = SystemTime::now();
    state.config.set_section(
        "flow",
        watch::version_document(dir.path(), &files, loaded_at),
    );
    let doc = get(server.local_addr, "/config").await.json();
    assert_eq!(doc["flow"]["dir"], dir.path().display().to_string());
    assert_eq!(doc["flow"]["files"]["orders.yaml"]["sha256"], files[0].hash);
    assert_eq!(
        doc["flow"]["loadedAt"],
        humantime::format_rfc3339_millis(loaded_at).to_string()
    );

    std::fs::write(dir.path().join("orders.yaml"), "name: orders2\n").unwrap();
    let reloaded = watch::snapshot(dir.path(), watch::is_yaml).unwrap().files;
    state.config.set_section(
        "flow",
        watch::version_document(dir.path(), &reloaded, SystemTime::now()),
    );
    let after = get(server.local_addr, "/config").await.json();
    assert_ne!(after["flow"]["digest"], doc["flow"]["digest"]);
    assert_eq!(
        after["flow"]["files"]["orders.yaml"]["sha256"],
        reloaded[0].hash
    );
}

#[tokio::test]
async fn go_style_address_binds_all_interfaces() {
    let stop = CancellationToken::new();
    let server = health::serve(":0", HealthState::default(), stop.clone())
        .await
        .unwrap();
    assert!(server.local_addr.ip().is_unspecified());
    let local = SocketAddr::from(([127, 0, 0, 1], server.local_addr.port()));
    assert_eq!(get(local, "/healthz").await.status, 200);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let (server, stop) = start(HealthState::default()).await;
    let addr = server.local_addr;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    stop.cancel();
    server.handle.await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bad_or_taken_addresses_are_errors() {
    let stop = CancellationToken::new();
    let err = health::serve("9090", HealthState::default(), stop.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Addr(_)), "{err}");

    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = health::serve(&addr, HealthState::default(), stop)
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&addr));
}

#[test]
fn version_document_is_stable_for_equal_content() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [a.path(), b.path()] {
        std::fs::write(dir.join("x.yaml"), "same\n").unwrap();
    }
    let doc = |dir: &Path| {
        watch::version_document(
            Path::new("/etc/fiso/flows"),
            &watch::snapshot(dir, watch::is_yaml).unwrap().files,
            SystemTime::UNIX_EPOCH,
        )
    };
    assert_eq!(doc(a.path()), doc(b.path()));
}
