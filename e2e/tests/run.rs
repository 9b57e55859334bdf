//! `fiso run`, the injected sidecar's entry point: the flows of FISO_CONFIG_DIR plus the link
//! config of FISO_LINK_CONFIG; either may be absent (a pod may select only one kind).

use std::process::Command;

use fiso_e2e::{client, fiso_bin, post_json, FisoProcess, FlowDir, HttpFlow, SinkServer};
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
    fiso.send_signal(libc::SIGTERM);
    assert!(fiso.wait_exit().await.success());
}

#[test]
fn link_targets_fail_loudly_while_the_proxy_is_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("config.yaml");
    std::fs::write(
        &link,
        "targets:\n  - name: crm\n    host: api.example.com\n",
    )
    .unwrap();
    let out = Command::new(fiso_bin())
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--config-dir"])
        .arg(dir.path().join("flows"))
        .arg("--link-config")
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("link proxy is not part of this build"),
        "{err}"
    );
}
