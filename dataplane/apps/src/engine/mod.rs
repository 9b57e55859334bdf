//! Running one WASIX guest under wasmer 6 (Cranelift) with wasmer-wasix: compile, instantiate
//! with its environment, stdio, preopens and host networking, call `_start` on the current
//! (blocking) thread, and say how it ended.
//!
//! * **Compilation**: once per module content ([`compile`], cached by SHA-256 while in use),
//!   with the `Metering` middleware (an unlimited budget) so that a guest can be stopped from
//!   outside by forcing its points to 0 ([`Run`]); a guest blocked in a host call is woken by a
//!   SIGKILL to its WASIX process.
//! * **Memory**: `memoryMB` through per-run tunables ([`tunables`]); growing past it stops the
//!   guest with [`Exit::MemoryLimit`].
//! * **Networking**: the host network (`virtual-net`'s `host-net`) behind [`net::HostNet`], which binds
//!   a listener asking for "any address" to the app's `listenHost` (loopback by default).
//! * **Imports**: WASI preview 1 and WASIX 32-bit (`wasix_32v1`); anything else is refused at
//!   load with the import named.

mod logs;
mod net;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use wasmer::sys::wasmparser::Operator;
use wasmer::sys::{CompilerConfig, Cranelift, EngineBuilder, NativeEngineExt};
use wasmer::{Engine, ExternType, Function, Module, RuntimeError, Store};
use wasmer_middlewares::Metering;
use wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager;
use wasmer_wasix::virtual_fs::VirtualFile;
use wasmer_wasix::{PluggableRuntime, WasiEnv, WasiError, WasiFunctionEnv};

use fiso_wasm::wasmer::run::{Run, Stop, Watchdog};
pub(crate) use fiso_wasm::wasmer::stdio::Capture;
use fiso_wasm::wasmer::{fs, tunables};

pub(crate) use self::logs::LogLines;

const IMPORT_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasix_32v1"];

/// What every app of the process shares.
pub(crate) struct Shared {
    /// Where wasix runs its async work (sockets, timers, host files) while guest threads block
    /// on it: not a caller's runtime, it must outlive any of them.
    io: tokio::runtime::Runtime,
    pub(crate) watchdog: &'static Watchdog,
    cache: Mutex<HashMap<[u8; 32], Weak<Compiled>>>,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

pub(crate) fn shared() -> Result<&'static Shared, String> {
    SHARED
        .get_or_init(Shared::new)
        .as_ref()
        .map_err(Clone::clone)
}

impl Shared {
    fn new() -> Result<Self, String> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fiso-apps-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the apps I/O runtime: {e}"))?;
        Ok(Shared {
            io,
            watchdog: Watchdog::get()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The compiled module for `bytes` (SHA-256 `hash`), from the cache or compiled now.
    pub(crate) fn compile(&self, hash: [u8; 32], bytes: &[u8]) -> Result<Arc<Compiled>, String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(&hash).and_then(Weak::upgrade) {
            return Ok(hit);
        }
        cache.retain(|_, w| w.strong_count() > 0);
        let mut compiler = Cranelift::default();
        compiler.push_middleware(Arc::new(Metering::new(u64::MAX, |_: &Operator| 1)));
        let engine: Engine = EngineBuilder::new(compiler).into();
        let module = Module::new(&engine, bytes).map_err(|e| format!("not a valid module: {e}"))?;
        let is_command = module.exports().any(|e| {
            e.name() == "_start"
                && matches!(e.ty(), ExternType::Function(f) if f.params().is_empty() && f.results().is_empty())
        });
        if !is_command {
            return Err(
                "it exports no `_start: func() -> ()` (build a WASI command, not a library)".into(),
            );
        }
        if let Some(import) = module
            .imports()
            .find(|i| !IMPORT_MODULES.contains(&i.module()))
        {
            return Err(format!(
                "it imports `{}::{}`; apps may import only WASI preview 1 \
                 (`wasi_snapshot_preview1`) and WASIX (`wasix_32v1`)",
                import.module(),
                import.name()
            ));
        }
        let compiled = Arc::new(Compiled { engine, module });
        cache.insert(hash, Arc::downgrade(&compiled));
        Ok(compiled)
    }

    /// A wasix runtime whose listeners on "any address" bind to `listen_host`.
    pub(crate) fn wasi_runtime(&self, listen_host: IpAddr) -> Arc<PluggableRuntime> {
        // Both constructors look up the current Tokio runtime for their socket reactor.
        let _enter = self.io.enter();
        let mut rt =
            PluggableRuntime::new(Arc::new(TokioTaskManager::new(self.io.handle().clone())));
        rt.set_networking_implementation(net::HostNet::new(listen_host));
        Arc::new(rt)
    }

    pub(crate) fn io(&self) -> tokio::runtime::Handle {
        self.io.handle().clone()
    }

    pub(crate) fn preopen_fs(
        &self,
        preopens: &[(PathBuf, String)],
    ) -> Result<Arc<fs::ReadOnlyFs>, String> {
        fs::root(preopens, self.io.handle().clone())
    }
}

/// A module compiled (with metering) by its own engine.
pub(crate) struct Compiled {
    engine: Engine,
    module: Module,
}

/// Everything one guest run needs, built once per app (and per reload).
pub(crate) struct Guest {
    pub(crate) app: String,
    pub(crate) compiled: Arc<Compiled>,
    pub(crate) wasi: Arc<PluggableRuntime>,
    pub(crate) memory_limit: u64,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) preopens: Vec<String>,
    pub(crate) fs: Arc<fs::ReadOnlyFs>,
    /// The wasix I/O runtime, entered by the guest thread: wasix looks it up while building
    /// the environment.
    pub(crate) io: tokio::runtime::Handle,
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Exit {
    /// `proc_exit(code)` or a return from `_start` (0).
    Code(i32),
    Trap(String),
    MemoryLimit {
        limit: u64,
        wanted: u64,
    },
    Timeout,
    OutputTooLarge,
    /// Stopped by Fiso (shutdown, reload).
    Stopped,
    /// Could not be instantiated (a missing import, a preopen).
    Instantiate(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Trap(m) => write!(f, "trapped: {m}"),
            Exit::MemoryLimit { limit, wanted } => write!(
                f,
                "memory limit exceeded: the guest asked for {wanted} bytes of linear memory, memoryMB allows {limit}"
            ),
            Exit::Timeout => f.write_str("timed out"),
            Exit::OutputTooLarge => f.write_str("wrote more than the output limit"),
            Exit::Stopped => f.write_str("stopped"),
            Exit::Instantiate(m) => write!(f, "cannot be instantiated: {m}"),
        }
    }
}

/// The standard streams of one run.
pub(crate) struct Stdio {
    pub(crate) stdin: Box<dyn VirtualFile + Send + Sync>,
    pub(crate) stdout: Box<dyn VirtualFile + Send + Sync>,
    pub(crate) stderr: Box<dyn VirtualFile + Send + Sync>,
}

impl Guest {
    /// Runs the guest to its end on this thread. `run` is the handle that stops it.
    pub(crate) fn run(&self, run: &Arc<Run>, stdio: Stdio) -> Exit {
        match self.instantiate(run.clone(), stdio) {
            Ok(instance) => instance.start(),
            Err(exit) => exit,
        }
    }

    /// Instantiates the guest on this thread without starting it: what a pooled app keeps warm.
    /// `run` stops it, during instantiation or later.
    pub(crate) fn instantiate(&self, run: Arc<Run>, stdio: Stdio) -> Result<Instance, Exit> {
        let _io = self.io.enter();
        let mut engine = self.compiled.engine.clone();
        engine.set_tunables(tunables::RunTunables::new(self.memory_limit, run.clone()));
        let mut armed = Armed {
            store: Store::new(engine),
            run,
        };
        let instantiated = self.build(&mut armed.store, &armed.run, stdio);
        let (start, env) = instantiated.map_err(|e| outcome(&armed.run, self.memory_limit, e))?;
        Ok(Instance {
            armed,
            start,
            env,
            io: self.io.clone(),
            memory_limit: self.memory_limit,
            started: false,
        })
    }

    fn build(
        &self,
        store: &mut Store,
        run: &Run,
        stdio: Stdio,
    ) -> Result<(Function, WasiFunctionEnv), Exit> {
        let mut builder = WasiEnv::builder(&self.app)
            .runtime(self.wasi.clone())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr)
            .fs(Box::new(self.fs.clone()));
        for guest in &self.preopens {
            builder
                .add_preopen_build(|p| p.directory(fs::guest_path(guest)).alias(guest).read(true))
                .map_err(|e| Exit::Instantiate(format!("preopen {guest}: {e}")))?;
        }
        let (instance, env) = builder
            .instantiate(self.compiled.module.clone(), &mut *store)
            .map_err(|e| Exit::Instantiate(e.to_string()))?;
        run.set_process(env.data(store).process.clone());
        let start = instance
            .exports
            .get_function("_start")
            .map_err(|e| Exit::Instantiate(e.to_string()))?
            .clone();
        Ok((start, env))
    }
}

/// A store whose metering global a [`Run`] may write to: dropping it disarms the run first.
struct Armed {
    store: Store,
    run: Arc<Run>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        // Runs before the fields are dropped: nothing writes to the store's global once it is gone.
        self.run.disarm();
    }
}

/// An instantiated guest whose `_start` has not run yet. It may move to another thread before
/// it starts; dropping it unstarted releases its process like an exit.
pub(crate) struct Instance {
    armed: Armed,
    start: Function,
    env: WasiFunctionEnv,
    io: tokio::runtime::Handle,
    memory_limit: u64,
    started: bool,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.started {
            let _io = self.io.enter();
            self.env.on_exit(&mut self.armed.store, Some(0.into()));
        }
    }
}

impl Instance {
    /// Runs `_start` to its end on this thread.
    pub(crate) fn start(mut self) -> Exit {
        let _io = self.io.enter();
        self.started = true;
        let store = &mut self.armed.store;
        let result = self.start.call(&mut *store, &[]);
        let exit = result.as_ref().err().and_then(exit_code);
        // What wasmer's own runners do after `_start`: close the guest's files and sockets.
        self.env
            .on_exit(&mut *store, Some(exit.unwrap_or_default().into()));
        let exit = match (result, exit) {
            (Ok(_), _) => Exit::Code(0),
            (Err(_), Some(code)) => Exit::Code(code),
            (Err(e), None) => Exit::Trap(e.message()),
        };
        outcome(&self.armed.run, self.memory_limit, exit)
    }

    pub(crate) fn run(&self) -> &Arc<Run> {
        &self.armed.run
    }
}

/// How a run ended: the reason it was stopped from outside, if any, else its own `exit`.
fn outcome(run: &Run, memory_limit: u64, exit: Exit) -> Exit {
    match run.stopped() {
        Some(Stop::Timeout) => Exit::Timeout,
        Some(Stop::MemoryLimit(wanted)) => Exit::MemoryLimit {
            limit: memory_limit,
            wanted,
        },
        Some(Stop::OutputTooLarge) => Exit::OutputTooLarge,
        Some(Stop::Shutdown) => Exit::Stopped,
        None => exit,
    }
}

/// The code of a `proc_exit` (which wasix reports as an error, 0 included).
fn exit_code(e: &RuntimeError) -> Option<i32> {
    match e.downcast_ref::<WasiError>() {
        Some(WasiError::Exit(code)) => Some(code.raw()),
        _ => None,
    }
}

pub(crate) use fiso_wasm::wasmer::run::Run as RunHandle;
pub(crate) use fiso_wasm::wasmer::run::Stop as StopReason;
