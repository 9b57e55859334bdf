//! `fiso-testkit`: the one program of the e2e suite's test-kit image (`cargo xtask image
//! testkit`), run in pods on the test node as an upstream, a sink and an application.
//!
//! `fiso-testkit [addr]` (default `0.0.0.0:8080`) serves:
//! * `GET /_healthz` — 200, for probes;
//! * `GET /_recorded` — every other request received so far (method, path, headers, body) as
//!   a JSON array, so a test reads what reached this pod;
//! * `ANY /_call/<rest>` — the application's side of a Link: the same method and body sent to
//!   `$FISO_LINK_URL/<rest>` (default `http://127.0.0.1:3500/link`), answered with that
//!   response's status and body;
//! * anything else — recorded, answered 200 `{"ok":true}`.
//!
//! Bounded like any server the suite runs: bodies up to 1 MiB, the last 10 000 requests kept.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

const MAX_BODY: usize = 1 << 20;
const KEPT: usize = 10_000;

#[derive(Clone)]
struct Kit {
    recorded: Arc<Mutex<VecDeque<Value>>>,
    client: reqwest::Client,
    link: String,
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    let link =
        std::env::var("FISO_LINK_URL").unwrap_or_else(|_| "http://127.0.0.1:3500/link".into());
    let kit = Kit {
        recorded: Arc::default(),
        client: reqwest::Client::new(),
        link: link.trim_end_matches('/').to_owned(),
    };
    let app = Router::new()
        .route("/_healthz", get(|| async { "ok" }))
        .route("/_recorded", get(recorded))
        .fallback(any)
        .with_state(kit);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    println!("fiso-testkit listening on {addr}");
    axum::serve(listener, app).await.expect("serving");
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn recorded(State(kit): State<Kit>) -> Response {
    let recorded = kit.recorded.lock().expect("not poisoned");
    json_response(&Value::Array(recorded.iter().cloned().collect()))
}

async fn any(State(kit): State<Kit>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Some(rest) = path.strip_prefix("/_call/") {
        return call(&kit, parts.method, rest, body).await;
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let entry = json!({
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut recorded = kit.recorded.lock().expect("not poisoned");
    if recorded.len() == KEPT {
        recorded.pop_front();
    }
    recorded.push_back(entry);
    drop(recorded);
    json_response(&json!({"ok": true}))
}

async fn call(kit: &Kit, method: axum::http::Method, rest: &str, body: Bytes) -> Response {
    let url = format!("{}/{rest}", kit.link);
    match kit.client.request(method, &url).body(body).send().await {
        Ok(answer) => {
            let status = answer.status();
            match answer.bytes().await {
                Ok(bytes) => (status, Body::from(bytes)).into_response(),
                Err(e) => (StatusCode::BAD_GATEWAY, format!("{url}: {e}")).into_response(),
            }
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{url}: {e}")).into_response(),
    }
}
