//! Engine tests. Guest modules are built from the WAT sources of `testdata/` (no wasm32 target
//! needed); each is written to a temporary `.wasm` file and loaded like a configured module.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fiso_config::common::ByteSize;
use fiso_config::flow::{InterceptorSpec, Preopen, WasmConfig, WasmRuntime};
use serde_json::{json, Value};

use super::*;

fn wat(name: &str) -> &'static str {
    match name {
        "echo" => include_str!("testdata/echo.wat"),
        "uppercase" => include_str!("testdata/uppercase.wat"),
        "reject" => include_str!("testdata/reject.wat"),
        "garbage" => include_str!("testdata/garbage.wat"),
        "trap" => include_str!("testdata/trap.wat"),
        "exit" => include_str!("testdata/exit.wat"),
        "loop" => include_str!("testdata/loop.wat"),
        "grow" => include_str!("testdata/grow.wat"),
        "big_output" => include_str!("testdata/big_output.wat"),
        "sleep" => include_str!("testdata/sleep.wat"),
        "env" => include_str!("testdata/env.wat"),
        "library" => include_str!("testdata/library.wat"),
        "wasix" => include_str!("testdata/wasix.wat"),
        other => panic!("no testdata/{other}.wat"),
    }
}

/// Writes `testdata/<name>.wat` as `<tmp>/<name>.wasm`; returns the directory and file name.
fn module_file(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("fiso-interceptor-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("{name}.wasm");
    let bytes = ::wat::parse_str(wat(name)).unwrap_or_else(|e| panic!("{name}.wat: {e}"));
    std::fs::write(dir.join(&file), bytes).unwrap();
    (dir, file)
}

fn config(module: &str) -> WasmConfig {
    WasmConfig {
        module: module.into(),
        runtime: WasmRuntime::Wasmtime,
        timeout: None,
        memory_limit: None,
        fuel: None,
        max_output_size: None,
        fail_open: false,
        env: Default::default(),
        preopens: Vec::new(),
    }
}

fn chain_of(configs: Vec<WasmConfig>, base: &std::path::Path) -> InterceptorChain {
    let specs: Vec<_> = configs.into_iter().map(InterceptorSpec::Wasm).collect();
    InterceptorChain::build(&specs, Some(base)).unwrap()
}

/// A chain of one testdata module, tweaked by `f`.
fn chain(name: &str, f: impl FnOnce(&mut WasmConfig)) -> InterceptorChain {
    let (dir, file) = module_file(name);
    let mut c = config(&file);
    f(&mut c);
    chain_of(vec![c], &dir)
}

fn event() -> Value {
    json!({
        "specversion": "1.0", "id": "e1", "source": "/orders", "type": "order.created",
        "data": {"key": "value"}, "headers": {"x-request-id": "abc"}
    })
}

async fn failure(chain: &InterceptorChain) -> InterceptorError {
    let err = chain.apply(event()).await.unwrap_err();
    assert_eq!(err.code(), "INTERCEPTOR_FAILED");
    err
}

#[tokio::test]
async fn echo_passes_the_event_through_unchanged() {
    let out = chain("echo", |_| {}).apply(event()).await.unwrap();
    assert_eq!(
        out,
        ChainOutcome::Continue {
            event: event(),
            failed_open: 0
        }
    );
}

#[tokio::test]
async fn the_upstream_example_replaces_data_and_keeps_attributes() {
    let out = chain("uppercase", |_| {}).apply(event()).await.unwrap();
    let mut expected = event();
    expected["data"] = json!({"key": "VALUE"});
    assert_eq!(
        out,
        ChainOutcome::Continue {
            event: expected,
            failed_open: 0
        }
    );
}

#[tokio::test]
async fn a_missing_headers_object_is_passed_as_empty() {
    let mut input = event();
    input.as_object_mut().unwrap().remove("headers");
    let ChainOutcome::Continue { event: out, .. } =
        chain("echo", |_| {}).apply(input).await.unwrap()
    else {
        panic!("not continued")
    };
    assert_eq!(out["headers"], json!({}));
}

#[tokio::test]
async fn a_rejection_stops_the_chain() {
    let (dir, reject) = module_file("reject");
    let (_, upper) = module_file("uppercase");
    let chain = chain_of(vec![config(&reject), config(&upper)], &dir);
    assert_eq!(
        chain.apply(event()).await.unwrap(),
        ChainOutcome::Rejected {
            status: 422,
            reason: "bad".into(),
            module: reject,
            failed_open: 0
        }
    );
}

#[tokio::test]
async fn interceptors_run_in_order() {
    let (dir, upper) = module_file("uppercase");
    let (_, echo) = module_file("echo");
    let chain = chain_of(vec![config(&upper), config(&echo)], &dir);
    let ChainOutcome::Continue { event: out, .. } = chain.apply(event()).await.unwrap() else {
        panic!("not continued")
    };
    assert_eq!(out["data"], json!({"key": "VALUE"}));
}

#[tokio::test]
async fn garbage_output_fails_naming_the_module() {
    let err = failure(&chain("garbage", |_| {})).await;
    assert!(matches!(err.kind, FailureKind::InvalidOutput(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("garbage.wasm") && text.contains("not one JSON value"),
        "{text}"
    );
}

#[tokio::test]
async fn a_trap_fails_with_the_guest_stderr() {
    let err = failure(&chain("trap", |_| {})).await;
    let FailureKind::Trap { message, stderr } = &err.kind else {
        panic!("{err}")
    };
    assert!(message.contains("unreachable"), "{message}");
    assert_eq!(stderr, "boom");
    assert!(err.to_string().contains("(stderr: boom)"), "{err}");
}

#[tokio::test]
async fn a_non_zero_exit_code_fails() {
    let err = failure(&chain("exit", |_| {})).await;
    assert!(
        matches!(err.kind, FailureKind::Exit { code: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn an_endless_loop_hits_the_timeout() {
    let timeout = Duration::from_millis(100);
    let err = failure(&chain("loop", |c| c.timeout = Some(timeout))).await;
    assert_eq!(err.kind, FailureKind::Timeout(timeout), "{err}");
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_hits_the_timeout() {
    let timeout = Duration::from_millis(100);
    let err = failure(&chain("sleep", |c| c.timeout = Some(timeout))).await;
    assert_eq!(err.kind, FailureKind::Timeout(timeout), "{err}");
}

#[tokio::test]
async fn fuel_bounds_the_instructions() {
    let err = failure(&chain("loop", |c| c.fuel = Some(1_000_000))).await;
    assert_eq!(err.kind, FailureKind::OutOfFuel(1_000_000), "{err}");
    // Enough fuel for a real answer.
    let ok = chain("uppercase", |c| c.fuel = Some(1_000_000));
    assert!(ok.apply(event()).await.is_ok());
}

#[tokio::test]
async fn the_memory_limit_is_enforced() {
    let err = failure(&chain("grow", |c| c.memory_limit = Some(ByteSize::mib(8)))).await;
    assert!(
        matches!(err.kind, FailureKind::MemoryLimit { limit, .. } if limit == 8 << 20),
        "{err}"
    );
}

#[tokio::test]
async fn stdout_beyond_max_output_size_fails() {
    let err = failure(&chain("big_output", |c| {
        c.max_output_size = Some(ByteSize::mib(1))
    }))
    .await;
    assert_eq!(err.kind, FailureKind::OutputTooLarge(1 << 20), "{err}");
}

#[tokio::test]
async fn fail_open_passes_the_event_on_unchanged() {
    let (dir, garbage) = module_file("garbage");
    let (_, trap) = module_file("trap");
    let (_, upper) = module_file("uppercase");
    let open = |m: &str| WasmConfig {
        fail_open: true,
        ..config(m)
    };
    let chain = chain_of(vec![open(&garbage), open(&trap), config(&upper)], &dir);
    let mut expected = event();
    expected["data"] = json!({"key": "VALUE"});
    assert_eq!(
        chain.apply(event()).await.unwrap(),
        ChainOutcome::Continue {
            event: expected,
            failed_open: 2
        }
    );
}

#[tokio::test]
async fn env_and_args_reach_the_guest_and_nothing_else() {
    let chain = chain("env", |c| {
        c.env.insert("GREETING".into(), "hello".into());
        c.env.insert("TARGET".into(), "world".into());
    });
    let out = chain.interceptors()[0].run_raw(Vec::new()).await.unwrap();
    assert_eq!(out, b"GREETING=hello\0TARGET=world\0");
}

#[tokio::test]
async fn a_thousand_sequential_events_reuse_pool_slots() {
    // More events than pool slots: a leaked slot would make this fail.
    let chain = chain("echo", |_| {});
    for _ in 0..1000 {
        assert!(matches!(
            chain.apply(event()).await.unwrap(),
            ChainOutcome::Continue { .. }
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_beyond_the_pool_size_wait_for_a_slot() {
    let chain = std::sync::Arc::new(chain("echo", |_| {}));
    let tasks: Vec<_> = (0..(wasmtime::POOL_SLOTS * 2))
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.apply(event()).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
}

#[test]
fn apply_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let chain = InterceptorChain::default();
    assert_send(chain.apply(event()));
}

#[test]
fn load_errors_are_config_errors_naming_the_module() {
    let (dir, _) = module_file("echo");
    let build = |c: WasmConfig| {
        InterceptorChain::build(&[InterceptorSpec::Wasm(c)], Some(&dir)).unwrap_err()
    };
    let missing = build(config("missing.wasm"));
    assert_eq!(missing.code(), "CONFIG_INVALID");
    assert!(
        matches!(missing.kind, BuildErrorKind::Read { .. }),
        "{missing}"
    );
    assert!(missing
        .to_string()
        .starts_with("interceptors[0] (module `missing.wasm`)"));

    std::fs::write(dir.join("text.wasm"), "hello").unwrap();
    let invalid = build(config("text.wasm"));
    assert!(
        matches!(invalid.kind, BuildErrorKind::Compile(_)),
        "{invalid}"
    );

    let (_, library) = module_file("library");
    let err = build(config(&library));
    assert!(matches!(err.kind, BuildErrorKind::NotCommand(_)), "{err}");
    let (_, wasix) = module_file("wasix");
    let err = build(config(&wasix));
    assert!(
        matches!(&err.kind, BuildErrorKind::NotCommand(m) if m.contains("sock_open")),
        "{err}"
    );

    let (_, echo) = module_file("echo");
    let too_big = build(WasmConfig {
        memory_limit: Some(ByteSize::mib(2048)),
        ..config(&echo)
    });
    assert!(
        matches!(too_big.kind, BuildErrorKind::Limit(_)),
        "{too_big}"
    );
    let zero = build(WasmConfig {
        timeout: Some(Duration::ZERO),
        ..config(&echo)
    });
    assert!(matches!(zero.kind, BuildErrorKind::Limit(_)), "{zero}");
    let preopen = build(WasmConfig {
        preopens: vec![Preopen {
            host_path: "no-such-dir".into(),
            guest_path: "/data".into(),
        }],
        ..config(&echo)
    });
    assert!(
        matches!(preopen.kind, BuildErrorKind::Preopen { .. }),
        "{preopen}"
    );
}

#[cfg(not(feature = "wasmer"))]
#[test]
fn runtime_wasmer_needs_the_feature() {
    let (dir, echo) = module_file("echo");
    let err = InterceptorChain::build(
        &[InterceptorSpec::Wasm(WasmConfig {
            runtime: WasmRuntime::Wasmer,
            ..config(&echo)
        })],
        Some(&dir),
    )
    .unwrap_err();
    assert!(matches!(err.kind, BuildErrorKind::WasmerNotBuilt));
    assert!(err
        .to_string()
        .contains("runtime: wasmer is not available in this build: it needs the `wasmer` cargo feature (cargo build -p fiso --features fiso-flow/wasmer)"));
}

#[cfg(feature = "wasmer")]
#[test]
fn runtime_wasmer_is_refused_until_its_backend_exists() {
    let (dir, echo) = module_file("echo");
    let err = InterceptorChain::build(
        &[InterceptorSpec::Wasm(WasmConfig {
            runtime: WasmRuntime::Wasmer,
            ..config(&echo)
        })],
        Some(&dir),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not implemented"), "{err}");
}

#[test]
fn a_changed_module_file_is_detected() {
    let dir = std::env::temp_dir().join(format!("fiso-interceptor-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.wasm");
    std::fs::write(&path, ::wat::parse_str(wat("echo")).unwrap()).unwrap();
    let chain = chain_of(vec![config("m.wasm")], &dir);
    let before = chain.interceptors()[0].content_hash();
    assert!(!chain.modules_changed());
    std::fs::write(&path, ::wat::parse_str(wat("uppercase")).unwrap()).unwrap();
    assert!(chain.modules_changed());
    let reloaded = chain_of(vec![config("m.wasm")], &dir);
    assert_ne!(reloaded.interceptors()[0].content_hash(), before);
    assert!(!reloaded.modules_changed());
}

/// Not an assertion: prints the per-event cost of the echo module
/// (`cargo test -p fiso-flow --lib interceptor::tests::per_event_cost -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn per_event_cost() {
    const N: u32 = 2000;
    let chain = chain("echo", |_| {});
    for _ in 0..100 {
        chain.apply(event()).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..N {
        chain.apply(event()).await.unwrap();
    }
    let inline = started.elapsed() / N;

    // The extra cost the spawn_blocking alternative would add per event: one hop to the
    // blocking pool and back.
    let started = Instant::now();
    for _ in 0..N {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
    }
    let hop = started.elapsed() / N;
    println!("echo interceptor: {inline:?} per event (call_async inline); spawn_blocking hop alone: {hop:?}");
}
