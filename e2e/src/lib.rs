//! End-to-end tests: each test in `tests/` drives the real `fiso` binary (and, as later issues
//! land, real Kafka / Kubernetes / Temporal / Vault servers started on 127.0.0.1).
//!
//! Helpers shared by those tests live here.

use std::path::PathBuf;

/// Path of the `fiso` binary built by this workspace (same profile as the tests).
pub fn fiso_bin() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("fiso{}", std::env::consts::EXE_SUFFIX))
}
