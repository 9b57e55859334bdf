//! Engine tests: what a module sees (env, args, preopens), load errors, module changes,
//! cancellation, `runtime: wazero`. Guest modules are built from the WAT sources of `testdata/`
//! (no wasm32 target needed); each is written to a temporary `.wasm` file and loaded like a
//! configured module. Tests written once as `async fn test(rt: WasmRuntime)` run on every
//! backend of the build ([`on_every_runtime!`]). The contracts (Flow's CloudEvent JSON, Link's
//! HTTP JSON) are tested in their crates.

use std::path::PathBuf;
use std::time::Duration;
#[cfg(feature = "wasmer")]
use std::time::Instant;

use fiso_config::common::ByteSize;
use fiso_config::flow::{Preopen, WasmConfig, WasmRuntime};

use super::*;

fn wat(name: &str) -> String {
    let path = format!("{}/testdata/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes `testdata/<name>.wat` as `<tmp>/<name>.wasm`; returns the directory and file name.
/// Tests run in parallel and share the directory, so the file is written aside and renamed into
/// place: a test loading it never sees another test's half-written copy.
fn module_file(name: &str) -> (PathBuf, String) {
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("fiso-wasm-tests-{}", std::process::id()));
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
    #[tokio::test] env_and_args_reach_the_guest_and_nothing_else,
    #[tokio::test] preopens_are_readable_and_nothing_is_writable,
    #[tokio::test] load_errors_are_config_errors,
    #[tokio::test] failures_are_typed,
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

/// One testdata module, its config tweaked by `f`.
fn load(rt: WasmRuntime, name: &str, f: impl FnOnce(&mut WasmConfig)) -> Module {
    let (dir, file) = module_file(name);
    let mut c = config(rt, &file);
    f(&mut c);
    Module::load(&c, Some(&dir)).unwrap()
}

async fn env_and_args_reach_the_guest_and_nothing_else(rt: WasmRuntime) {
    let module = load(rt, "env", |c| {
        c.env.insert("GREETING".into(), "hello".into());
        c.env.insert("TARGET".into(), "world".into());
    });
    let out = module.run_raw(Vec::new()).await.unwrap();
    assert_eq!(out, b"GREETING=hello\0TARGET=world\0");
}

async fn preopens_are_readable_and_nothing_is_writable(rt: WasmRuntime) {
    let host =
        std::env::temp_dir().join(format!("fiso-wasm-preopen-{}-{rt:?}", std::process::id()));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hello.txt"), "hello from the host").unwrap();
    let module = load(rt, "preopen", |c| {
        c.preopens = vec![Preopen {
            host_path: host.display().to_string(),
            guest_path: "/data".into(),
        }];
    });
    let out = module.run_raw(Vec::new()).await.unwrap();
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

async fn failures_are_typed(rt: WasmRuntime) {
    let fail = |name: &str, f: fn(&mut WasmConfig)| {
        let module = load(rt, name, f);
        async move { module.run_raw(b"{}".to_vec()).await.unwrap_err() }
    };
    let trap = fail("trap", |_| {}).await;
    assert_eq!(trap.code(), "INTERCEPTOR_FAILED");
    assert!(matches!(trap.kind, FailureKind::Trap { .. }), "{trap}");
    let timeout = fail("loop", |c| c.timeout = Some(Duration::from_millis(50))).await;
    assert_eq!(
        timeout.kind,
        FailureKind::Timeout(Duration::from_millis(50))
    );
    let fuel = fail("loop", |c| c.fuel = Some(10_000)).await;
    assert_eq!(fuel.kind, FailureKind::OutOfFuel(10_000));
    let big = fail("big_output", |c| c.max_output_size = Some(ByteSize(1024))).await;
    assert_eq!(big.kind, FailureKind::OutputTooLarge(1024));
}

async fn load_errors_are_config_errors(rt: WasmRuntime) {
    let (dir, _) = module_file("echo");
    let build = |c: WasmConfig| Module::load(&c, Some(&dir)).unwrap_err();
    let missing = build(config(rt, "missing.wasm"));
    assert!(matches!(missing, BuildErrorKind::Read { .. }), "{missing}");

    std::fs::write(dir.join("text.wasm"), "hello").unwrap();
    let invalid = build(config(rt, "text.wasm"));
    assert!(matches!(invalid, BuildErrorKind::Compile(_)), "{invalid}");

    let (_, library) = module_file("library");
    let err = build(config(rt, &library));
    assert!(matches!(err, BuildErrorKind::NotCommand(_)), "{err}");
    let (_, wasix) = module_file("wasix");
    let err = build(config(rt, &wasix));
    assert!(
        matches!(&err, BuildErrorKind::NotCommand(m) if m.contains("sock_open")),
        "{err}"
    );

    let (_, echo) = module_file("echo");
    let too_big = build(WasmConfig {
        memory_limit: Some(ByteSize::mib(2048)),
        ..config(rt, &echo)
    });
    assert!(matches!(too_big, BuildErrorKind::Limit(_)), "{too_big}");
    let zero = build(WasmConfig {
        timeout: Some(Duration::ZERO),
        ..config(rt, &echo)
    });
    assert!(matches!(zero, BuildErrorKind::Limit(_)), "{zero}");
    let preopen = build(WasmConfig {
        preopens: vec![Preopen {
            host_path: "no-such-dir".into(),
            guest_path: "/data".into(),
        }],
        ..config(rt, &echo)
    });
    assert!(
        matches!(preopen, BuildErrorKind::Preopen { .. }),
        "{preopen}"
    );
}

#[cfg(not(feature = "wasmer"))]
#[test]
fn runtime_wasmer_needs_the_feature() {
    let (dir, echo) = module_file("echo");
    let err = Module::load(&config(WasmRuntime::Wasmer, &echo), Some(&dir)).unwrap_err();
    assert!(matches!(err, BuildErrorKind::WasmerNotBuilt));
    let text = err.to_string();
    assert!(
        text.contains("runtime: wasmer is not available in this build: it needs the Wasmer build of fiso (the fiso-wasmer image, or cargo build -p fiso --features wasmer)"),
        "{text}"
    );
    assert!(!text.contains("not implemented"), "{text}");
}

/// Upstream's default runtime name loads and runs (on wasmtime, with a warning at load).
#[tokio::test]
async fn runtime_wazero_runs_on_wasmtime() {
    let module = load(WasmRuntime::Wazero, "uppercase", |_| {});
    assert!(matches!(module.backend, Backend::Wasmtime(_)));
    let out = module
        .run_raw(br#"{"data":{"key":"value"}}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        r#"{"data":{"key":"VALUE"}}"#
    );
    assert_eq!(
        instance_slots(WasmRuntime::Wazero),
        instance_slots(WasmRuntime::Wasmtime)
    );
}

#[test]
fn a_changed_module_file_is_detected() {
    let dir = std::env::temp_dir().join(format!("fiso-wasm-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.wasm");
    std::fs::write(&path, ::wat::parse_str(wat("echo")).unwrap()).unwrap();
    let c = config(WasmRuntime::Wasmtime, "m.wasm");
    let module = Module::load(&c, Some(&dir)).unwrap();
    let before = module.content_hash();
    let fp = fingerprint(["m.wasm"], Some(&dir));
    assert!(!module.is_stale());
    std::fs::write(&path, ::wat::parse_str(wat("uppercase")).unwrap()).unwrap();
    assert!(module.is_stale());
    assert_ne!(fingerprint(["m.wasm"], Some(&dir)), fp);
    let reloaded = Module::load(&c, Some(&dir)).unwrap();
    assert_ne!(reloaded.content_hash(), before);
    assert!(!reloaded.is_stale());
    std::fs::remove_file(&path).unwrap();
    assert!(
        reloaded.is_stale(),
        "an unreadable module counts as changed"
    );
}

/// wasmer runs a guest on a blocking thread: a call whose caller gave up must still stop its
/// guest at the deadline, not leave it spinning.
#[cfg(feature = "wasmer")]
#[tokio::test]
async fn a_cancelled_wasmer_event_still_stops_its_guest() {
    let loaded = load(WasmRuntime::Wasmer, "loop", |c| {
        c.timeout = Some(Duration::from_millis(200))
    });
    let Backend::Wasmer(module) = &loaded.backend else {
        unreachable!("runtime: wasmer")
    };
    let cancelled =
        tokio::time::timeout(Duration::from_millis(20), loaded.run_raw(b"{}".to_vec())).await;
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
