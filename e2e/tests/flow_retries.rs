//! HTTP sink delivery failures end to end: what is retried (5xx, 429, network, timeouts), how
//! `Retry-After` is honoured, what is not retried (other 4xx), and what the caller gets when
//! retries run out.

use fiso_e2e::{
    client, post_json, Answer, FisoProcess, FlowDir, Gate, HttpFlow, Reply, Script, SinkServer,
};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;

const LISTEN: &str = "127.0.0.1:0";

/// Retries without noticeable waits (the backoff itself is unit-tested with paused time).
const FAST_RETRIES: &str =
    "errorHandling:\n  maxRetries: 3\n  initialInterval: 5ms\n  maxInterval: 50ms";

/// Starts `fiso flow` with one flow `name` on `/in` delivering to `sink`; returns the flow URL.
async fn start_flow(
    dir: &FlowDir,
    name: &str,
    sink: &SinkServer,
    extra: &[&str],
) -> (FisoProcess, String) {
    let mut flow = HttpFlow::new(name, LISTEN, "/in", &sink.url("/sink"));
    for section in extra {
        flow = flow.with(section);
    }
    dir.write(&format!("{name}.yaml"), &flow.yaml());
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/in", fiso.http_addr(LISTEN).await);
    (fiso, url)
}

async fn post(url: &str) -> Answer {
    post_json(&client(), url, &json!({"order": 1})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_and_the_caller_gets_the_final_answer() {
    let sink = SinkServer::start(Script::first(
        [Reply::status(500)],
        Reply::json(200, &json!({"attempt": "second"})),
    ))
    .await;
    let dir = FlowDir::new();
    let (_fiso, url) = start_flow(&dir, "r500", &sink, &[FAST_RETRIES]).await;

    let answer = post(&url).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"attempt": "second"}));
    let seen = sink.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "the retry sends the same event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_of_a_503_is_honoured_up_to_max_interval() {
    let sink = SinkServer::start(Script::first(
        [Reply::status(503).header("retry-after", "1")],
        Reply::status(200),
    ))
    .await;
    let dir = FlowDir::new();
    let (_fiso, url) = start_flow(
        &dir,
        "r503",
        &sink,
        &["errorHandling:\n  maxRetries: 2\n  initialInterval: 1ms\n  maxInterval: 5s"],
    )
    .await;

    let answer = post(&url).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = sink.requests();
    assert_eq!(seen.len(), 2);
    // A lower bound only (load can only make the gap longer): with a 1ms backoff the retry
    // would come at once unless `Retry-After: 1` was honoured.
    let gap = seen[1].received_at - seen[0].received_at;
    assert!(
        gap >= std::time::Duration::from_millis(950),
        "the retry came {gap:?} after a `Retry-After: 1`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_beyond_max_interval_is_capped() {
    let sink = SinkServer::start(Script::first(
        [Reply::status(503).header("retry-after", "3600")],
        Reply::status(200),
    ))
    .await;
    let dir = FlowDir::new();
    let (_fiso, url) = start_flow(
        &dir,
        "capped",
        &sink,
        &["errorHandling:\n  maxRetries: 1\n  initialInterval: 1ms\n  maxInterval: 100ms"],
    )
    .await;

    // Honouring the full hour would outlast the client's deadline.
    let answer = post(&url).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sink.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried() {
    let sink = SinkServer::start(Script::first(
        [Reply::status(429)],
        Reply::json(202, &json!({"queued": true})),
    ))
    .await;
    let dir = FlowDir::new();
    let (_fiso, url) = start_flow(&dir, "r429", &sink, &[FAST_RETRIES]).await;

    let answer = post(&url).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    assert_eq!(answer.json(), json!({"queued": true}));
    assert_eq!(sink.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_are_not_retried_and_passed_through() {
    let bad_request = SinkServer::start(Script::always(Reply::json(
        400,
        &json!({"problem": "missing sku"}),
    )))
    .await;
    let not_found = SinkServer::start(Script::always(
        Reply::status(404)
            .header("content-type", "text/plain")
            .body("no such endpoint"),
    ))
    .await;
    let dir = FlowDir::new();
    for (name, sink) in [("r400", &bad_request), ("r404", &not_found)] {
        dir.write(
            &format!("{name}.yaml"),
            &HttpFlow::new(name, LISTEN, &format!("/{name}"), &sink.url("/sink"))
                .with(FAST_RETRIES)
                .yaml(),
        );
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(LISTEN).await;

    let answer = post(&format!("http://{addr}/r400")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.json(), json!({"problem": "missing sku"}));
    assert_eq!(bad_request.count(), 1, "a 400 is not retried");

    let answer = post(&format!("http://{addr}/r404")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.text(), "no such endpoint");
    assert_eq!(not_found.count(), 1, "a 404 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_answer_503_with_the_attempt_count() {
    let sink = SinkServer::start(Script::always(Reply::status(503))).await;
    let dir = FlowDir::new();
    let (_fiso, url) = start_flow(
        &dir,
        "down",
        &sink,
        &["errorHandling:\n  maxRetries: 2\n  initialInterval: 5ms\n  maxInterval: 50ms"],
    )
    .await;

    let answer = post(&url).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "SINK_DELIVERY_FAILED", "{body}");
    assert_eq!(body["error"]["attempts"], 3, "{body}");
    assert_eq!(body["error"]["sinkStatus"], 503, "{body}");
    assert_eq!(
        body["error"]["correlationId"].as_str(),
        answer.header("fiso-correlation-id")
    );
    assert_eq!(sink.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_on_500_answer_502() {
    let sink = SinkServer::start(Script::always(Reply::status(500))).await;
    let dir = FlowDir::new();
    let (_fiso, url) = start_flow(
        &dir,
        "broken",
        &sink,
        &["errorHandling:\n  maxRetries: 1\n  initialInterval: 5ms\n  maxInterval: 50ms"],
    )
    .await;

    let answer = post(&url).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "SINK_DELIVERY_FAILED", "{body}");
    assert_eq!(body["error"]["attempts"], 2, "{body}");
    assert_eq!(body["error"]["sinkStatus"], 500, "{body}");
    assert_eq!(sink.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sink_answers_502_and_a_slow_one_504() {
    // A port nobody listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let never = Gate::new();
    let slow = SinkServer::start(Script::always(Reply::status(200).held_until(&never))).await;
    let dir = FlowDir::new();
    dir.write(
        "gone.yaml",
        &HttpFlow::new("gone", LISTEN, "/gone", &format!("http://{closed}/sink"))
            .with("errorHandling:\n  maxRetries: 1\n  initialInterval: 5ms\n  maxInterval: 50ms")
            .yaml(),
    );
    dir.write(
        "slow.yaml",
        &HttpFlow::new("slow", LISTEN, "/slow", &slow.url("/sink"))
            .sink_config("timeout: 300ms")
            .with("errorHandling:\n  maxRetries: 0")
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(LISTEN).await;

    let answer = post(&format!("http://{addr}/gone")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], "SINK_DELIVERY_FAILED", "{body}");
    assert_eq!(body["error"]["attempts"], 2, "{body}");
    assert!(body["error"].get("sinkStatus").is_none(), "{body}");

    let answer = post(&format!("http://{addr}/slow")).await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.text()
    );
    let body = answer.json();
    assert_eq!(body["error"]["code"], "SINK_DELIVERY_FAILED", "{body}");
    assert_eq!(body["error"]["attempts"], 1, "{body}");
    assert_eq!(slow.count(), 1);
}
