//! The `runtime: wasmer` backend (cargo feature `wasmer`): the same contract as the wasmtime
//! backend — a WASI preview 1 command module, the event on stdin, the answer on stdout, the same
//! limits and the same [`FailureKind`]s — run by wasmer 6 (Cranelift) with wasmer-wasix.
//!
//! How each part is built, and where it differs from wasmtime:
//!
//! * **Compilation**: once per module content and `fuel` budget ([`Compiled`], cached by SHA-256
//!   like wasmtime's), each with its own engine, because wasmer's `Metering` middleware is bound
//!   to the one module it instruments and bakes the initial budget into it.
//! * **Instantiation**: one fresh instance and store per event. wasmer has no pooling allocator,
//!   so each event maps (and unmaps) its linear memory and builds a WASIX environment: several
//!   times wasmtime's per-event cost (`per_event_cost` test: ~4.6 ms against ~0.6 ms for the echo
//!   module, debug build). [`MAX_INSTANCES`] bounds how many run at once, and an event waits for
//!   a slot within its timeout, as with wasmtime.
//! * **`timeout`** (wall clock): wasmer has no epoch interruption. Every module is compiled with
//!   the `Metering` middleware (1 point per operator; the `fuel` budget if set, else `u64::MAX`),
//!   and at the deadline a watchdog thread forces the instance's remaining points to 0, so the
//!   guest traps at its next branch, call or loop header; a guest sleeping in `poll_oneoff` is
//!   woken by a SIGKILL to its WASIX process. The reaction time is ~1 ms after the deadline (the
//!   watchdog sleeps until the earliest deadline, then rewrites every millisecond). See [`run`].
//!   The guest runs on a blocking thread (`spawn_blocking`) instead of yielding to the async
//!   runtime; that thread is never abandoned: a cancelled event still ends at its deadline.
//! * **`fuel`**: the same metering points, so a budget costs nothing more than the timeout does
//!   (wasmtime needs a second engine for it). One point is one WebAssembly operator, charged per
//!   basic block; wasmtime's fuel units are close but not identical.
//! * **`memoryLimit`**: custom tunables ([`tunables`]); a growth past the limit fails the event
//!   with `MemoryLimit`, as wasmtime's resource limiter does.
//! * **`maxOutputSize`**, stderr: in-memory capture ([`stdio`]), same results as wasmtime.
//! * **Filesystem**: an empty read-only root with the `preopens` mounted read-only ([`fs`]).
//! * **Imports**: only `wasi_snapshot_preview1`, checked at load. WASIX imports (threads,
//!   sockets, `proc_fork`) are refused like any other: extra threads would escape the limits,
//!   and interceptors have no network.

pub mod fs;
pub mod run;
pub mod stdio;
pub mod tunables;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use tokio::sync::Semaphore;
use wasmer::sys::wasmparser::Operator;
use wasmer::sys::{CompilerConfig, Cranelift, EngineBuilder, NativeEngineExt};
use wasmer::{Engine, Extern, ExternType, Module, RuntimeError, Store};
use wasmer_middlewares::metering::{get_remaining_points, MeteringPoints};
use wasmer_middlewares::Metering;
use wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager;
use wasmer_wasix::virtual_fs::StaticFile;
use wasmer_wasix::{
    generate_import_object_from_env, PluggableRuntime, WasiEnv, WasiError, WasiFunctionEnv,
    WasiVersion,
};

use self::run::{Disarm, Run, Stop, Watchdog};
use self::stdio::Capture;
use super::error::{BuildErrorKind, FailureKind};
use super::limits::Limits;

/// Guests that run at the same time (each on a blocking thread, with its own linear memory).
pub const MAX_INSTANCES: usize = 100;
/// What is kept of a guest's stderr for error messages.
const STDERR_KEEP: usize = 4096;
const WASI_P1: &str = "wasi_snapshot_preview1";

/// What every wasmer module of the process shares.
struct Shared {
    /// Where wasix runs its own async work (timers, host-filesystem calls) while the guest
    /// thread blocks on it. Not the caller's runtime: it must outlive any one of them.
    io: tokio::runtime::Runtime,
    wasi: Arc<PluggableRuntime>,
    slots: Arc<Semaphore>,
    watchdog: &'static Watchdog,
    /// Compiled modules by content hash and fuel budget; `Weak` so an unused module is freed.
    cache: Mutex<HashMap<CacheKey, Weak<Compiled>>>,
}

/// A module's SHA-256 and its `fuel` budget (compiled into the module by the metering middleware).
type CacheKey = ([u8; 32], Option<u64>);

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

fn shared() -> Result<&'static Shared, BuildErrorKind> {
    SHARED
        .get_or_init(Shared::new)
        .as_ref()
        .map_err(|e| BuildErrorKind::Engine(e.clone()))
}

impl Shared {
    fn new() -> Result<Self, String> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fiso-wasmer-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the wasmer I/O runtime: {e}"))?;
        // No networking implementation (wasix's default without `host-vnet`), no HTTP client,
        // no package loader: a guest reaches nothing but its stdio and preopens.
        let wasi = PluggableRuntime::new(Arc::new(TokioTaskManager::new(io.handle().clone())));
        Ok(Shared {
            io,
            wasi: Arc::new(wasi),
            slots: Arc::new(Semaphore::new(MAX_INSTANCES)),
            watchdog: Watchdog::get()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The compiled module for `bytes` and `fuel`, from the cache or compiled now.
    fn compile(
        &self,
        hash: [u8; 32],
        bytes: &[u8],
        fuel: Option<u64>,
    ) -> Result<Arc<Compiled>, BuildErrorKind> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(&(hash, fuel)).and_then(Weak::upgrade) {
            return Ok(hit);
        }
        cache.retain(|_, w| w.strong_count() > 0);
        let mut compiler = Cranelift::default();
        compiler.push_middleware(Arc::new(Metering::new(
            fuel.unwrap_or(u64::MAX),
            |_: &Operator| 1,
        )));
        let engine: Engine = EngineBuilder::new(compiler).into();
        let module =
            Module::new(&engine, bytes).map_err(|e| BuildErrorKind::Compile(e.to_string()))?;
        let is_command = module.exports().any(|e| {
            e.name() == "_start"
                && matches!(e.ty(), ExternType::Function(f) if f.params().is_empty() && f.results().is_empty())
        });
        if !is_command {
            return Err(BuildErrorKind::NotCommand(
                "it exports no `_start: func() -> ()` (build a WASI command, not a library)".into(),
            ));
        }
        self.check_imports(&engine, &module)?;
        let compiled = Arc::new(Compiled { engine, module });
        cache.insert((hash, fuel), Arc::downgrade(&compiled));
        Ok(compiled)
    }

    /// Refuses, at load, a module that imports anything but WASI preview 1 functions (with the
    /// types wasix gives them), instead of failing every event at instantiation.
    fn check_imports(&self, engine: &Engine, module: &Module) -> Result<(), BuildErrorKind> {
        let mut store = Store::new(engine.clone());
        let env = WasiEnv::builder("check")
            .runtime(self.wasi.clone())
            .build()
            .map_err(|e| BuildErrorKind::Engine(e.to_string()))?;
        let env = WasiFunctionEnv::new(&mut store, env);
        let wasi = generate_import_object_from_env(&mut store, &env.env, WasiVersion::Snapshot1);
        for import in module.imports() {
            let provided = match (wasi.get_export(import.module(), import.name()), import.ty()) {
                (Some(Extern::Function(f)), ExternType::Function(wanted)) => {
                    import.module() == WASI_P1 && f.ty(&store) == *wanted
                }
                _ => false,
            };
            if !provided {
                return Err(BuildErrorKind::NotCommand(format!(
                    "it imports `{}::{}`, which is not a WASI preview 1 function (only WASI \
                     preview 1 imports are available)",
                    import.module(),
                    import.name()
                )));
            }
        }
        Ok(())
    }
}

/// A module compiled (with metering) by its own engine.
struct Compiled {
    engine: Engine,
    module: Module,
}

/// A configured wasmer interceptor module.
pub(crate) struct WasmerModule(Arc<Config>);

struct Config {
    shared: &'static Shared,
    compiled: Arc<Compiled>,
    limits: Limits,
    arg0: String,
    env: Vec<(String, String)>,
    /// Guest paths of the preopens, mounted in `fs`.
    preopens: Vec<String>,
    fs: Arc<fs::ReadOnlyFs>,
}

impl WasmerModule {
    pub(crate) fn new(
        hash: [u8; 32],
        bytes: &[u8],
        limits: Limits,
        arg0: String,
        env: Vec<(String, String)>,
        preopens: Vec<(PathBuf, String)>,
    ) -> Result<Self, BuildErrorKind> {
        let shared = shared()?;
        let compiled = shared.compile(hash, bytes, limits.fuel)?;
        let fs = fs::root(&preopens, shared.io.handle().clone()).map_err(|message| {
            BuildErrorKind::Preopen {
                host_path: preopens
                    .iter()
                    .map(|(host, _)| host.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                message,
            }
        })?;
        Ok(WasmerModule(Arc::new(Config {
            shared,
            compiled,
            limits,
            arg0,
            env,
            preopens: preopens.into_iter().map(|(_, guest)| guest).collect(),
            fs,
        })))
    }

    /// Guests of this module still running (each holds the config), cancelled events included.
    #[cfg(test)]
    pub(crate) fn runs_in_flight(&self) -> usize {
        Arc::strong_count(&self.0) - 1
    }

    /// Runs the module once with `stdin`; returns its stdout.
    pub(crate) async fn run(&self, stdin: Vec<u8>) -> Result<Vec<u8>, FailureKind> {
        let config = self.0.clone();
        let timeout = config.limits.timeout;
        let deadline = Instant::now() + timeout;
        let permit =
            tokio::time::timeout_at(deadline.into(), config.shared.slots.clone().acquire_owned())
                .await
                .map_err(|_| FailureKind::NoSlot(timeout))?
                .expect("the slot semaphore is never closed");
        // If this future is dropped, the guest still stops at its deadline (the watchdog does
        // not depend on it) and only then frees its slot.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            config.run(stdin, deadline)
        })
        .await
        .unwrap_or_else(|e| {
            Err(FailureKind::Trap {
                message: format!("the wasmer host failed: {e}"),
                stderr: String::new(),
            })
        })
    }
}

impl Config {
    /// One run, on a thread that may block.
    fn run(&self, stdin: Vec<u8>, deadline: Instant) -> Result<Vec<u8>, FailureKind> {
        let run = Arc::new(Run::default());
        let _watch = self.shared.watchdog.watch(deadline, run.clone());
        let mut engine = self.compiled.engine.clone();
        engine.set_tunables(tunables::RunTunables::new(self.limits.memory, run.clone()));
        let mut store = Store::new(engine);
        // Dropped before `store`: nothing writes to the store's metering global once it is gone.
        let _disarm = Disarm(&run);
        let stdout = Capture::stdout(self.limits.max_output, run.clone());
        let stderr = Capture::stderr(STDERR_KEEP);
        let result = self.execute(&mut store, &run, stdin, &stdout, &stderr);
        match run.stopped() {
            Some(Stop::Timeout) => Err(FailureKind::Timeout(self.limits.timeout)),
            Some(Stop::MemoryLimit(wanted)) => Err(FailureKind::MemoryLimit {
                limit: self.limits.memory,
                wanted,
            }),
            Some(Stop::OutputTooLarge) => Err(FailureKind::OutputTooLarge(self.limits.max_output)),
            // Only the apps' supervisor stops a guest that way; an interceptor run is never told to.
            Some(Stop::Shutdown) => Err(FailureKind::Trap {
                message: "stopped by Fiso".into(),
                stderr: String::new(),
            }),
            None => result.map(|()| stdout.take()),
        }
    }

    /// Instantiates the module and runs `_start`. A failure here may be the consequence of a
    /// [`Stop`], which the caller reports instead.
    fn execute(
        &self,
        store: &mut Store,
        run: &Run,
        stdin: Vec<u8>,
        stdout: &Capture,
        stderr: &Capture,
    ) -> Result<(), FailureKind> {
        let mut builder = WasiEnv::builder(&self.arg0)
            .runtime(self.shared.wasi.clone())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Box::new(StaticFile::new(stdin)))
            .stdout(Box::new(stdout.clone()))
            .stderr(Box::new(stderr.clone()))
            .fs(Box::new(self.fs.clone()));
        for guest in &self.preopens {
            builder
                .add_preopen_build(|p| p.directory(fs::guest_path(guest)).alias(guest).read(true))
                .map_err(|e| FailureKind::Instantiate(format!("preopen {guest}: {e}")))?;
        }
        let (instance, env) = builder
            .instantiate(self.compiled.module.clone(), &mut *store)
            .map_err(|e| FailureKind::Instantiate(e.to_string()))?;
        run.set_process(env.data(store).process.clone());
        let start = instance
            .exports
            .get_function("_start")
            .map_err(|e| FailureKind::Instantiate(e.to_string()))?
            .clone();
        let result = start.call(&mut *store, &[]);
        let exit = result.as_ref().err().and_then(exit_code);
        // What wasmer's own runners do after `_start`: close the guest's files, end its process.
        env.on_exit(&mut *store, Some(exit.unwrap_or_default().into()));
        match (result, exit) {
            (Ok(_), _) | (Err(_), Some(0)) => Ok(()),
            (Err(_), Some(code)) => Err(FailureKind::Exit {
                code,
                stderr: stderr.text(),
            }),
            (Err(_), None)
                if get_remaining_points(&mut *store, &instance) == MeteringPoints::Exhausted =>
            {
                Err(FailureKind::OutOfFuel(self.limits.fuel.unwrap_or_default()))
            }
            (Err(e), None) => Err(FailureKind::Trap {
                message: e.message(),
                stderr: stderr.text(),
            }),
        }
    }
}

/// The code of a `proc_exit` (which wasix reports as an error, 0 included).
fn exit_code(e: &RuntimeError) -> Option<i32> {
    match e.downcast_ref::<WasiError>() {
        Some(WasiError::Exit(code)) => Some(code.raw()),
        _ => None,
    }
}
