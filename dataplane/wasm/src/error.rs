//! Errors of a WASM module: loading one ([`InterceptorBuildError`], a config problem) and running
//! one ([`InterceptorError`], code `INTERCEPTOR_FAILED`).

use std::time::Duration;

/// An interceptor of a flow or link target could not be set up; it cannot start (or reload).
#[derive(Debug, thiserror::Error)]
#[error("interceptors[{index}] (module `{module}`): {kind}")]
pub struct InterceptorBuildError {
    /// Position in the `interceptors` list.
    pub index: usize,
    /// The `module` path as configured.
    pub module: String,
    pub kind: BuildErrorKind,
}

impl InterceptorBuildError {
    /// The stable machine-readable code: a bad interceptor is a config error.
    pub fn code(&self) -> &'static str {
        "CONFIG_INVALID"
    }
}

/// Where a build with Wasmer comes from: the refusals of a build without it name it (here and
/// in fiso-apps).
pub const WASMER_BUILD: &str = "the fiso-wasmer image, or cargo build -p fiso --features wasmer";

/// Why an interceptor could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildErrorKind {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid WebAssembly module: {0}")]
    Compile(String),
    #[error("not a WASI preview 1 command module: {0}")]
    NotCommand(String),
    #[error("invalid limit: {0}")]
    Limit(String),
    #[error("preopen `{host_path}`: {message}")]
    Preopen { host_path: String, message: String },
    #[error("runtime: wasmer is not available in this build: it needs the Wasmer build of fiso ({}); or use `runtime: wasmtime`", WASMER_BUILD)]
    WasmerNotBuilt,
    #[error("runtime engine: {0}")]
    Engine(String),
}

/// An interceptor failed on one call. Code `INTERCEPTOR_FAILED`; with `failOpen: true` the caller
/// passes its input on unchanged instead of returning this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interceptor `{module}` failed: {kind}")]
pub struct InterceptorError {
    /// The `module` path as configured.
    pub module: String,
    pub kind: FailureKind,
}

impl InterceptorError {
    /// The stable machine-readable code (DLQ header, metric label, logs).
    pub fn code(&self) -> &'static str {
        "INTERCEPTOR_FAILED"
    }

    pub fn new(module: &str, kind: FailureKind) -> Self {
        InterceptorError {
            module: module.to_owned(),
            kind,
        }
    }
}

/// Why a module failed on one call. Messages name the cause; `stderr` is the start of what the
/// guest wrote to stderr (a Rust panic message, a Go stack trace), empty if nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(
        "timed out after {0:?} waiting for a free WASM instance slot (too many events in flight)"
    )]
    NoSlot(Duration),
    #[error("ran out of fuel (budget {0} units)")]
    OutOfFuel(u64),
    #[error("exceeded the memory limit of {limit} bytes (wanted {wanted} bytes)")]
    MemoryLimit { limit: u64, wanted: u64 },
    #[error("wrote more than maxOutputSize ({0} bytes) to stdout")]
    OutputTooLarge(u64),
    #[error("trapped: {message}{}", stderr_suffix(.stderr))]
    Trap { message: String, stderr: String },
    #[error("exited with code {code}{}", stderr_suffix(.stderr))]
    Exit { code: i32, stderr: String },
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    #[error("invalid input event: {0}")]
    InvalidInput(String),
    /// A flow's `wasmer-app` interceptor: the app could not be called or did not answer 2xx
    /// (the message starts with the app's error code, e.g. `APP_NOT_READY`).
    #[error("{0}")]
    App(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(" (stderr: {})", stderr.trim())
    }
}
