//! `pooled` and `perRequest` apps through the process's `AppDirectory`, with WAT guests: the
//! stdin/stdout framing, the per-run limits (timeout, memory, output) and reload.
#![cfg(feature = "wasmer")]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use fiso_apps::Apps;
use fiso_config::apps::AppsConfig;
use fiso_runtime::Observability;
use serde_json::{json, Value};

const PREFIX: &str = r#"{"status":201,"headers":{"x-app":"fn"},"body":"#;

/// Answers `{"status":201,"headers":{"x-app":"fn"},"body":<the request document>}`.
fn echo_wat() -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "{prefix}")
  (data (i32.const 96) "}}")
  (func (export "_start") (local $n i32) (local $total i32)
    (loop $more
      (i32.store (i32.const 100) (i32.add (i32.const 1024) (local.get $total)))
      (i32.store (i32.const 104) (i32.sub (i32.const 65536) (local.get $total)))
      (drop (call $read (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 108)))
      (local.set $n (i32.load (i32.const 108)))
      (local.set $total (i32.add (local.get $total) (local.get $n)))
      (br_if $more (local.get $n)))
    (i32.store (i32.const 200) (i32.const 0))
    (i32.store (i32.const 204) (i32.const {len}))
    (i32.store (i32.const 208) (i32.const 1024))
    (i32.store (i32.const 212) (local.get $total))
    (i32.store (i32.const 216) (i32.const 96))
    (i32.store (i32.const 220) (i32.const 1))
    (drop (call $write (i32.const 1) (i32.const 200) (i32.const 3) (i32.const 300)))))"#,
        prefix = PREFIX.replace('"', "\\\""),
        len = PREFIX.len()
    )
}

const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

const GROW: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))"#;

const EXIT7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))"#;

/// Writes 64 KiB to stdout forever.
const FLOOD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (br_if $l (i32.eqz (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))))"#;

const FOREIGN_IMPORT: &str = r#"(module (import "env" "secret" (func))
  (memory (export "memory") 1) (func (export "_start")))"#;

fn module(dir: &Path, name: &str, wat: &str) {
    std::fs::write(dir.join(name), wat::parse_str(wat).unwrap()).unwrap();
}

fn config(yaml: &str) -> AppsConfig {
    fiso_config::parse::parse("apps.yaml", yaml).unwrap()
}

fn request(body: &'static str) -> http::Request<Bytes> {
    http::Request::post("/process?x=1")
        .header("content-type", "application/json")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_app_answers_through_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path(), "fn.wasm", &echo_wat());
    let obs = Observability::default();
    let apps = Apps::start(
        &config("apps:\n  - {name: fn, module: fn.wasm, execution: pooled, poolSize: 2}\n"),
        dir.path(),
        &obs,
    )
    .await
    .unwrap();
    let resp = obs
        .apps
        .call("fn", request(r#"{"order":1}"#))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-app"], "fn");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(
        doc,
        json!({"method":"POST","path":"/process","query":"x=1",
               "headers":{"content-type":"application/json"},"body":"{\"order\":1}"})
    );
    let metrics = obs.metrics.encode();
    assert!(
        metrics.contains(r#"fiso_app_requests_total{app="fn",status="201"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"fiso_app_up{app="fn"} 1"#), "{metrics}");
    assert_eq!(
        obs.readiness.state("app/fn"),
        Some(fiso_runtime::health::ComponentState::Ready)
    );
    apps.shutdown().await;
    assert!(obs.apps.get("fn").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_run_is_bounded_by_timeout_memory_and_output() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path(), "spin.wasm", SPIN);
    module(dir.path(), "grow.wasm", GROW);
    module(dir.path(), "exit.wasm", EXIT7);
    module(dir.path(), "flood.wasm", FLOOD);
    let obs = Observability::default();
    let _apps = Apps::start(
        &config(
            "apps:\n  - {name: spin, module: spin.wasm, execution: perRequest, timeout: 200ms, poolSize: 1}\n  - {name: grow, module: grow.wasm, execution: perRequest, memoryMB: 1}\n  - {name: exit, module: exit.wasm, execution: pooled}\n  - {name: flood, module: flood.wasm, execution: pooled, timeout: 60s}\n",
        ),
        dir.path(),
        &obs,
    )
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let e = obs.apps.call("spin", request("")).await.unwrap_err();
    assert_eq!(e.code(), "APP_TIMEOUT", "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The slot of the stopped run is free again: a second request is run (and times out).
    let e = obs.apps.call("spin", request("")).await.unwrap_err();
    assert_eq!(e.code(), "APP_TIMEOUT", "{e}");

    let e = obs.apps.call("grow", request("")).await.unwrap_err();
    assert_eq!(e.code(), "APP_FAILED");
    assert!(
        e.to_string().contains("memory limit exceeded")
            && e.to_string().contains("memoryMB allows 1048576"),
        "{e}"
    );

    let e = obs.apps.call("exit", request("")).await.unwrap_err();
    assert_eq!(e.to_string(), "app `exit` failed: exited with code 7");

    let e = obs.apps.call("flood", request("")).await.unwrap_err();
    assert_eq!(e.code(), "APP_RESPONSE_TOO_LARGE", "{e}");

    let metrics = obs.metrics.encode();
    assert!(
        metrics.contains(r#"fiso_app_requests_total{app="spin",status="APP_TIMEOUT"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_swaps_a_changed_module_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path(), "fn.wasm", &echo_wat());
    let obs = Observability::default();
    let yaml = "apps:\n  - {name: fn, module: fn.wasm, execution: perRequest}\n";
    let apps = Apps::start(&config(yaml), dir.path(), &obs).await.unwrap();
    assert_eq!(
        obs.apps
            .call("fn", request("a"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );

    // Same config, same module: nothing to do.
    let summary = apps.reload(&config(yaml), dir.path()).await.unwrap();
    assert_eq!(summary, Default::default());

    module(dir.path(), "fn.wasm", EXIT7);
    let summary = apps.reload(&config(yaml), dir.path()).await.unwrap();
    assert_eq!(summary.restarted, ["fn"]);
    assert!(obs
        .apps
        .call("fn", request("a"))
        .await
        .unwrap_err()
        .to_string()
        .contains("code 7"));

    // A module with a foreign import is refused; the running version stays.
    module(dir.path(), "fn.wasm", FOREIGN_IMPORT);
    let e = apps.reload(&config(yaml), dir.path()).await.unwrap_err();
    assert!(e.to_string().contains("imports `env::secret`"), "{e}");
    assert!(obs
        .apps
        .call("fn", request("a"))
        .await
        .unwrap_err()
        .to_string()
        .contains("code 7"));

    // Removed from the config: gone from the directory.
    let summary = apps
        .reload(&config("apps: []\n"), dir.path())
        .await
        .unwrap();
    assert_eq!(summary.stopped, ["fn"]);
    assert_eq!(
        obs.apps.call("fn", request("a")).await.unwrap_err().code(),
        "APP_NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_fails_on_a_missing_module() {
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::default();
    let e = Apps::start(
        &config("apps:\n  - {name: fn, module: nowhere.wasm, execution: pooled}\n"),
        dir.path(),
        &obs,
    )
    .await
    .err()
    .unwrap();
    assert!(
        e.to_string().starts_with("app `fn`: cannot read module"),
        "{e}"
    );
    assert!(obs.apps.is_empty());
}
