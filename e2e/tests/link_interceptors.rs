//! Link WASM interceptors end to end: `fiso link` in front of a real HTTP upstream, with
//! modules that rewrite the request (payload, header, path), rewrite the answer, reject, trap,
//! fail open, get a body over their input limit, rewrite a path out of `allowedPaths`, spy on
//! what they are given while a bearer credential is injected, and one rewritten on disk and
//! picked up by hot reload; the metrics of all of it; and `fiso validate` loading the modules.
//! Modules are compiled from WAT: the engine's test modules, the link's `wrap.wat`, and
//! fixed-answer modules generated here.

use std::time::Duration;

use fiso_e2e::link::{http_target, Link};
use fiso_e2e::wasm::{engine_module, fixed, wat_file};
use fiso_e2e::{client, eventually, fiso_bin, send, Reply, Script, SinkServer};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

/// `{"payload":<its input>}`: what the module was given becomes the body.
fn wrap_module() -> Vec<u8> {
    wat_file("../dataplane/link/src/intercept/testdata/wrap.wat")
}

/// An interceptor list item (8-space indented under a target's `interceptors:`).
fn interceptor(module: &str, extra: &str) -> String {
    format!("      - type: wasm\n        config:\n          module: {module}\n{extra}")
}

fn target(name: &str, upstream: &SinkServer, extra: &str, interceptors: &[String]) -> String {
    http_target(
        name,
        upstream.addr(),
        &format!("{extra}    interceptors:\n{}", interceptors.concat()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_interceptors_rewrite_reject_fail_and_never_see_the_credential() {
    let upstream = SinkServer::start(Script::always(Reply::json(
        200,
        &json!({"upstream": "answer"}),
    )))
    .await;
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "s3cret-t0ken\n").unwrap();
    let bearer = format!(
        "    auth:\n      type: bearer\n      secretRef:\n        filePath: {}\n",
        token.display()
    );
    let allowed = "    allowedPaths: [\"/api/**\"]\n";
    let targets = [
        target("rw", &upstream, allowed, &[interceptor("rewrite.wasm", "")]),
        target(
            "escape",
            &upstream,
            allowed,
            &[interceptor("escape.wasm", "")],
        ),
        target(
            "spy",
            &upstream,
            &bearer,
            &[
                interceptor("wrap.wasm", ""),
                interceptor("wrap.wasm", "          phase: inbound\n"),
            ],
        ),
        target(
            "in",
            &upstream,
            "",
            &[interceptor("inbound.wasm", "          phase: inbound\n")],
        ),
        target("rej", &upstream, "", &[interceptor("reject.wasm", "")]),
        target("trap", &upstream, "", &[interceptor("trap.wasm", "")]),
        target(
            "open",
            &upstream,
            "",
            &[interceptor(
                "trap.wasm",
                "          failOpen: true\n          runtime: wazero\n",
            )],
        ),
        target(
            "small",
            &upstream,
            "",
            &[interceptor("echo.wasm", "          maxInputSize: 16B\n")],
        ),
    ]
    .concat();
    let files = [
        (
            "rewrite.wasm",
            fixed(
                r#"{"payload":{"rewritten":true},"headers":{"x-intercepted":"yes","content-type":"application/json"},"path":"/api/rewritten"}"#,
            ),
        ),
        ("escape.wasm", fixed(r#"{"path":"/api/../admin"}"#)),
        (
            "inbound.wasm",
            fixed(
                r#"{"payload":{"inbound":"rewritten"},"headers":{"x-in":"1","content-type":"application/json"}}"#,
            ),
        ),
        ("wrap.wasm", wrap_module()),
        ("reject.wasm", engine_module("reject")),
        ("trap.wasm", engine_module("trap")),
        ("echo.wasm", engine_module("echo")),
    ];
    let link = Link::start_with_files(
        &format!("listenAddr: 127.0.0.1:0\ntargets:\n{targets}"),
        &files,
        Vec::new(),
    )
    .await;
    let post = |path: &str, body: &'static str| {
        let url = link.url(path);
        async move {
            send(
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-app", "1")
                    .body(body),
            )
            .await
        }
    };

    // Outbound rewrite of payload, header and path.
    let answer = post("/link/rw/api/v1/orders", r#"{"id":1}"#).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let got = upstream.wait_for_requests(1).await;
    assert_eq!(got[0].path, "/api/rewritten");
    assert_eq!(got[0].json(), json!({"rewritten": true}));
    assert_eq!(got[0].header("x-intercepted"), Some("yes"));
    assert_eq!(
        got[0].header("x-app"),
        None,
        "headers are replaced as a whole"
    );

    // A rewritten path outside allowedPaths.
    let answer = post("/link/escape/api/x", "{}").await;
    assert_eq!(answer.status.as_u16(), 403, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "PATH_NOT_ALLOWED");

    // The credential reaches the upstream; neither module saw it.
    let answer = post("/link/spy/x?q=1", r#"{"id":2}"#).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let got = upstream.wait_for_requests(2).await;
    assert_eq!(got[1].header("authorization"), Some("Bearer s3cret-t0ken"));
    let outbound_view = got[1].json();
    assert_eq!(outbound_view["direction"], "outbound");
    assert_eq!(outbound_view["path"], "/x");
    assert_eq!(outbound_view["query"], "q=1");
    assert_eq!(outbound_view["payload"], json!({"id": 2}));
    assert_eq!(outbound_view["headers"]["x-app"], "1");
    let inbound_view = answer.json();
    assert_eq!(inbound_view["direction"], "inbound");
    assert_eq!(inbound_view["status"], 200);
    assert_eq!(inbound_view["payload"], json!({"upstream": "answer"}));
    for view in [&outbound_view, &inbound_view] {
        let text = view.to_string();
        assert!(
            !text.contains("s3cret"),
            "a module saw the credential: {text}"
        );
        assert!(view["headers"].get("authorization").is_none(), "{text}");
    }

    // Inbound rewrite of the answer.
    let answer = post("/link/in/x", "{}").await;
    assert_eq!(answer.status.as_u16(), 200);
    assert_eq!(answer.headers["x-in"], "1");
    assert_eq!(answer.json(), json!({"inbound": "rewritten"}));

    // A rejection: the module's status, the proxy's JSON error body; nothing sent upstream.
    let before = upstream.count();
    let answer = post("/link/rej/x", "{}").await;
    assert_eq!(answer.status.as_u16(), 422, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!({"error": {"code": "INTERCEPTOR_REJECTED", "message": "bad"}})
    );

    // A trap: 502; with failOpen (and `runtime: wazero`, run on wasmtime) the request passes.
    let answer = post("/link/trap/x", "{}").await;
    assert_eq!(answer.status.as_u16(), 502, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "INTERCEPTOR_FAILED");
    assert_eq!(
        upstream.count(),
        before,
        "rejected and failed requests never left"
    );
    let answer = post("/link/open/x", r#"{"id":3}"#).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let got = upstream.wait_for_requests(before + 1).await;
    assert_eq!(got[before].json(), json!({"id": 3}), "passed on unchanged");

    // A body over maxInputSize: 413, not passed on unseen.
    let answer = post("/link/small/x", r#"{"a":"123456789"}"#).await;
    assert_eq!(answer.status.as_u16(), 413, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(upstream.count(), before + 1);

    let m = link.fiso.metrics().await;
    let labels = |t: &'static str, phase: &'static str| [("target", t), ("phase", phase)];
    assert_eq!(
        m.value(
            "fiso_link_interceptor_rejections_total",
            &labels("rej", "outbound")
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "fiso_link_interceptor_errors_total",
            &labels("trap", "outbound")
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "fiso_link_interceptor_fail_open_total",
            &labels("open", "outbound")
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "fiso_link_interceptor_duration_seconds_count",
            &labels("spy", "inbound")
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "fiso_link_requests_total",
            &[("target", "rej"), ("status", "422")]
        ),
        1.0
    );
    let logs = link.fiso.logs().tail(500);
    assert!(
        !logs.contains("s3cret"),
        "the credential in the logs:\n{logs}"
    );
    assert!(
        logs.contains("wazero"),
        "runtime: wazero warns at load:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_link_module_is_picked_up_by_hot_reload() {
    let upstream = SinkServer::ok().await;
    let link = Link::start_with_files(
        &format!(
            "listenAddr: 127.0.0.1:0\ntargets:\n{}",
            target("hr", &upstream, "", &[interceptor("step.wasm", "")])
        ),
        &[("step.wasm", engine_module("echo"))],
        Vec::new(),
    )
    .await;
    let url = link.url("/link/hr/x");
    let post = || {
        let url = url.clone();
        async move { send(client().post(url).body(r#"{"v":1}"#)).await }
    };
    assert_eq!(post().await.status.as_u16(), 200);
    assert_eq!(
        upstream.wait_for_requests(1).await[0].json(),
        json!({"v": 1})
    );

    let dir = link.config.parent().unwrap();
    let aside = dir.join("step.wasm.new");
    std::fs::write(&aside, fixed(r#"{"payload":{"v":2}}"#)).unwrap();
    std::fs::rename(&aside, dir.join("step.wasm")).unwrap();
    let reloaded = eventually(Duration::from_secs(15), || async {
        post().await;
        let last = upstream.requests().pop()?;
        (last.json() == json!({"v": 2})).then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "{}", link.fiso.logs().tail(20));
}

#[test]
fn validate_loads_link_modules_and_warns_about_wazero() {
    let dir = tempfile::tempdir().unwrap();
    let link_dir = dir.path().join("link");
    std::fs::create_dir_all(&link_dir).unwrap();
    std::fs::write(link_dir.join("echo.wasm"), engine_module("echo")).unwrap();
    let config = |module: &str, runtime: &str| {
        format!(
            "targets:\n  - name: t\n    host: api.example.com\n    interceptors:\n      - type: wasm\n        config: {{module: {module}, runtime: {runtime}, phase: inbound}}\n"
        )
    };
    let validate = || {
        let out = std::process::Command::new(fiso_bin())
            .args(["validate", "--format", "json"])
            .arg(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), report)
    };
    std::fs::write(link_dir.join("config.yaml"), config("echo.wasm", "wazero")).unwrap();
    let (ok, report) = validate();
    assert!(ok, "{report:#}");
    assert_eq!(report["warnings"], 1, "{report:#}");
    let warning = &report["diagnostics"][0];
    assert_eq!(warning["path"], "targets[0].interceptors[0].config.runtime");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("runs on wasmtime"),
        "{report:#}"
    );

    std::fs::write(
        link_dir.join("config.yaml"),
        config("missing.wasm", "wasmtime"),
    )
    .unwrap();
    let (ok, report) = validate();
    assert!(!ok);
    let error = &report["diagnostics"][0];
    assert_eq!(error["path"], "targets[0].interceptors[0].config.module");
    assert!(
        error["message"].as_str().unwrap().contains("missing.wasm"),
        "{report:#}"
    );
}
