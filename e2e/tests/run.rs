//! `fiso run`, the injected sidecar's entry point: the flows of FISO_CONFIG_DIR plus the link
//! config of FISO_LINK_CONFIG; either may be absent (a pod may select only one kind).

use fiso_e2e::{client, post_json, send, FisoProcess, FlowDir, HttpFlow, SinkServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn runs_the_flows_with_an_empty_link_config() {
    let sink = SinkServer::ok().await;
    let flows = FlowDir::new();
    flows.write(
        "a.yaml",
        &HttpFlow::new("a", "127.0.0.1:0", "/a", &sink.url("/in")).yaml(),
    );
    let link = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(link.path(), "targets: []\n").unwrap();
    let mut fiso = FisoProcess::start_run(&flows.path(), link.path()).await;
    let addr = fiso.http_addr("127.0.0.1:0").await;
    let answer = post_json(&client(), &format!("http://{addr}/a"), &json!({"x": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sink.wait_for_requests(1).await[0].json()["data"]["x"], 1);
    fiso.send_signal(libc::SIGTERM);
    assert!(fiso.wait_exit().await.success());
}

#[tokio::test]
async fn runs_without_a_flow_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut fiso = FisoProcess::start_run(
        &dir.path().join("flows"),
        &dir.path().join("link/config.yaml"),
    )
    .await;
    fiso.wait_for_readyz(StatusCode::OK).await;
    // Nothing at all is configured: it says so, and how to give it something.
    let nothing = fiso
        .wait_for_log(|l| l.message().is_some_and(|m| m.starts_with("nothing to run")))
        .await;
    assert_eq!(nothing.level(), Some("WARN"));
    assert!(nothing.message().unwrap().contains("--config-dir"));
    fiso.send_signal(libc::SIGTERM);
    assert!(fiso.wait_exit().await.success());
}

#[tokio::test]
async fn serves_link_targets_next_to_the_flows() {
    let upstream = SinkServer::ok().await;
    let sink = SinkServer::ok().await;
    let flows = FlowDir::new();
    flows.write(
        "a.yaml",
        &HttpFlow::new("a", "127.0.0.1:0", "/a", &sink.url("/in")).yaml(),
    );
    let link = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        link.path(),
        format!(
            "listenAddr: 127.0.0.1:0\ntargets:\n  - name: crm\n    protocol: http\n    host: localhost\n    port: {}\n",
            upstream.addr().port()
        ),
    )
    .unwrap();
    let mut fiso = FisoProcess::start_run(&flows.path(), link.path()).await;
    let proxy = fiso.link_addr().await;
    let answer = send(client().get(format!("http://{proxy}/link/crm/v1/contacts"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(upstream.wait_for_requests(1).await[0].path, "/v1/contacts");
    let addr = fiso.http_addr("127.0.0.1:0").await;
    let answer = post_json(&client(), &format!("http://{addr}/a"), &json!({"x": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    // One metrics endpoint for both.
    let metrics = fiso.metrics().await;
    assert_eq!(
        metrics.get(
            "fiso_link_requests_total",
            &[("target", "crm"), ("status", "200")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metrics.get(
            "fiso_flow_events_total",
            &[("flow", "a"), ("status", "success")]
        ),
        Some(1.0),
        "{metrics}"
    );
    fiso.send_signal(libc::SIGTERM);
    assert!(fiso.wait_exit().await.success());
}

/// In a pod the ConfigMap's files arrive after the sidecar starts (kubelet fills an `optional`
/// volume once the operator has rendered it, with its atomic `..data` swap): the link proxy is
/// not ready meanwhile, and starts when its file appears.
#[tokio::test]
async fn starts_the_link_proxy_when_its_config_arrives() {
    let upstream = SinkServer::ok().await;
    let volume = tempfile::tempdir().unwrap();
    let flows = FlowDir::new();
    let mut fiso = FisoProcess::start_run(&flows.path(), &volume.path().join("config.yaml")).await;
    let report = fiso.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        report["components"]["link"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for")),
        "{report}"
    );

    // What kubelet's atomic writer does: a timestamped directory, `..data` renamed onto it,
    // the visible name a symlink through `..data`.
    let stamped = volume.path().join("..2026_12_03_07_00_00.1");
    std::fs::create_dir(&stamped).unwrap();
    std::fs::write(
        stamped.join("config.yaml"),
        format!(
            "listenAddr: 127.0.0.1:0\ntargets:\n  - name: crm\n    protocol: http\n    host: localhost\n    port: {}\n",
            upstream.addr().port()
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        stamped.file_name().unwrap(),
        volume.path().join("..data_tmp"),
    )
    .unwrap();
    std::fs::rename(
        volume.path().join("..data_tmp"),
        volume.path().join("..data"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", volume.path().join("config.yaml")).unwrap();

    fiso.wait_for_readyz(StatusCode::OK).await;
    let proxy = fiso.link_addr().await;
    let answer = send(client().get(format!("http://{proxy}/link/crm/v1/contacts"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    fiso.send_signal(libc::SIGTERM);
    assert!(fiso.wait_exit().await.success());
}
