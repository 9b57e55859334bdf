//! `fiso flow` keeps events intact and bounded: attributes that would break a `ce-*` header are
//! the caller's error, numbers reach the sink as written, and a sink's answer is read only up
//! to `maxResponseBodySize`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use fiso_e2e::link::peak_rss;
use fiso_e2e::reliability::{record, Scale};
use fiso_e2e::{client, send, FisoProcess, FlowDir, HttpFlow, SinkServer};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;

const SHARED: &str = "127.0.0.1:0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_that_break_headers_are_the_callers_error() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "bin.yaml",
        &HttpFlow::new("bin", SHARED, "/bin", &sink.url("/in"))
            .sink_config("mode: binary")
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/bin", fiso.http_addr(SHARED).await);
    let structured = |subject: &str| {
        json!({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t",
               "subject": subject, "data": {"a": 1}})
        .to_string()
    };

    // A CR/LF in a structured event's attribute would split the `ce-subject` header.
    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(structured("a\r\nx-injected: 1")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "INPUT_INVALID");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`subject`") && m.contains("U+000D")),
        "{}",
        answer.text()
    );
    // Percent-encoded in a binary-mode request, it is the same refusal.
    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", "e-2")
            .header("ce-source", "/s")
            .header("ce-type", "t")
            .header("ce-subject", "a%0D%0Ax-injected:%201")
            .body("{}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "INPUT_INVALID");

    // Any other text is delivered, percent-encoded as the CloudEvents HTTP binding says.
    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(structured("café \"100%\"")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let got = sink.wait_for_requests(1).await;
    assert_eq!(got.len(), 1, "the refused events never reached the sink");
    assert_eq!(
        got[0].header("ce-subject"),
        Some("caf%C3%A9%20%22100%25%22")
    );
    assert!(got[0].headers.get("x-injected").is_none());

    // Refusals are the input's, not the sink's: no delivery error, two invalid events.
    let m = fiso.metrics().await;
    let flow = ("flow", "bin");
    assert_eq!(
        m.get("fiso_flow_sink_delivery_errors_total", &[flow])
            .unwrap_or(0.0),
        0.0,
        "{m}"
    );
    assert_eq!(
        m.get("fiso_flow_events_total", &[flow, ("status", "invalid")]),
        Some(2.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_reach_the_sink_as_written() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "through.yaml",
        &HttpFlow::new("through", SHARED, "/through", &sink.url("/through"))
            .sink_config("mode: binary")
            .yaml(),
    );
    dir.write(
        "fields.yaml",
        &HttpFlow::new("fields", SHARED, "/fields", &sink.url("/fields"))
            .with(
                r#"transform:
  fields:
    n: "data.n"
    d: "data.d"
    whole: "data"
    doubled: "data.small * 2.0"
    bigger: "data.n > 1.0""#,
            )
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;
    let body = r#"{"n":123456789012345678901234567890123456789,"d":0.1000000000000000055511151231257827,"huge":1e400,"neg":-98765432109876543210,"small":1.5}"#;
    for path in ["/through", "/fields"] {
        let answer = send(
            client()
                .post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
    }
    let got = sink.wait_for_requests(2).await;
    let got = |path: &str| {
        got.iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("nothing reached {path}"))
    };
    // Binary mode: the body is the data itself.
    let text = |path: &str| String::from_utf8_lossy(&got(path).body).into_owned();
    // Passed through whole: digit for digit (serde_json writes an exponent as `e+`).
    let expected = body.replace("1e400", "1e+400");
    assert_eq!(text("/through"), expected);
    // Mapped fields keep the text; CEL computes in double precision.
    let data = serde_json::to_string(&got("/fields").json()["data"]).expect("prints");
    assert_eq!(
        data,
        format!(
            r#"{{"n":123456789012345678901234567890123456789,"d":0.1000000000000000055511151231257827,"whole":{expected},"doubled":3,"bigger":true}}"#
        )
    );
}

/// An upstream whose answers are `size` bytes long, generated as they are sent (never stored),
/// with the status of the path: `/200`, `/400`. Counts the bytes it got to send.
#[derive(Clone)]
struct Streaming {
    size: u64,
    sent: Arc<AtomicU64>,
}

async fn stream_answer(State(s): State<Streaming>, Path(status): Path<u16>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let body = futures::stream::unfold(0u64, move |done| {
        let (chunk, sent) = (chunk.clone(), s.sent.clone());
        async move {
            let n = (s.size - done).min(CHUNK as u64);
            (n > 0).then(|| {
                sent.fetch_add(n, Ordering::Relaxed);
                let part = chunk.slice(..usize::try_from(n).expect("a chunk"));
                (Ok::<_, std::io::Error>(part), done + n)
            })
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = axum::http::StatusCode::from_u16(status).expect("status");
    resp
}

async fn start_streaming(size: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new()
        .route("/{status}", axum::routing::post(stream_answer))
        .with_state(Streaming {
            size,
            sent: sent.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sink_answer_is_refused_without_being_buffered() {
    const HUGE: u64 = 1024 * 1024 * 1024;
    let (upstream, sent) = start_streaming(HUGE).await;
    let dir = FlowDir::new();
    for (name, status) in [("ok", 200), ("bad", 400)] {
        dir.write(
            &format!("{name}.yaml"),
            &HttpFlow::new(
                name,
                SHARED,
                &format!("/{name}"),
                &format!("http://{upstream}/{status}"),
            )
            .yaml(),
        );
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;

    // Three at once, as in the report that took the process to 1 GB.
    let answers = futures::future::join_all(["/ok", "/ok", "/bad"].map(|path| {
        send(
            client()
                .post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body("{}"),
        )
    }))
    .await;
    for (answer, status) in answers.iter().zip([200, 200, 400]) {
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "SINK_RESPONSE_TOO_LARGE", "{error}");
        assert_eq!(error["sinkStatus"], status, "{error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("maxResponseBodySize of 1048576 bytes")),
            "{error}"
        );
    }
    let peak = peak_rss(fiso.pid());
    eprintln!("peak resident memory: {} MiB", peak / (1024 * 1024));
    assert!(
        peak < HUGE / 8,
        "fiso flow peaked at {} MiB of resident memory for three 1 GiB answers",
        peak / (1024 * 1024)
    );
    assert!(
        sent.load(Ordering::Relaxed) < HUGE,
        "the answers were read to the end"
    );
    record(
        "sink_answer_cap",
        Scale::from_env(),
        json!({
            "answers": "3 × 1 GiB (200, 200, 400)",
            "status": 502,
            "code": "SINK_RESPONSE_TOO_LARGE",
            "peak_rss_mib": peak / (1024 * 1024),
            "upstream_sent_mib": sent.load(Ordering::Relaxed) / (1024 * 1024),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_response_body_size_is_configurable() {
    let (upstream, _) = start_streaming(20 * 1024).await;
    let dir = FlowDir::new();
    for (name, cap) in [("small", "16KiB"), ("large", "32KiB")] {
        dir.write(
            &format!("{name}.yaml"),
            &HttpFlow::new(
                name,
                SHARED,
                &format!("/{name}"),
                &format!("http://{upstream}/201"),
            )
            .sink_config(&format!("maxResponseBodySize: {cap}"))
            .yaml(),
        );
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;
    let post = |path: &str| {
        send(
            client()
                .post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body("{}"),
        )
    };
    let answer = post("/small").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "SINK_RESPONSE_TOO_LARGE");
    let answer = post("/large").await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body.len(), 20 * 1024);
}
