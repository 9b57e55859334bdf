//! The interceptors concern in front of a recording upstream: what reaches the upstream and the
//! app, rejections, failures, `failOpen`, input limits, the path check after a rewrite, module
//! changes. Guest modules are WAT: `testdata/wrap.wat` (the input becomes the payload) and
//! modules generated here that print a fixed answer.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use fiso_config::common::ByteSize;
use fiso_config::flow::WasmRuntime;
use fiso_config::link::LinkWasmConfig;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::*;
use crate::layer::{chain, concern, leaf};

/// What the upstream got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: StatusCode,
    body: &'static str,
    proxy_error: bool,
}

impl Upstream {
    fn new(status: u16, body: &'static str) -> Self {
        Upstream {
            seen: Arc::default(),
            status: StatusCode::from_u16(status).unwrap(),
            body,
            proxy_error: false,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn answer(self, req: Request) -> Response {
        if self.proxy_error {
            return error(ErrorCode::CircuitOpen, "open");
        }
        let forward = req.extensions().get::<Forward>().cloned().unwrap();
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        self.seen.lock().unwrap().push(Seen {
            path: forward.path.encoded(),
            query: forward.query,
            headers: parts.headers,
            body,
        });
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        response
            .headers_mut()
            .append("set-cookie", HeaderValue::from_static("a=1"));
        response
            .headers_mut()
            .append("set-cookie", HeaderValue::from_static("b=2"));
        response
    }
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiso-link-intercept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A module that ignores its input and prints `out`.
fn fixed(name: &str, out: &str) -> String {
    let escaped: String = out.bytes().map(|b| format!("\\{b:02x}")).collect();
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {}))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        out.len()
    );
    write(name, &wat)
}

/// Writes the module atomically: tests running at the same time write the same files.
fn write(name: &str, wat: &str) -> String {
    let file = format!("{name}.wasm");
    let tmp = dir().join(format!("{file}.{:?}.tmp", std::thread::current().id()));
    std::fs::write(&tmp, ::wat::parse_str(wat).unwrap()).unwrap();
    std::fs::rename(&tmp, dir().join(&file)).unwrap();
    file
}

fn testdata(name: &str) -> String {
    match name {
        "wrap" => write(name, include_str!("testdata/wrap.wat")),
        other => write(
            other,
            &std::fs::read_to_string(format!(
                "{}/../wasm/testdata/{other}.wat",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        ),
    }
}

fn spec(module: String, phase: InterceptorPhase) -> LinkWasmConfig {
    LinkWasmConfig {
        module,
        phase,
        runtime: WasmRuntime::Wasmtime,
        timeout: None,
        memory_limit: None,
        fuel: None,
        max_output_size: None,
        max_input_size: None,
        fail_open: false,
        env: Default::default(),
        preopens: Vec::new(),
    }
}

struct Setup {
    service: Next,
    upstream: Upstream,
    metrics: LinkMetrics,
    intercept: Intercept,
}

fn setup(specs: Vec<LinkWasmConfig>, allowed: &[&str], upstream: Upstream) -> Setup {
    let metrics = LinkMetrics::unregistered();
    let specs: Vec<_> = specs.into_iter().map(LinkInterceptorSpec::Wasm).collect();
    let globs: Vec<String> = allowed.iter().map(|g| (*g).to_owned()).collect();
    let intercept = Intercept::load(
        "t",
        &specs,
        Some(&dir()),
        Arc::new(AllowedPaths::new(&globs).unwrap()),
        Duration::from_secs(5),
        metrics.clone(),
    )
    .unwrap()
    .unwrap();
    let service = chain(
        [Some(concern(intercept.clone()))],
        leaf(upstream.clone(), Upstream::answer),
    );
    Setup {
        service,
        upstream,
        metrics,
        intercept,
    }
}

fn request(method: Method, path: &str, body: impl Into<Body>) -> Request {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("/link/t{path}?x=1"))
        .header("content-type", "application/json")
        .header("x-app", "1")
        .body(body.into())
        .unwrap();
    req.extensions_mut().insert(Forward {
        target: "t".into(),
        path: normalise(path).unwrap(),
        query: Some("x=1".into()),
    });
    req
}

async fn body_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn an_outbound_module_sees_the_request_and_rewrites_body_headers_path_and_query() {
    let s = setup(
        vec![
            spec(testdata("wrap"), InterceptorPhase::Outbound),
            spec(
                fixed(
                    "rewrite",
                    r#"{"payload":{"rewritten":true},"headers":{"x-intercepted":"yes","content-type":"application/json"},"path":"/api/v2/./orders","query":"q=2"}"#,
                ),
                InterceptorPhase::Outbound,
            ),
        ],
        &["/api/**"],
        Upstream::new(200, "{}"),
    );
    let response = s
        .service
        .handle(request(Method::POST, "/api/v1", r#"{"id": 1}"#))
        .await;
    assert_eq!(response.status(), 200);
    let seen = s.upstream.seen().remove(0);
    assert_eq!(seen.body, Bytes::from_static(br#"{"rewritten":true}"#));
    assert_eq!(seen.headers["x-intercepted"], "yes");
    assert!(
        seen.headers.get("x-app").is_none(),
        "headers are replaced as a whole"
    );
    assert_eq!(seen.headers["content-length"], "18");
    assert_eq!(
        seen.path, "/api/v2/orders",
        "the rewritten path is normalised"
    );
    assert_eq!(seen.query.as_deref(), Some("q=2"));
}

#[tokio::test]
async fn what_an_outbound_module_is_given() {
    let s = setup(
        vec![spec(testdata("wrap"), InterceptorPhase::Outbound)],
        &[],
        Upstream::new(200, "{}"),
    );
    let mut req = request(Method::PUT, "/a%20b", r#"{"id": 1}"#);
    req.headers_mut()
        .append("accept", HeaderValue::from_static("b"));
    req.headers_mut()
        .append("accept", HeaderValue::from_static("c"));
    s.service.handle(req).await;
    let seen: Value = serde_json::from_slice(&s.upstream.seen()[0].body).unwrap();
    assert_eq!(
        seen,
        json!({"direction": "outbound", "method": "PUT", "path": "/a%20b", "query": "x=1",
               "headers": {"content-type": "application/json", "x-app": "1", "accept": ["b", "c"]},
               "payload": {"id": 1}})
    );
}

#[tokio::test]
async fn a_rewritten_path_outside_allowed_paths_is_403() {
    for (name, path) in [
        ("escape-other", "/admin"),
        ("escape-root", "/api/../../etc"),
    ] {
        let s = setup(
            vec![spec(
                fixed(name, &format!(r#"{{"path":"{path}"}}"#)),
                InterceptorPhase::Outbound,
            )],
            &["/api/**"],
            Upstream::new(200, "{}"),
        );
        let (status, body) =
            body_json(s.service.handle(request(Method::GET, "/api/x", "")).await).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(body["error"]["code"], "PATH_NOT_ALLOWED");
        assert!(s.upstream.seen().is_empty());
    }
}

#[tokio::test]
async fn an_inbound_module_rewrites_the_answer() {
    let s = setup(
        vec![
            spec(testdata("wrap"), InterceptorPhase::Inbound),
            spec(
                fixed(
                    "inbound-headers",
                    r#"{"headers":{"x-in":"1","set-cookie":["a=1","b=2"]}}"#,
                ),
                InterceptorPhase::Inbound,
            ),
        ],
        &[],
        Upstream::new(201, r#"{"ok": true}"#),
    );
    let response = s
        .service
        .handle(request(Method::POST, "/orders", "{}"))
        .await;
    assert_eq!(response.status(), 201, "the status stays the upstream's");
    assert_eq!(response.headers()["x-in"], "1");
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
    let (_, body) = body_json(response).await;
    assert_eq!(
        body,
        json!({"direction": "inbound", "method": "POST", "path": "/orders", "query": "x=1",
               "status": 201,
               "headers": {"content-type": "application/json", "set-cookie": ["a=1", "b=2"]},
               "payload": {"ok": true}})
    );
}

#[tokio::test]
async fn inbound_modules_skip_answers_the_proxy_made_up() {
    let mut upstream = Upstream::new(200, "{}");
    upstream.proxy_error = true;
    let s = setup(
        vec![spec(
            fixed("never", r#"{"payload":1}"#),
            InterceptorPhase::Inbound,
        )],
        &[],
        upstream,
    );
    let (status, body) = body_json(s.service.handle(request(Method::GET, "/", "")).await).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "CIRCUIT_OPEN");
}

#[tokio::test]
async fn a_rejection_answers_with_the_module_status_in_both_phases() {
    for phase in [InterceptorPhase::Outbound, InterceptorPhase::Inbound] {
        let s = setup(
            vec![spec(
                fixed(
                    "reject451",
                    r#"{"reject":{"status":451,"reason":"not here"}}"#,
                ),
                phase,
            )],
            &[],
            Upstream::new(200, "{}"),
        );
        let (status, body) = body_json(s.service.handle(request(Method::GET, "/", "")).await).await;
        assert_eq!(status, 451);
        assert_eq!(
            body,
            json!({"error": {"code": "INTERCEPTOR_REJECTED", "message": "not here"}})
        );
        assert_eq!(
            s.upstream.seen().len(),
            usize::from(phase == InterceptorPhase::Inbound)
        );
        assert_eq!(s.metrics.interceptor_counts("t", phase.as_str()), (1, 0, 0));
    }
}

#[tokio::test]
async fn a_failing_module_is_502_unless_fail_open() {
    for module in [
        testdata("trap"),
        fixed("garbage-out", "not json"),
        fixed("bad-key", r#"{"data":1}"#),
    ] {
        let s = setup(
            vec![spec(module.clone(), InterceptorPhase::Outbound)],
            &[],
            Upstream::new(200, "{}"),
        );
        let (status, body) =
            body_json(s.service.handle(request(Method::POST, "/", "{}")).await).await;
        assert_eq!(status, 502, "{module}");
        assert_eq!(body["error"]["code"], "INTERCEPTOR_FAILED");
        assert!(s.upstream.seen().is_empty());
        assert_eq!(s.metrics.interceptor_counts("t", "outbound"), (0, 0, 1));
    }
    let mut open = spec(testdata("trap"), InterceptorPhase::Outbound);
    open.fail_open = true;
    let mut inbound_open = spec(testdata("trap"), InterceptorPhase::Inbound);
    inbound_open.fail_open = true;
    let s = setup(
        vec![open, inbound_open],
        &[],
        Upstream::new(200, r#"{"u":1}"#),
    );
    let (status, body) = body_json(
        s.service
            .handle(request(Method::POST, "/", r#"{"id":1}"#))
            .await,
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, json!({"u": 1})));
    assert_eq!(
        s.upstream.seen()[0].body,
        Bytes::from_static(br#"{"id":1}"#)
    );
    assert_eq!(s.metrics.interceptor_counts("t", "outbound"), (0, 1, 0));
    assert_eq!(s.metrics.interceptor_counts("t", "inbound"), (0, 1, 0));
}

#[tokio::test]
async fn bodies_over_max_input_size_are_refused_not_passed_unseen() {
    let mut out = spec(testdata("echo"), InterceptorPhase::Outbound);
    out.max_input_size = Some(ByteSize(16));
    let s = setup(vec![out], &[], Upstream::new(200, "{}"));
    let exactly = r#"{"a":"123456789"}"#;
    assert_eq!(exactly.len(), 17);
    let at_limit = &exactly[..16];
    let ok = s
        .service
        .handle(request(Method::POST, "/", at_limit.to_owned()))
        .await;
    assert_eq!(
        ok.status(),
        200,
        "a body of exactly maxInputSize is given to the module"
    );
    let (status, body) = body_json(
        s.service
            .handle(request(Method::POST, "/", exactly.to_owned()))
            .await,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    // Without a Content-Length (a streamed body) the limit holds too.
    let stream = futures::stream::iter([
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"a\":\"1234")),
        Ok(Bytes::from_static(b"56789\"}")),
    ]);
    let (status, _) = body_json(
        s.service
            .handle(request(Method::POST, "/", Body::from_stream(stream)))
            .await,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(s.upstream.seen().len(), 1);

    let mut inbound = spec(testdata("echo"), InterceptorPhase::Inbound);
    inbound.max_input_size = Some(ByteSize(4));
    let s = setup(vec![inbound], &[], Upstream::new(200, r#"{"big":true}"#));
    let (status, body) = body_json(s.service.handle(request(Method::GET, "/", "")).await).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "INTERCEPTOR_INPUT_TOO_LARGE");
}

#[tokio::test]
async fn a_non_json_body_goes_as_base64_and_comes_back_unchanged() {
    let s = setup(
        vec![spec(testdata("echo"), InterceptorPhase::Outbound)],
        &[],
        Upstream::new(200, "{}"),
    );
    let bytes: &'static [u8] = b"\x00\x01 not json";
    s.service
        .handle(request(Method::POST, "/", Bytes::from_static(bytes)))
        .await;
    assert_eq!(s.upstream.seen()[0].body, Bytes::from_static(bytes));
}

#[test]
fn a_changed_module_file_is_noticed() {
    let file = fixed("changing", "{}");
    let s = setup(
        vec![spec(file.clone(), InterceptorPhase::Outbound)],
        &[],
        Upstream::new(200, "{}"),
    );
    assert!(!s.intercept.modules_changed());
    fixed("changing", r#"{"payload":1}"#);
    assert!(s.intercept.modules_changed());
}

/// Not an assertion: prints what an echo interceptor adds per request (`cargo test -p fiso-link
/// --lib intercept::tests::per_request_cost -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn per_request_cost() {
    const N: u32 = 1000;
    let body = r#"{"order":{"id":"ORD-1","items":[{"sku":"A-1","qty":2}]}}"#;
    let s = setup(
        vec![spec(testdata("echo"), InterceptorPhase::Outbound)],
        &[],
        Upstream::new(200, "{}"),
    );
    let bare = leaf(Upstream::new(200, "{}"), Upstream::answer);
    let mut per = Vec::new();
    for service in [&bare, &s.service] {
        for _ in 0..50 {
            service.handle(request(Method::POST, "/", body)).await;
        }
        let started = Instant::now();
        for _ in 0..N {
            service.handle(request(Method::POST, "/", body)).await;
        }
        per.push(started.elapsed() / N);
    }
    println!(
        "per request: {:?} without interceptors, {:?} with one echo interceptor",
        per[0], per[1]
    );
}
