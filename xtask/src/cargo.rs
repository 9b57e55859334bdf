//! Cargo started from xtask as if typed by hand.
//!
//! `cargo run` hands xtask its own package's variables (`CARGO_PKG_NAME=xtask`,
//! `CARGO_MANIFEST_DIR`, ...). Build scripts that declare `rerun-if-env-changed` on them (ring,
//! among others) would see them differ from a hand-typed `cargo build` or `cargo test` and
//! rerun, rebuilding TLS, kube, tonic and everything above them each time the two alternate.

use std::process::Command;

/// `$CARGO` (or `cargo`) without the variables `cargo run` set about xtask.
pub fn command() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_package_var) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Variables cargo sets for the binary it runs, describing that binary's package.
fn is_package_var(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
        || matches!(name, "CARGO_PRIMARY_PACKAGE" | "OUT_DIR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_cargo_run_sets_about_xtask_is_left_out() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "OUT_DIR",
        ] {
            assert!(is_package_var(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_package_var(name), "{name}");
        }
    }
}
