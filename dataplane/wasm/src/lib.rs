//! Fiso's WASM engine: a WASI preview 1 *command* module run once per call — these stdin bytes,
//! this environment, these read-only preopens and these limits in; its stdout bytes or a typed
//! [`FailureKind`] out. Flow interceptors (CloudEvent ⇄ JSON, in `fiso-flow`) and Link
//! interceptors (HTTP request / response ⇄ JSON, in `fiso-link`) are two contracts on top of it;
//! Flow and Link never import each other, so what they share lives here.
//!
//! * [`Module`]: one loaded module with its [`Limits`] and `failOpen`, and whether its file
//!   changed since ([`Module::is_stale`], the hot-reload bookkeeping; [`fingerprint`] for a set).
//! * Backends: [`wasmtime`] (default; pooled instances, epoch timeout) and, with the cargo
//!   feature `wasmer` and `runtime: wasmer`, wasmer (`wasmer.rs`). `runtime: wazero` (upstream's
//!   Go runtime) runs on wasmtime with a warning. Compiled modules are cached per engine by
//!   content hash, so reloading an unchanged module does not recompile it.
//! * [`output`]: what both contracts share on stdout — one JSON object of changes merged over
//!   the input, or `{"reject":{"status","reason"}}`.
//!
//! Loading (reading and compiling a module) is blocking CPU work: call [`Module::load`] at
//! start / reload, from `spawn_blocking` when on a runtime.

mod error;
mod limits;
pub mod output;
/// The wasmer backend; its run pieces ([`wasmer::run`], [`wasmer::tunables`], [`wasmer::fs`],
/// [`wasmer::stdio`]) also run the Wasmer/WASIX apps of `fiso-apps`.
#[cfg(feature = "wasmer")]
pub mod wasmer;
pub mod wasmtime;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use fiso_config::flow::{WasmConfig, WasmRuntime};
use sha2::{Digest, Sha256};

pub use error::{
    BuildErrorKind, FailureKind, InterceptorBuildError, InterceptorError, WASMER_BUILD,
};
pub use limits::{Limits, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT};

/// Guests that may run at the same time on `runtime` (per engine); more wait for a slot within
/// their timeout.
pub fn instance_slots(runtime: WasmRuntime) -> usize {
    match runtime {
        WasmRuntime::Wasmtime | WasmRuntime::Wazero => wasmtime::POOL_SLOTS as usize,
        #[cfg(feature = "wasmer")]
        WasmRuntime::Wasmer => wasmer::MAX_INSTANCES,
        #[cfg(not(feature = "wasmer"))]
        WasmRuntime::Wasmer => 0,
    }
}

/// One loaded module.
pub struct Module {
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

impl Module {
    /// Reads, hashes and compiles the module of `config` (blocking); relative module and preopen
    /// paths resolve against `base_dir`. Calling it again after the file changed loads the new
    /// module; an unchanged file reuses the compiled one.
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
            WasmRuntime::Wazero => {
                tracing::warn!(module = %config.module, "{}", WasmRuntime::WAZERO_WARNING);
                Backend::Wasmtime(wasmtime::WasmtimeModule::new(
                    hash, &bytes, limits, arg0, env, preopens,
                )?)
            }
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
            "WASM module loaded"
        );
        Ok(Module {
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

    /// `failOpen`: on failure the caller passes its input on unchanged.
    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the file at [`path`](Self::path) no longer has the loaded content (or can no
    /// longer be read). Blocking: reads and hashes the file.
    pub fn is_stale(&self) -> bool {
        std::fs::read(&self.path)
            .map(|bytes| <[u8; 32]>::from(Sha256::digest(&bytes)) != self.hash)
            .unwrap_or(true)
    }

    /// Runs the module once with `stdin` and returns its stdout, unchecked.
    pub async fn run_raw(&self, stdin: Vec<u8>) -> Result<Vec<u8>, InterceptorError> {
        let result = match &self.backend {
            Backend::Wasmtime(m) => m.run(stdin).await,
            #[cfg(feature = "wasmer")]
            Backend::Wasmer(m) => m.run(stdin).await,
        };
        result.map_err(|kind| self.error(kind))
    }

    /// An [`InterceptorError`] naming this module.
    pub fn error(&self, kind: FailureKind) -> InterceptorError {
        InterceptorError::new(&self.module, kind)
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("module", &self.module)
            .field("sha256", &self.content_hash())
            .field("fail_open", &self.fail_open)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A fingerprint of the module files `modules` name (their SHA-256, or why they cannot be
/// read), so that a reload notices a rewritten module even when the config is unchanged.
pub fn fingerprint<'a>(
    modules: impl IntoIterator<Item = &'a str>,
    base_dir: Option<&Path>,
) -> String {
    let mut hasher = Sha256::new();
    for module in modules {
        match std::fs::read(resolve(module, base_dir)) {
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

/// `path` against `base_dir` when relative.
pub fn resolve(path: &str, base_dir: Option<&Path>) -> PathBuf {
    match base_dir {
        Some(base) if Path::new(path).is_relative() => base.join(path),
        _ => PathBuf::from(path),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
