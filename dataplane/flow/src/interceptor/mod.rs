//! WASM interceptors: WASI command modules that see each event (stdin → stdout JSON) before the
//! sink, and may change it or reject it.
//!
//! * [`protocol`]: the contract between Fiso-Flow and a module (what goes in, what may come
//!   back) and its validation.
//! * [`InterceptorChain`]: a flow's `interceptors`, loaded once ([`InterceptorChain::build`]) and
//!   applied per event ([`InterceptorChain::apply`]), with `failOpen` handled per interceptor.
//! * [`Interceptor`]: one loaded module with its limits; the backend is wasmtime
//!   ([`wasmtime`](self::wasmtime)) or, with the cargo feature `wasmer` and `runtime: wasmer`,
//!   wasmer (`wasmer.rs`): the same contract, limits and failures, with the differences listed
//!   there (no instance pooling, metering-based timeout, WASIX imports refused).
//!
//! Loading (reading and compiling a module) is blocking CPU work: call
//! [`InterceptorChain::build`] at flow start / reload, from `spawn_blocking` when on a runtime.

mod error;
mod limits;
pub mod protocol;
#[cfg(feature = "wasmer")]
mod wasmer;
pub mod wasmtime;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use fiso_config::flow::{InterceptorSpec, WasmConfig, WasmRuntime};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use error::{BuildErrorKind, FailureKind, InterceptorBuildError, InterceptorError};
pub use limits::{Limits, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT};
pub use protocol::Answer;

/// A flow's interceptors, in config order.
#[derive(Default)]
pub struct InterceptorChain {
    interceptors: Vec<Interceptor>,
}

/// What the chain decided for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    /// Deliver `event` (the input shape of [`protocol`], with every change applied).
    Continue {
        event: Value,
        /// Interceptors that failed and were skipped because of `failOpen: true` (a metric).
        failed_open: u32,
    },
    /// A module rejected the event: do not deliver it; an HTTP source answers `status`.
    Rejected {
        status: u16,
        reason: String,
        /// The `module` path of the interceptor that rejected it.
        module: String,
        failed_open: u32,
    },
}

impl InterceptorChain {
    /// Loads every interceptor of `specs`; relative module and preopen paths resolve against
    /// `base_dir` (the directory of the flow file). Blocking: reads and compiles the modules
    /// (cached by content hash, so a reload with unchanged modules does not recompile).
    pub fn build(
        specs: &[InterceptorSpec],
        base_dir: Option<&Path>,
    ) -> Result<Self, InterceptorBuildError> {
        let interceptors = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| match spec {
                InterceptorSpec::Wasm(config) => {
                    Interceptor::load(config, base_dir).map_err(|kind| InterceptorBuildError {
                        index,
                        module: config.module.clone(),
                        kind,
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(InterceptorChain { interceptors })
    }

    pub fn is_empty(&self) -> bool {
        self.interceptors.is_empty()
    }

    pub fn interceptors(&self) -> &[Interceptor] {
        &self.interceptors
    }

    /// Whether a module file changed on disk since it was loaded (or can no longer be read):
    /// the caller then rebuilds the chain. Blocking (reads and hashes the files).
    pub fn modules_changed(&self) -> bool {
        self.interceptors.iter().any(|i| i.is_stale())
    }

    /// Runs `event` (a JSON object in the [`protocol`] input shape; a missing `headers` is taken
    /// as `{}`) through every interceptor in order. An interceptor that fails with
    /// `failOpen: true` is skipped with a warning and counted in `failed_open`.
    pub async fn apply(&self, event: Value) -> Result<ChainOutcome, InterceptorError> {
        let mut failed_open = 0;
        let mut event = match event {
            Value::Object(map) => map,
            other => {
                let module = self.interceptors.first().map_or("", |i| i.module());
                return Err(InterceptorError::new(
                    module,
                    FailureKind::InvalidInput(format!(
                        "the event must be a JSON object, got {other}"
                    )),
                ));
            }
        };
        if !event.contains_key("headers") {
            event.insert("headers".into(), Value::Object(Map::new()));
        }
        for interceptor in &self.interceptors {
            match interceptor.run(&event).await {
                Ok(Answer::Event(Value::Object(next))) => event = next,
                Ok(Answer::Event(_)) => unreachable!("protocol::decode_output returns objects"),
                Ok(Answer::Reject { status, reason }) => {
                    return Ok(ChainOutcome::Rejected {
                        status,
                        reason,
                        module: interceptor.module().to_owned(),
                        failed_open,
                    })
                }
                Err(e) if interceptor.fail_open() => {
                    tracing::warn!(
                        module = interceptor.module(),
                        code = e.code(),
                        error = %e,
                        "interceptor failed; failOpen: passing the event on unchanged"
                    );
                    failed_open += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ChainOutcome::Continue {
            event: Value::Object(event),
            failed_open,
        })
    }
}

impl fmt::Debug for InterceptorChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.interceptors).finish()
    }
}

/// One loaded interceptor module.
pub struct Interceptor {
    module: String,
    path: PathBuf,
    hash: [u8; 32],
    fail_open: bool,
    limits: Limits,
    backend: Backend,
}

enum Backend {
    Wasmtime(wasmtime::WasmtimeModule),
    #[cfg(feature = "wasmer")]
    Wasmer(wasmer::WasmerModule),
}

impl Interceptor {
    /// Reads, hashes and compiles the module of `config` (blocking). Calling it again after the
    /// file changed loads the new module; an unchanged file reuses the compiled one.
    pub fn load(config: &WasmConfig, base_dir: Option<&Path>) -> Result<Self, BuildErrorKind> {
        let limits = Limits::from_config(config)?;
        let path = resolve(&config.module, base_dir);
        let bytes = std::fs::read(&path).map_err(|source| BuildErrorKind::Read {
            path: path.display().to_string(),
            source,
        })?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let arg0 = path.file_name().map_or_else(
            || config.module.clone(),
            |n| n.to_string_lossy().into_owned(),
        );
        let env = config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let preopens = config
            .preopens
            .iter()
            .map(|p| {
                let host = resolve(&p.host_path, base_dir);
                if host.is_dir() {
                    Ok((host, p.guest_path.clone()))
                } else {
                    Err(BuildErrorKind::Preopen {
                        host_path: host.display().to_string(),
                        message: "not a readable directory".into(),
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let started = std::time::Instant::now();
        let backend = match config.runtime {
            WasmRuntime::Wasmtime => Backend::Wasmtime(wasmtime::WasmtimeModule::new(
                hash, &bytes, limits, arg0, env, preopens,
            )?),
            #[cfg(feature = "wasmer")]
            WasmRuntime::Wasmer => Backend::Wasmer(wasmer::WasmerModule::new(
                hash, &bytes, limits, arg0, env, preopens,
            )?),
            #[cfg(not(feature = "wasmer"))]
            WasmRuntime::Wasmer => return Err(BuildErrorKind::WasmerNotBuilt),
        };
        tracing::debug!(
            module = %config.module,
            sha256 = %hex(&hash),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "interceptor module loaded"
        );
        Ok(Interceptor {
            module: config.module.clone(),
            path,
            hash,
            fail_open: config.fail_open,
            limits,
            backend,
        })
    }

    /// The `module` path as configured (what messages and metrics name).
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The resolved module path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the module bytes, lowercase hex.
    pub fn content_hash(&self) -> String {
        hex(&self.hash)
    }

    /// `failOpen`: on failure the chain passes the event on unchanged.
    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the file at [`path`](Self::path) no longer has the loaded content.
    pub fn is_stale(&self) -> bool {
        std::fs::read(&self.path)
            .map(|bytes| <[u8; 32]>::from(Sha256::digest(&bytes)) != self.hash)
            .unwrap_or(true)
    }

    /// Runs the module on one event and checks its answer against the [`protocol`].
    pub async fn run(&self, event: &Map<String, Value>) -> Result<Answer, InterceptorError> {
        let stdin = serde_json::to_vec(event)
            .map_err(|e| self.error(FailureKind::InvalidInput(e.to_string())))?;
        let stdout = self.run_raw(stdin).await?;
        protocol::decode_output(event, &stdout)
            .map_err(|message| self.error(FailureKind::InvalidOutput(message)))
    }

    /// Runs the module with `stdin` and returns its stdout, unchecked (for tests and tooling).
    pub async fn run_raw(&self, stdin: Vec<u8>) -> Result<Vec<u8>, InterceptorError> {
        let result = match &self.backend {
            Backend::Wasmtime(m) => m.run(stdin).await,
            #[cfg(feature = "wasmer")]
            Backend::Wasmer(m) => m.run(stdin).await,
        };
        result.map_err(|kind| self.error(kind))
    }

    fn error(&self, kind: FailureKind) -> InterceptorError {
        InterceptorError::new(&self.module, kind)
    }
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptor")
            .field("module", &self.module)
            .field("sha256", &self.content_hash())
            .field("fail_open", &self.fail_open)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A fingerprint of the module files `specs` name (their SHA-256, or why they cannot be read),
/// so that a reload notices a rewritten module even when the flow file is unchanged.
pub fn modules_fingerprint(specs: &[InterceptorSpec], base_dir: Option<&Path>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for spec in specs {
        let InterceptorSpec::Wasm(config) = spec;
        match std::fs::read(resolve(&config.module, base_dir)) {
            Ok(bytes) => hasher.update(Sha256::digest(&bytes)),
            Err(e) => hasher.update(e.to_string().as_bytes()),
        }
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn resolve(path: &str, base_dir: Option<&Path>) -> PathBuf {
    match base_dir {
        Some(base) if Path::new(path).is_relative() => base.join(path),
        _ => PathBuf::from(path),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
