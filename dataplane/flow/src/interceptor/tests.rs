//! Engine tests. Guest modules are built from the WAT sources of `testdata/` (no wasm32 target
//! needed); each is written to a temporary `.wasm` file and loaded like a configured module.
//!
//! The contract tests are written once, as `async fn test(rt: WasmRuntime)`, and run on every
//! backend of the build by [`on_every_runtime!`]: `on_wasmtime::<test>` and, with the cargo
//! feature `wasmer`, `on_wasmer::<test>`.

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
        "preopen" => include_str!("testdata/preopen.wat"),
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

/// Generates, for each `#[attributes] test`, a test per backend that calls `test(runtime)`.
macro_rules! on_every_runtime {
    ($($(#[$attr:meta])+ $test:ident),+ $(,)?) => {
        mod on_wasmtime {
            $( $(#[$attr])+ async fn $test() { super::$test(super::WasmRuntime::Wasmtime).await } )+
        }
        #[cfg(feature = "wasmer")]
        mod on_wasmer {
            $( $(#[$attr])+ async fn $test() { super::$test(super::WasmRuntime::Wasmer).await } )+
        }
    };
}

on_every_runtime! {
    #[tokio::test] echo_passes_the_event_through_unchanged,
    #[tokio::test] the_upstream_example_replaces_data_and_keeps_attributes,
    #[tokio::test] a_missing_headers_object_is_passed_as_empty,
    #[tokio::test] a_rejection_stops_the_chain,
    #[tokio::test] interceptors_run_in_order,
    #[tokio::test] garbage_output_fails_naming_the_module,
    #[tokio::test] a_trap_fails_with_the_guest_stderr,
    #[tokio::test] a_non_zero_exit_code_fails,
    #[tokio::test] an_endless_loop_hits_the_timeout,
    #[tokio::test] a_guest_blocked_in_a_host_call_hits_the_timeout,
    #[tokio::test] fuel_bounds_the_instructions,
    #[tokio::test] the_memory_limit_is_enforced,
    #[tokio::test] stdout_beyond_max_output_size_fails,
    #[tokio::test] fail_open_passes_the_event_on_unchanged,
    #[tokio::test] env_and_args_reach_the_guest_and_nothing_else,
    #[tokio::test] preopens_are_readable_and_nothing_is_writable,
    #[tokio::test] a_thousand_sequential_events_reuse_instance_slots,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_events_beyond_the_slot_count_wait_for_a_slot,
    #[tokio::test] load_errors_are_config_errors_naming_the_module,
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)] per_event_cost,
}

fn config(rt: WasmRuntime, module: &str) -> WasmConfig {
    WasmConfig {
        module: module.into(),
        runtime: rt,
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
fn chain(rt: WasmRuntime, name: &str, f: impl FnOnce(&mut WasmConfig)) -> InterceptorChain {
    let (dir, file) = module_file(name);
    let mut c = config(rt, &file);
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

async fn echo_passes_the_event_through_unchanged(rt: WasmRuntime) {
    let out = chain(rt, "echo", |_| {}).apply(event()).await.unwrap();
    assert_eq!(
        out,
        ChainOutcome::Continue {
            event: event(),
            failed_open: 0
        }
    );
}

async fn the_upstream_example_replaces_data_and_keeps_attributes(rt: WasmRuntime) {
    let out = chain(rt, "uppercase", |_| {}).apply(event()).await.unwrap();
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

async fn a_missing_headers_object_is_passed_as_empty(rt: WasmRuntime) {
    let mut input = event();
    input.as_object_mut().unwrap().remove("headers");
    let ChainOutcome::Continue { event: out, .. } =
        chain(rt, "echo", |_| {}).apply(input).await.unwrap()
    else {
        panic!("not continued")
    };
    assert_eq!(out["headers"], json!({}));
}

async fn a_rejection_stops_the_chain(rt: WasmRuntime) {
    let (dir, reject) = module_file("reject");
    let (_, upper) = module_file("uppercase");
    let chain = chain_of(vec![config(rt, &reject), config(rt, &upper)], &dir);
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

async fn interceptors_run_in_order(rt: WasmRuntime) {
    let (dir, upper) = module_file("uppercase");
    let (_, echo) = module_file("echo");
    let chain = chain_of(vec![config(rt, &upper), config(rt, &echo)], &dir);
    let ChainOutcome::Continue { event: out, .. } = chain.apply(event()).await.unwrap() else {
        panic!("not continued")
    };
    assert_eq!(out["data"], json!({"key": "VALUE"}));
}

async fn garbage_output_fails_naming_the_module(rt: WasmRuntime) {
    let err = failure(&chain(rt, "garbage", |_| {})).await;
    assert!(matches!(err.kind, FailureKind::InvalidOutput(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("garbage.wasm") && text.contains("not one JSON value"),
        "{text}"
    );
}

async fn a_trap_fails_with_the_guest_stderr(rt: WasmRuntime) {
    let err = failure(&chain(rt, "trap", |_| {})).await;
    let FailureKind::Trap { message, stderr } = &err.kind else {
        panic!("{err}")
    };
    assert!(message.contains("unreachable"), "{message}");
    assert_eq!(stderr, "boom");
    assert!(err.to_string().contains("(stderr: boom)"), "{err}");
}

async fn a_non_zero_exit_code_fails(rt: WasmRuntime) {
    let err = failure(&chain(rt, "exit", |_| {})).await;
    assert!(
        matches!(err.kind, FailureKind::Exit { code: 3, .. }),
        "{err}"
    );
}

async fn an_endless_loop_hits_the_timeout(rt: WasmRuntime) {
    let timeout = Duration::from_millis(100);
    let started = Instant::now();
    let err = failure(&chain(rt, "loop", |c| c.timeout = Some(timeout))).await;
    assert_eq!(err.kind, FailureKind::Timeout(timeout), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn a_guest_blocked_in_a_host_call_hits_the_timeout(rt: WasmRuntime) {
    let timeout = Duration::from_millis(100);
    let started = Instant::now();
    let err = failure(&chain(rt, "sleep", |c| c.timeout = Some(timeout))).await;
    assert_eq!(err.kind, FailureKind::Timeout(timeout), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn fuel_bounds_the_instructions(rt: WasmRuntime) {
    let err = failure(&chain(rt, "loop", |c| c.fuel = Some(1_000_000))).await;
    assert_eq!(err.kind, FailureKind::OutOfFuel(1_000_000), "{err}");
    // Enough fuel for a real answer.
    let ok = chain(rt, "uppercase", |c| c.fuel = Some(1_000_000));
    assert!(ok.apply(event()).await.is_ok());
}

async fn the_memory_limit_is_enforced(rt: WasmRuntime) {
    let err = failure(&chain(rt, "grow", |c| {
        c.memory_limit = Some(ByteSize::mib(8))
    }))
    .await;
    assert!(
        matches!(err.kind, FailureKind::MemoryLimit { limit, .. } if limit == 8 << 20),
        "{err}"
    );
}

async fn stdout_beyond_max_output_size_fails(rt: WasmRuntime) {
    let err = failure(&chain(rt, "big_output", |c| {
        c.max_output_size = Some(ByteSize::mib(1))
    }))
    .await;
    assert_eq!(err.kind, FailureKind::OutputTooLarge(1 << 20), "{err}");
}

async fn fail_open_passes_the_event_on_unchanged(rt: WasmRuntime) {
    let (dir, garbage) = module_file("garbage");
    let (_, trap) = module_file("trap");
    let (_, upper) = module_file("uppercase");
    let open = |m: &str| WasmConfig {
        fail_open: true,
        ..config(rt, m)
    };
    let chain = chain_of(vec![open(&garbage), open(&trap), config(rt, &upper)], &dir);
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

async fn env_and_args_reach_the_guest_and_nothing_else(rt: WasmRuntime) {
    let chain = chain(rt, "env", |c| {
        c.env.insert("GREETING".into(), "hello".into());
        c.env.insert("TARGET".into(), "world".into());
    });
    let out = chain.interceptors()[0].run_raw(Vec::new()).await.unwrap();
    assert_eq!(out, b"GREETING=hello\0TARGET=world\0");
}

async fn preopens_are_readable_and_nothing_is_writable(rt: WasmRuntime) {
    let host = std::env::temp_dir().join(format!(
        "fiso-interceptor-preopen-{}-{rt:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hello.txt"), "hello from the host").unwrap();
    let chain = chain(rt, "preopen", |c| {
        c.preopens = vec![Preopen {
            host_path: host.display().to_string(),
            guest_path: "/data".into(),
        }];
    });
    let out = chain.interceptors()[0].run_raw(Vec::new()).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "hello from the host denied denied denied denied"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("hello.txt")).unwrap(),
        "hello from the host"
    );
    assert!(!host.join("new.txt").exists());
}

async fn a_thousand_sequential_events_reuse_instance_slots(rt: WasmRuntime) {
    // More events than slots: a leaked slot would make this fail.
    let chain = chain(rt, "echo", |_| {});
    for _ in 0..1000 {
        assert!(matches!(
            chain.apply(event()).await.unwrap(),
            ChainOutcome::Continue { .. }
        ));
    }
}

/// Guests that may run at the same time on `rt`.
fn instance_slots(rt: WasmRuntime) -> usize {
    match rt {
        WasmRuntime::Wasmtime => wasmtime::POOL_SLOTS as usize,
        #[cfg(feature = "wasmer")]
        WasmRuntime::Wasmer => wasmer::MAX_INSTANCES,
        #[cfg(not(feature = "wasmer"))]
        WasmRuntime::Wasmer => unreachable!("no wasmer backend in this build"),
    }
}

async fn concurrent_events_beyond_the_slot_count_wait_for_a_slot(rt: WasmRuntime) {
    let chain = std::sync::Arc::new(chain(rt, "echo", |_| {}));
    let tasks: Vec<_> = (0..(instance_slots(rt) * 2))
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.apply(event()).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
}

/// wasmer runs a guest on a blocking thread: an event whose caller gave up must still stop its
/// guest at the deadline, not leave it spinning.
#[cfg(feature = "wasmer")]
#[tokio::test]
async fn a_cancelled_wasmer_event_still_stops_its_guest() {
    let chain = chain(WasmRuntime::Wasmer, "loop", |c| {
        c.timeout = Some(Duration::from_millis(200))
    });
    let Backend::Wasmer(module) = &chain.interceptors()[0].backend else {
        unreachable!("runtime: wasmer")
    };
    let cancelled = tokio::time::timeout(Duration::from_millis(20), chain.apply(event())).await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    assert_eq!(module.runs_in_flight(), 1);
    let started = Instant::now();
    while module.runs_in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the guest still runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn apply_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let chain = InterceptorChain::default();
    assert_send(chain.apply(event()));
}

async fn load_errors_are_config_errors_naming_the_module(rt: WasmRuntime) {
    let (dir, _) = module_file("echo");
    let build = |c: WasmConfig| {
        InterceptorChain::build(&[InterceptorSpec::Wasm(c)], Some(&dir)).unwrap_err()
    };
    let missing = build(config(rt, "missing.wasm"));
    assert_eq!(missing.code(), "CONFIG_INVALID");
    assert!(
        matches!(missing.kind, BuildErrorKind::Read { .. }),
        "{missing}"
    );
    assert!(missing
        .to_string()
        .starts_with("interceptors[0] (module `missing.wasm`)"));

    std::fs::write(dir.join("text.wasm"), "hello").unwrap();
    let invalid = build(config(rt, "text.wasm"));
    assert!(
        matches!(invalid.kind, BuildErrorKind::Compile(_)),
        "{invalid}"
    );

    let (_, library) = module_file("library");
    let err = build(config(rt, &library));
    assert!(matches!(err.kind, BuildErrorKind::NotCommand(_)), "{err}");
    let (_, wasix) = module_file("wasix");
    let err = build(config(rt, &wasix));
    assert!(
        matches!(&err.kind, BuildErrorKind::NotCommand(m) if m.contains("sock_open")),
        "{err}"
    );

    let (_, echo) = module_file("echo");
    let too_big = build(WasmConfig {
        memory_limit: Some(ByteSize::mib(2048)),
        ..config(rt, &echo)
    });
    assert!(
        matches!(too_big.kind, BuildErrorKind::Limit(_)),
        "{too_big}"
    );
    let zero = build(WasmConfig {
        timeout: Some(Duration::ZERO),
        ..config(rt, &echo)
    });
    assert!(matches!(zero.kind, BuildErrorKind::Limit(_)), "{zero}");
    let preopen = build(WasmConfig {
        preopens: vec![Preopen {
            host_path: "no-such-dir".into(),
            guest_path: "/data".into(),
        }],
        ..config(rt, &echo)
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
        &[InterceptorSpec::Wasm(config(WasmRuntime::Wasmer, &echo))],
        Some(&dir),
    )
    .unwrap_err();
    assert!(matches!(err.kind, BuildErrorKind::WasmerNotBuilt));
    let text = err.to_string();
    assert!(
        text.contains("runtime: wasmer is not available in this build: it needs the `wasmer` cargo feature (cargo build -p fiso --features wasmer)"),
        "{text}"
    );
    assert!(!text.contains("not implemented"), "{text}");
}

#[test]
fn a_changed_module_file_is_detected() {
    let dir = std::env::temp_dir().join(format!("fiso-interceptor-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.wasm");
    std::fs::write(&path, ::wat::parse_str(wat("echo")).unwrap()).unwrap();
    let chain = chain_of(vec![config(WasmRuntime::Wasmtime, "m.wasm")], &dir);
    let before = chain.interceptors()[0].content_hash();
    assert!(!chain.modules_changed());
    std::fs::write(&path, ::wat::parse_str(wat("uppercase")).unwrap()).unwrap();
    assert!(chain.modules_changed());
    let reloaded = chain_of(vec![config(WasmRuntime::Wasmtime, "m.wasm")], &dir);
    assert_ne!(reloaded.interceptors()[0].content_hash(), before);
    assert!(!reloaded.modules_changed());
}

/// Not an assertion: prints the per-event cost of the echo module (`cargo test -p fiso-flow
/// --lib interceptor::tests::on_wasmtime::per_event_cost -- --nocapture`, or `on_wasmer::` with
/// the `wasmer` feature).
async fn per_event_cost(rt: WasmRuntime) {
    const N: u32 = 2000;
    let chain = chain(rt, "echo", |_| {});
    for _ in 0..100 {
        chain.apply(event()).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..N {
        chain.apply(event()).await.unwrap();
    }
    let inline = started.elapsed() / N;

    // The extra cost of one hop to the blocking pool and back (wasmtime could run guests that
    // way; wasmer does).
    let started = Instant::now();
    for _ in 0..N {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
    }
    let hop = started.elapsed() / N;
    println!("echo interceptor on {rt:?}: {inline:?} per event; spawn_blocking hop alone: {hop:?}");
}
