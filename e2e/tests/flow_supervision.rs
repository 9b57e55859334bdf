//! Failure isolation: a flow that cannot bind its listen address is reported (log, `/readyz`,
//! `fiso_flow_up`) and retried by its supervisor while the other flows keep serving.

use fiso_e2e::{client, post_json, FisoProcess, FlowDir, HttpFlow, SinkServer};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_whose_port_is_taken_is_reported_and_restarted_once_it_frees() {
    // The test holds flow a's port, so its first attempts to bind fail.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port to block");
    let taken = blocker.local_addr().expect("blocked address").to_string();
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "a.yaml",
        &HttpFlow::new("a", &taken, "/a", &sink.url("/a")).yaml(),
    );
    dir.write(
        "b.yaml",
        &HttpFlow::new("b", "127.0.0.1:0", "/b", &sink.url("/b")).yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;

    let failed = fiso
        .wait_for_log(|l| l.is("flow stopped with error") && l.str_field("name") == Some("a"))
        .await;
    assert_eq!(failed.level(), Some("ERROR"));
    assert!(
        failed
            .str_field("error")
            .is_some_and(|e| e.contains(&taken)),
        "{}",
        failed.raw
    );

    // The other flow serves meanwhile.
    fiso.wait_for_log(|l| l.is_flow_started("b")).await;
    let b = format!("http://{}/b", fiso.http_addr("127.0.0.1:0").await);
    let answer = post_json(&client(), &b, &json!({"n": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sink.wait_for_requests(1).await[0].path, "/b");

    let body = fiso.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(body["components"]["flow/a"]["ready"], false, "{body}");
    assert!(
        body["components"]["flow/a"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&taken)),
        "{body}"
    );
    assert_eq!(body["components"]["flow/b"]["ready"], true, "{body}");
    let metrics = fiso
        .wait_for_metric("fiso_flow_up", &[("flow", "a")], 0.0)
        .await;
    assert_eq!(
        metrics.get("fiso_flow_up", &[("flow", "b")]),
        Some(1.0),
        "{metrics}"
    );

    // Free the port: the supervisor's next attempt binds it.
    drop(blocker);
    fiso.wait_for_log(|l| l.is_flow_started("a")).await;
    let body = fiso.wait_for_readyz(StatusCode::OK).await;
    assert_eq!(body["components"]["flow/a"]["ready"], true, "{body}");

    let a = format!("http://{}/a", fiso.http_addr(&taken).await);
    assert_eq!(a, format!("http://{taken}/a"));
    let answer = post_json(&client(), &a, &json!({"n": 2})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sink.wait_for_requests(2).await[1].path, "/a");

    let metrics = fiso.metrics().await;
    assert_eq!(
        metrics.get("fiso_flow_up", &[("flow", "a")]),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.value("fiso_flow_restarts_total", &[("flow", "a")]) >= 1.0,
        "{metrics}"
    );
}
