//! The wasmtime backend: WASI preview 1 command modules, one fresh instance per event.
//!
//! Cost model, and why it is built this way:
//!
//! * One [`Engine`] per process (two if some interceptor sets `fuel`: fuel metering slows every
//!   guest down, so modules without a budget run on an engine without it). Each engine owns a
//!   pooling instance allocator of [`POOL_SLOTS`] slots, so instantiation is a few `memcpy`s and
//!   `madvise`s instead of `mmap`s, and a ticker thread that advances its epoch every
//!   [`EPOCH_TICK`] (the timeout mechanism: epoch checks are far cheaper than fuel).
//! * A module is compiled once per content hash and engine ([`Compiled`], shared by every flow
//!   that uses the same bytes) and its imports are resolved once ([`InstancePre`]).
//! * Guests run with `call_async` on the caller's task: every epoch tick the guest yields to the
//!   Tokio scheduler (so a busy guest does not starve I/O tasks for more than one tick), and the
//!   whole run sits under `tokio::time::timeout_at`, which also bounds a guest blocked in a host
//!   call (e.g. `poll_oneoff` sleeping), something epoch interruption alone cannot do.
//! * A semaphore of [`POOL_SLOTS`] permits bounds the instances in flight, so an event waits for a
//!   slot (within its timeout) instead of failing with "pool exhausted".

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::preview1::WasiP1Ctx;
use wasmtime_wasi::{DirPerms, FilePerms, I32Exit, WasiCtxBuilder};

use super::error::{BuildErrorKind, FailureKind};
use super::limits::{Limits, MAX_MEMORY_LIMIT};

/// Instances (and linear memories, tables, fiber stacks) each engine's pool holds; also the
/// number of guests that run at the same time per engine.
pub const POOL_SLOTS: u32 = 100;
/// Epoch period: the granularity of `timeout` and of the guest's yields to the scheduler.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Table elements per slot: Go `wasip1` binaries put every function in one table (tens of
/// thousands of entries); 8 bytes each, reserved virtually.
const TABLE_ELEMENTS: usize = 100_000;
/// What is kept of a guest's stderr for error messages.
const STDERR_KEEP: usize = 4096;

/// A process-wide engine and what goes with it.
struct EngineState {
    engine: Engine,
    linker: Linker<Host>,
    slots: Semaphore,
    /// Compiled modules by content hash; `Weak` so a module no flow uses any more is freed.
    cache: Mutex<HashMap<[u8; 32], Weak<Compiled>>>,
}

static PLAIN: OnceLock<Result<EngineState, String>> = OnceLock::new();
static FUELED: OnceLock<Result<EngineState, String>> = OnceLock::new();

fn engine_state(fuel: bool) -> Result<&'static EngineState, BuildErrorKind> {
    let cell = if fuel { &FUELED } else { &PLAIN };
    cell.get_or_init(|| EngineState::new(fuel).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| BuildErrorKind::Engine(e.clone()))
}

impl EngineState {
    fn new(fuel: bool) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .total_stacks(POOL_SLOTS)
            .max_memory_size(MAX_MEMORY_LIMIT as usize)
            .table_elements(TABLE_ELEMENTS);
        let mut config = Config::new();
        config
            .async_support(true)
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::preview1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("fiso-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(EngineState {
            engine,
            linker,
            slots: Semaphore::new(POOL_SLOTS as usize),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The compiled module for `bytes`, from the cache or compiled now (CPU-heavy: seconds for
    /// a large Go binary).
    fn compile(&self, hash: [u8; 32], bytes: &[u8]) -> Result<Arc<Compiled>, BuildErrorKind> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(&hash).and_then(Weak::upgrade) {
            return Ok(hit);
        }
        cache.retain(|_, w| w.strong_count() > 0);
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| BuildErrorKind::Compile(format!("{e:#}")))?;
        let is_command = matches!(
            module.get_export("_start"),
            Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0
        );
        if !is_command {
            return Err(BuildErrorKind::NotCommand(
                "it exports no `_start: func() -> ()` (build a WASI command, not a library)".into(),
            ));
        }
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            BuildErrorKind::NotCommand(format!("{e:#} (only WASI preview 1 imports are available)"))
        })?;
        let compiled = Arc::new(Compiled { pre });
        cache.insert(hash, Arc::downgrade(&compiled));
        Ok(compiled)
    }
}

/// A module compiled for one engine with its imports resolved.
struct Compiled {
    pre: InstancePre<Host>,
}

/// The per-event store data.
struct Host {
    wasi: WasiP1Ctx,
    memory_limit: u64,
    /// Set when the guest asked for more memory than allowed (the size it asked for).
    memory_exceeded: Option<u64>,
    /// Set by the epoch callback when the deadline passed.
    timed_out: bool,
}

impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            self.memory_exceeded = Some(desired as u64);
            // An error (not `Ok(false)`) turns the failed `memory.grow` into a trap: a guest
            // allocator that retries or spins would otherwise only end at the timeout.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }
}

/// A configured wasmtime interceptor module.
pub(crate) struct WasmtimeModule {
    state: &'static EngineState,
    compiled: Arc<Compiled>,
    limits: Limits,
    arg0: String,
    env: Vec<(String, String)>,
    preopens: Vec<(PathBuf, String)>,
}

impl WasmtimeModule {
    pub(crate) fn new(
        hash: [u8; 32],
        bytes: &[u8],
        limits: Limits,
        arg0: String,
        env: Vec<(String, String)>,
        preopens: Vec<(PathBuf, String)>,
    ) -> Result<Self, BuildErrorKind> {
        let state = engine_state(limits.fuel.is_some())?;
        let compiled = state.compile(hash, bytes)?;
        Ok(WasmtimeModule {
            state,
            compiled,
            limits,
            arg0,
            env,
            preopens,
        })
    }

    /// Runs the module once with `stdin`; returns its stdout.
    pub(crate) async fn run(&self, stdin: Vec<u8>) -> Result<Vec<u8>, FailureKind> {
        let timeout = self.limits.timeout;
        let deadline = Instant::now() + timeout;
        let _permit = tokio::time::timeout_at(deadline.into(), self.state.slots.acquire())
            .await
            .map_err(|_| FailureKind::NoSlot(timeout))?
            .expect("the slot semaphore is never closed");

        let max_output = self.limits.max_output;
        // One byte over the limit: a full pipe proves the guest wrote too much.
        let stdout = MemoryOutputPipe::new(max_output as usize + 1);
        let stderr = StderrTail::default();
        let wasi = self.wasi_ctx(stdin, stdout.clone(), stderr.clone())?;
        let mut store = Store::new(
            &self.state.engine,
            Host {
                wasi,
                memory_limit: self.limits.memory,
                memory_exceeded: None,
                timed_out: false,
            },
        );
        store.limiter(|h| h);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            if Instant::now() >= deadline {
                ctx.data_mut().timed_out = true;
                Err(wasmtime::Error::msg("timeout"))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        if let Some(fuel) = self.limits.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| FailureKind::Instantiate(format!("{e:#}")))?;
        }

        let result = tokio::time::timeout_at(deadline.into(), self.call(&mut store)).await;
        let host = store.data();
        let out_len = stdout.contents().len() as u64;
        let failure = match result {
            Err(_elapsed) => Some(FailureKind::Timeout(timeout)),
            Ok(_) if host.timed_out => Some(FailureKind::Timeout(timeout)),
            Ok(_) if host.memory_exceeded.is_some() => Some(FailureKind::MemoryLimit {
                limit: self.limits.memory,
                wanted: host.memory_exceeded.unwrap_or_default(),
            }),
            Ok(_) if out_len > max_output => Some(FailureKind::OutputTooLarge(max_output)),
            Ok(Ok(())) => None,
            Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => None,
                Some(I32Exit(code)) => Some(FailureKind::Exit {
                    code: *code,
                    stderr: stderr.text(),
                }),
                None => Some(self.classify(&e, &stderr)),
            },
        };
        drop(store);
        match failure {
            Some(kind) => Err(kind),
            None => Ok(stdout.contents().to_vec()),
        }
    }

    async fn call(&self, store: &mut Store<Host>) -> wasmtime::Result<()> {
        let instance = self.compiled.pre.instantiate_async(&mut *store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
        start.call_async(&mut *store, ()).await
    }

    fn classify(&self, e: &wasmtime::Error, stderr: &StderrTail) -> FailureKind {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => FailureKind::OutOfFuel(self.limits.fuel.unwrap_or_default()),
            Some(trap) => FailureKind::Trap {
                message: trap.to_string(),
                stderr: stderr.text(),
            },
            None if format!("{e:#}").contains("write beyond capacity") => {
                FailureKind::OutputTooLarge(self.limits.max_output)
            }
            None => FailureKind::Trap {
                message: e.root_cause().to_string(),
                stderr: stderr.text(),
            },
        }
    }

    fn wasi_ctx(
        &self,
        stdin: Vec<u8>,
        stdout: MemoryOutputPipe,
        stderr: StderrTail,
    ) -> Result<WasiP1Ctx, FailureKind> {
        let mut b = WasiCtxBuilder::new();
        b.stdin(MemoryInputPipe::new(stdin))
            .stdout(stdout)
            .stderr(stderr)
            .arg(&self.arg0)
            .envs(&self.env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (host, guest) in &self.preopens {
            b.preopened_dir(host, guest, DirPerms::READ, FilePerms::READ)
                .map_err(|e| {
                    FailureKind::Instantiate(format!("preopen {}: {e:#}", host.display()))
                })?;
        }
        Ok(b.build_p1())
    }
}

/// stderr of a guest: the first [`STDERR_KEEP`] bytes are kept, the rest is discarded, and
/// writes never fail (a Rust guest panics when a write to stderr fails).
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<BytesMut>>);

impl StderrTail {
    fn append(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = STDERR_KEEP.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
