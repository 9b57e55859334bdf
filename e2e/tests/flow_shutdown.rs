//! Graceful shutdown: on SIGTERM / SIGINT `fiso flow` stops accepting, answers what is in
//! flight, and exits 0.

use fiso_e2e::{
    client, eventually, post_json, FisoProcess, FlowDir, Gate, HttpFlow, Reply, Script, SinkServer,
    DEADLINE,
};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpStream;

const LISTEN: &str = "127.0.0.1:0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_and_exits_0() {
    let release = Gate::new();
    let sink = SinkServer::start(Script::always(
        Reply::json(200, &json!({"done": true})).held_until(&release),
    ))
    .await;
    let dir = FlowDir::new();
    dir.write(
        "slow.yaml",
        &HttpFlow::new("slow", LISTEN, "/slow", &sink.url("/in")).yaml(),
    );
    let mut fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(LISTEN).await;

    let in_flight = tokio::spawn(async move {
        post_json(&client(), &format!("http://{addr}/slow"), &json!({"n": 1})).await
    });
    sink.wait_for_requests(1).await;

    let mark = fiso.log_mark();
    fiso.send_signal(libc::SIGTERM);
    fiso.wait_for_log_since(mark, |l| {
        l.is("shutting down") && l.str_field("signal") == Some("SIGTERM")
    })
    .await;
    // The listener closes while the held request is still being answered.
    let refused = eventually(DEADLINE, || async { TcpStream::connect(addr).await.err() }).await;
    assert!(
        refused.is_some(),
        "{addr} still accepts connections after SIGTERM\n{}",
        fiso.logs().tail(20)
    );
    assert!(!in_flight.is_finished(), "the sink has not answered yet");

    release.open();
    let answer = in_flight.await.expect("the in-flight request task");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"done": true}));

    let status = fiso.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", fiso.logs().tail(20));
    assert!(!fiso
        .logs()
        .matching(mark, |l| l.is("all flows stopped"))
        .is_empty());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the server is gone"
    );
    assert_eq!(sink.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_an_idle_process_with_status_0() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "idle.yaml",
        &HttpFlow::new("idle", LISTEN, "/idle", &sink.url("/in")).yaml(),
    );
    let mut fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(LISTEN).await;
    let answer = post_json(&client(), &format!("http://{addr}/idle"), &json!({"n": 1})).await;
    assert_eq!(answer.status, StatusCode::OK);

    fiso.send_signal(libc::SIGINT);
    let status = fiso.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", fiso.logs().tail(20));
    fiso.wait_for_log(|l| l.is("shutting down") && l.str_field("signal") == Some("SIGINT"))
        .await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the server is gone"
    );
    assert!(
        TcpStream::connect(fiso.metrics_addr()).await.is_err(),
        "the metrics server is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_a_removed_flow_is_answered_before_exit() {
    let release = Gate::new();
    let sink = SinkServer::start(Script::always(
        Reply::json(200, &json!({"done": true})).held_until(&release),
    ))
    .await;
    let dir = FlowDir::new();
    dir.write(
        "leaving.yaml",
        &HttpFlow::new("leaving", LISTEN, "/leaving", &sink.url("/in")).yaml(),
    );
    let mut fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(LISTEN).await;
    let in_flight = tokio::spawn(async move {
        post_json(
            &client(),
            &format!("http://{addr}/leaving"),
            &json!({"n": 1}),
        )
        .await
    });
    sink.wait_for_requests(1).await;

    // The flow goes away with its request in flight; its server (it was the only flow on it)
    // stops accepting but keeps answering that request, even across SIGTERM.
    let mark = fiso.log_mark();
    dir.remove("leaving.yaml");
    fiso.wait_for_log_since(mark, |l| {
        l.is("http source stopped: no flows left on it")
            && l.str_field("addr") == Some(addr.to_string().as_str())
    })
    .await;
    fiso.send_signal(libc::SIGTERM);
    fiso.wait_for_log_since(mark, |l| l.is("shutting down"))
        .await;
    assert!(!in_flight.is_finished(), "the sink has not answered yet");

    release.open();
    let answer = in_flight.await.expect("the in-flight request task");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"done": true}));
    let status = fiso.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", fiso.logs().tail(20));
}
