//! The Temporal sink's `auth.oidc` end to end: tokens from a real OAuth2 server (npm
//! `oauth2-mock-server`, `cargo xtask infra up oauth2`: `FISO_E2E_OAUTH2_TOKEN_URL`,
//! `FISO_E2E_OAUTH2_CLIENT_SECRET`; client `fiso-e2e` gets 1 h tokens, `fiso-e2e-short` 3 s
//! ones, each token unique) and workflows started on the real Temporal dev server.
//!
//! The dev server accepts any bearer token and shows none, so fiso talks to it through a
//! recording proxy in this file: an HTTP/2 (h2c) pass-through that keeps each gRPC call's path
//! and `authorization` metadata and forwards the call unchanged, trailers included. What a call
//! carried is read there; that the call worked is read on Temporal. To stand for a server that
//! revokes a token, the proxy can answer a call bearing a given token with `UNAUTHENTICATED`
//! itself (Temporal's own authorizer is not available in the dev server).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode as HttpStatus, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fiso_e2e::kafka::unique;
use fiso_e2e::{client, eventually, infra, post_json, FisoProcess, FlowDir};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use reqwest::StatusCode;
use serde_json::{json, Value};

const START: &str = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";

/// One gRPC call that went through the proxy.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    authorization: Option<String>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: Client<HttpConnector, Body>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// `authorization` values answered with `UNAUTHENTICATED` instead of being forwarded.
    revoked: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every call to the Temporal dev server.
    async fn start() -> (SocketAddr, Proxy) {
        let proxy = Proxy {
            upstream: infra::var("FISO_E2E_TEMPORAL_ADDR"),
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            calls: Arc::default(),
            revoked: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, proxy)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// The `authorization` of every StartWorkflowExecution call, in order.
    fn start_tokens(&self) -> Vec<Option<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == START)
            .map(|c| c.authorization)
            .collect()
    }
}

async fn forward(State(proxy): State<Proxy>, mut request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    proxy.calls.lock().expect("calls").push(Call {
        path: path.clone(),
        authorization: authorization.clone(),
    });
    if authorization.is_some_and(|a| proxy.revoked.lock().expect("revoked").contains(&a)) {
        // A gRPC trailers-only answer, as Temporal's authorizer gives.
        return Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "16")
            .header("grpc-message", "token revoked")
            .body(Body::empty())
            .expect("a response");
    }
    let uri: Uri = format!("http://{}{}", proxy.upstream, path)
        .parse()
        .expect("upstream URI");
    *request.uri_mut() = uri;
    match proxy.client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => (HttpStatus::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// A flow: HTTP source, Temporal sink through `proxy` with `auth` (indented under `auth:`).
fn flow(name: &str, proxy: SocketAddr, queue: &str, auth: &str) -> String {
    format!(
        "name: {name}\n\
         source:\n  type: http\n  config:\n    listenAddr: \"127.0.0.1:0\"\n    path: /events\n\
         sink:\n  type: temporal\n  config:\n    hostPort: \"{proxy}\"\n    taskQueue: {queue}\n\
         \x20   workflowType: ProcessOrder\n    workflowIdExpr: \"oidc-{{{{.data.orderId}}}}\"\n\
         \x20   tls:\n      disabled: true\n    auth:\n      oidc:\n\
         \x20       tokenURL: {}\n{auth}\
         errorHandling:\n  maxRetries: 1\n  initialInterval: 10ms\n  maxInterval: 20ms\n",
        infra::var("FISO_E2E_OAUTH2_TOKEN_URL"),
    )
}

/// Posts an order event; the workflow id it starts (`oidc-<order>`).
async fn send(fiso: &FisoProcess, url: &str, order: &str) -> String {
    let event = json!({"specversion": "1.0", "id": unique("evt"), "source": "shop",
        "type": "order.created", "data": {"orderId": order}});
    let answer = post_json(&client(), url, &event).await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "{}\n{}",
        answer.text(),
        fiso.logs().tail(40)
    );
    format!("oidc-{order}")
}

/// The workflow exists on Temporal, started by this sink.
async fn assert_started(workflow_id: &str) {
    let out = tokio::process::Command::new(infra::var("FISO_E2E_TEMPORAL_CLI"))
        .args([
            "workflow",
            "describe",
            "--workflow-id",
            workflow_id,
            "--address",
        ])
        .arg(infra::var("FISO_E2E_TEMPORAL_ADDR"))
        .args(["--output", "json"])
        .output()
        .await
        .expect("running the temporal CLI");
    assert!(
        out.status.success(),
        "workflow {workflow_id} is not on Temporal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).expect("describe JSON");
    assert_eq!(
        d["workflowExecutionInfo"]["type"]["name"], "ProcessOrder",
        "{d}"
    );
}

/// The claims of a `Bearer <JWT>` value.
fn claims(authorization: &str) -> Value {
    let jwt = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer token: {authorization}"));
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims")
}

async fn start(dir: &FlowDir, env: &[(&str, &str)]) -> (FisoProcess, String) {
    let fiso = FisoProcess::start_with_env(&dir.path(), env.iter().copied()).await;
    let url = format!("http://{}/events", fiso.http_addr("127.0.0.1:0").await);
    (fiso, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_from_a_secret_file_is_fetched_and_sent_on_every_call() {
    let (proxy_addr, proxy) = Proxy::start().await;
    let dir = FlowDir::new();
    let secret = dir.path().join("client-secret");
    std::fs::write(
        &secret,
        format!("{}\n", infra::var("FISO_E2E_OAUTH2_CLIENT_SECRET")),
    )
    .expect("writing the secret file");
    let auth = format!(
        "        clientID: fiso-e2e\n        clientSecretFile: {}\n        scopes: [temporal, workflows]\n",
        secret.display()
    );
    dir.write(
        "oidc.yaml",
        &flow("t-oidc-file", proxy_addr, &unique("tq-oidc"), &auth),
    );
    let (fiso, url) = start(&dir, &[]).await;

    let mut workflows = Vec::new();
    for _ in 0..3 {
        workflows.push(send(&fiso, &url, &unique("o")).await);
    }
    for w in &workflows {
        assert_started(w).await;
    }
    let tokens = proxy.start_tokens();
    assert_eq!(tokens.len(), 3, "{:?}", proxy.calls());
    let first = tokens[0].clone().expect("a bearer token on the call");
    // Every token the server issues is unique (`jti`): one token means one fetch.
    assert!(
        tokens.iter().all(|t| t.as_deref() == Some(&first)),
        "{tokens:?}"
    );
    // The connect call (GetSystemInfo) carried it too.
    assert!(
        proxy
            .calls()
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&first)),
        "{:?}",
        proxy.calls()
    );
    let c = claims(&first);
    assert_eq!(c["scope"], "temporal workflows", "{c}");
    assert!(c["jti"].is_string(), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_an_env_secret_is_refreshed_before_it_expires() {
    let (proxy_addr, proxy) = Proxy::start().await;
    let dir = FlowDir::new();
    let auth =
        "        clientID: fiso-e2e-short\n        clientSecretEnv: TEMPORAL_CLIENT_SECRET\n";
    dir.write(
        "oidc.yaml",
        &flow("t-oidc-env", proxy_addr, &unique("tq-oidc"), auth),
    );
    let secret = infra::var("FISO_E2E_OAUTH2_CLIENT_SECRET");
    let (fiso, url) = start(&dir, &[("TEMPORAL_CLIENT_SECRET", &secret)]).await;

    let first_workflow = send(&fiso, &url, &unique("o")).await;
    assert_started(&first_workflow).await;
    let first = proxy.start_tokens()[0].clone().expect("a bearer token");
    let lifetime =
        claims(&first)["exp"].as_i64().unwrap() - claims(&first)["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3, "{}", claims(&first));

    // Events keep coming; once the 3 s token nears its end, a new one is fetched and used.
    let second = eventually(Duration::from_secs(20), || async {
        let workflow = send(&fiso, &url, &unique("o")).await;
        let last = proxy.start_tokens().last().cloned().flatten()?;
        (last != first).then_some((workflow, last))
    })
    .await;
    let (workflow, second) = second.unwrap_or_else(|| {
        panic!(
            "the token was never refreshed: {:?}\n{}",
            proxy.start_tokens(),
            fiso.logs().tail(40)
        )
    });
    assert_started(&workflow).await;
    assert!(claims(&second)["iat"].as_i64() >= claims(&first)["iat"].as_i64());
    assert!(proxy.start_tokens().iter().all(Option::is_some));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_fails_delivery_clearly_without_the_secret() {
    let (proxy_addr, proxy) = Proxy::start().await;
    let dir = FlowDir::new();
    let wrong = "wrong-secret-Zq81xV";
    let auth = "        clientID: fiso-e2e\n        clientSecretEnv: TEMPORAL_CLIENT_SECRET\n";
    dir.write(
        "oidc.yaml",
        &flow("t-oidc-wrong", proxy_addr, &unique("tq-oidc"), auth),
    );
    let (fiso, url) = start(&dir, &[("TEMPORAL_CLIENT_SECRET", wrong)]).await;

    let event = json!({"specversion": "1.0", "id": unique("evt"), "source": "shop",
        "type": "order.created", "data": {"orderId": unique("o")}});
    let answer = post_json(&client(), &url, &event).await;
    let text = answer.text();
    assert!(answer.status.is_server_error(), "{} {text}", answer.status);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "SINK_DELIVERY_FAILED", "{error}");
    // Refused credentials are not retried.
    assert_eq!(error["attempts"], 1, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("401") && message.contains("invalid_client"),
        "{message}"
    );
    assert!(
        message.contains(&infra::var("FISO_E2E_OAUTH2_TOKEN_URL")),
        "{message}"
    );
    // Nothing reached Temporal without a token.
    assert!(proxy.start_tokens().is_empty(), "{:?}", proxy.calls());

    let readyz = fiso.wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    let reason = readyz["components"]["flow/t-oidc-wrong/sink"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("invalid_client"), "{readyz}");

    let logs = fiso.logs().tail(10_000);
    let metrics = client()
        .get(format!("http://{}/metrics", fiso.metrics_addr()))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    for (what, text) in [
        ("answer", &text),
        ("readyz", &reason),
        ("logs", &logs),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(wrong), "the secret is in the {what}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_expiry_is_replaced_once_temporal_refuses_it() {
    let (proxy_addr, proxy) = Proxy::start().await;
    let dir = FlowDir::new();
    let auth =
        "        clientID: fiso-e2e-no-expiry\n        clientSecretEnv: TEMPORAL_CLIENT_SECRET\n";
    dir.write(
        "oidc.yaml",
        &flow("t-oidc-revoked", proxy_addr, &unique("tq-oidc"), auth),
    );
    let secret = infra::var("FISO_E2E_OAUTH2_CLIENT_SECRET");
    let (fiso, url) = start(&dir, &[("TEMPORAL_CLIENT_SECRET", &secret)]).await;

    assert_started(&send(&fiso, &url, &unique("o")).await).await;
    assert_started(&send(&fiso, &url, &unique("o")).await).await;
    let tokens = proxy.start_tokens();
    assert_eq!(tokens.len(), 2);
    let first = tokens[0].clone().expect("a bearer token");
    assert_eq!(
        tokens[1].as_deref(),
        Some(first.as_str()),
        "kept without expires_in"
    );

    proxy.revoked.lock().unwrap().push(first.clone());
    let workflow = send(&fiso, &url, &unique("o")).await;
    assert_started(&workflow).await;
    let tokens = proxy.start_tokens();
    // The refused call, then the same call with a new token, within one delivery attempt.
    assert_eq!(tokens.len(), 4, "{tokens:?}");
    assert_eq!(tokens[2].as_deref(), Some(first.as_str()));
    let second = tokens[3].clone().expect("a bearer token");
    assert_ne!(second, first);
    assert!(claims(&second)["jti"] != claims(&first)["jti"]);
}
