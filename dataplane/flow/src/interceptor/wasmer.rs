//! The `runtime: wasmer` backend (cargo feature `wasmer`): NOT IMPLEMENTED YET.
//!
//! The feature exists so the wiring (config → [`Backend::Wasmer`](super::Backend)) is in place
//! and so a build with it never runs a `runtime: wasmer` module under wasmtime: loading fails
//! with a clear message instead.
//!
//! What blocks a faithful implementation with `wasmer` 6.1 + `wasmer-wasix` 0.601 (the releases
//! whose MSRV fits the workspace):
//! * `timeout`: wasmer has no epoch interruption nor interrupt handle, so a CPU-bound guest can
//!   only be stopped by instruction metering (`wasmer-middlewares`), which is `fuel`, not a
//!   wall-clock limit; an abandoned guest thread would spin forever.
//! * `preopens` read-only needs a read-only `virtual_fs::FileSystem` wrapper (wasmer-wasix maps
//!   host directories read-write), `memoryLimit` a custom `Tunables`, `maxOutputSize` a bounded
//!   `VirtualFile` for stdout.
//! * cost: ~440 crates and a second Cranelift (0.110, next to wasmtime's 0.123).

use std::path::PathBuf;

use super::error::{BuildErrorKind, FailureKind};
use super::limits::Limits;

/// Placeholder of the wasmer module: never constructed.
pub(crate) enum WasmerModule {}

impl WasmerModule {
    pub(crate) fn new(
        _hash: [u8; 32],
        _bytes: &[u8],
        _limits: Limits,
        _arg0: String,
        _env: Vec<(String, String)>,
        _preopens: Vec<(PathBuf, String)>,
    ) -> Result<Self, BuildErrorKind> {
        Err(BuildErrorKind::Engine(
            "the wasmer backend is not implemented in this build yet; use `runtime: wasmtime`"
                .into(),
        ))
    }

    pub(crate) async fn run(&self, _stdin: Vec<u8>) -> Result<Vec<u8>, FailureKind> {
        match *self {}
    }
}
