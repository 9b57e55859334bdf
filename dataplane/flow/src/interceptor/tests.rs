//! The Flow contract on the engine. Guest modules are built from the WAT sources of
//! `dataplane/wasm/testdata/` (no wasm32 target needed); each is written to a temporary `.wasm`
//! file and loaded like a configured module. What only concerns the engine (env, preopens, load
//! errors, module changes, cancellation) is tested in `fiso-wasm`.
//!
//! The contract tests are written once, as `async fn test(rt: WasmRuntime)`, and run on every
//! backend of the build by [`on_every_runtime!`]: `on_wasmtime::<test>` and, with the cargo
//! feature `wasmer`, `on_wasmer::<test>`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fiso_config::common::ByteSize;
use fiso_config::flow::{InterceptorSpec, WasmConfig, WasmRuntime};
use serde_json::{json, Value};

use super::*;

fn wat(name: &str) -> &'static str {
    match name {
        "echo" => include_str!("../../../wasm/testdata/echo.wat"),
        "uppercase" => include_str!("../../../wasm/testdata/uppercase.wat"),
        "reject" => include_str!("../../../wasm/testdata/reject.wat"),
        "garbage" => include_str!("../../../wasm/testdata/garbage.wat"),
        "trap" => include_str!("../../../wasm/testdata/trap.wat"),
        "exit" => include_str!("../../../wasm/testdata/exit.wat"),
        "loop" => include_str!("../../../wasm/testdata/loop.wat"),
        "grow" => include_str!("../../../wasm/testdata/grow.wat"),
        "big_output" => include_str!("../../../wasm/testdata/big_output.wat"),
        "sleep" => include_str!("../../../wasm/testdata/sleep.wat"),
        "env" => include_str!("../../../wasm/testdata/env.wat"),
        "library" => include_str!("../../../wasm/testdata/library.wat"),
        "wasix" => include_str!("../../../wasm/testdata/wasix.wat"),
        "preopen" => include_str!("../../../wasm/testdata/preopen.wat"),
        other => panic!("no testdata/{other}.wat"),
    }
}

/// Writes `testdata/<name>.wat` as `<tmp>/<name>.wasm`; returns the directory and file name.
/// Tests run in parallel and share the directory, so the file is written aside and renamed into
/// place: a test loading it never sees another test's half-written copy.
fn module_file(name: &str) -> (PathBuf, String) {
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("fiso-interceptor-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("{name}.wasm");
    let bytes = ::wat::parse_str(wat(name)).unwrap_or_else(|e| panic!("{name}.wat: {e}"));
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = dir.join(format!(".{file}.{n}"));
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, dir.join(&file)).unwrap();
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
    #[tokio::test] a_thousand_sequential_events_reuse_instance_slots,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_events_beyond_the_slot_count_wait_for_a_slot,
    #[tokio::test] a_load_error_names_the_interceptor,
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
    InterceptorChain::build(&specs, Some(base), &Default::default()).unwrap()
}

/// A chain of one testdata module, tweaked by `f`.
pub(crate) fn chain(
    rt: WasmRuntime,
    name: &str,
    f: impl FnOnce(&mut WasmConfig),
) -> InterceptorChain {
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

async fn concurrent_events_beyond_the_slot_count_wait_for_a_slot(rt: WasmRuntime) {
    let chain = std::sync::Arc::new(chain(rt, "echo", |_| {}));
    let tasks: Vec<_> = (0..(fiso_wasm::instance_slots(rt) * 2))
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

async fn a_load_error_names_the_interceptor(rt: WasmRuntime) {
    let (dir, _) = module_file("echo");
    let (_, echo) = module_file("echo");
    let err = InterceptorChain::build(
        &[
            InterceptorSpec::Wasm(config(rt, &echo)),
            InterceptorSpec::Wasm(config(rt, "missing.wasm")),
        ],
        Some(&dir),
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "CONFIG_INVALID");
    assert!(matches!(err.kind, BuildErrorKind::Read { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("interceptors[1] (module `missing.wasm`)"),
        "{err}"
    );
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
