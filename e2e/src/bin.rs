//! Locating (and building) the binaries under test (`fiso`, `fiso-operator`).
//!
//! `cargo test --workspace` builds only the binaries of the package under test, so the e2e
//! tests build `fiso` themselves, once per test binary, with the profile they were built with
//! and the `wasmer` feature (apps and `runtime: wasmer` interceptors are under test).
//! The build is a no-op when the binary is up to date.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Set to the path of a prebuilt `fiso` to test that binary instead of building one.
pub const FISO_BIN_ENV: &str = "FISO_BIN";

/// Path of the `fiso` binary, built by this workspace with the same profile as the tests.
pub fn fiso_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os(FISO_BIN_ENV) {
        Some(path) => PathBuf::from(path),
        None => build_bin("fiso", "fiso", &["--features", "wasmer"]),
    })
    .clone()
}

/// A directory holding `fiso`, `fiso-operator` and `fiso-testkit` already built: `cargo xtask
/// ci` points it at what its workspace test build made, which a `cargo build -p` here would
/// build again with other features.
pub const BIN_DIR_ENV: &str = "FISO_E2E_BIN_DIR";

/// `<BIN_DIR_ENV>/<bin>` when that is set, else `cargo build -p <package> --bin <bin> --profile
/// <ours> <extra>`, returning the executable cargo reports.
pub(crate) fn build_bin(package: &str, bin: &str, extra: &[&str]) -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let path = Path::new(&dir).join(bin);
        assert!(
            path.is_file(),
            "{} is missing ({BIN_DIR_ENV} is set): build the workspace's tests first",
            path.display()
        );
        return path;
    }
    let mut cmd = cargo_command();
    let output = cmd
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json",
        ])
        .args(extra)
        .args(["--profile", &test_profile()])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "building {bin} failed ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {bin} executable:\n{stdout}"))
}

/// The cargo that runs these tests, in the e2e crate's directory, without the variables that
/// describe this test process rather than a build.
pub(crate) fn cargo_command() -> Command {
    // Cargo passes itself to the processes it runs; a test binary started by hand falls back to
    // the cargo that compiled it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    // What cargo set for this test process describes this package, not the build; build
    // scripts that track such a variable (ring tracks `CARGO_MANIFEST_DIR`) would otherwise see
    // it change between this build and a plain `cargo build`, and both would rebuild each time.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_tests) {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// Variables cargo sets when it runs a test binary (besides `CARGO` and the library path).
fn set_by_cargo_for_tests(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// The cargo profile this test binary was built with, from its output directory
/// (`target/debug/deps/<test>` → `dev`, `target/release/deps/<test>` → `release`).
pub(crate) fn test_profile() -> String {
    let exe = std::env::current_exe().expect("test binary path");
    profile_of(&exe)
}

fn profile_of(exe: &Path) -> String {
    let mut dir = exe.parent().unwrap_or(exe);
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_from_the_output_directory() {
        assert_eq!(
            profile_of(Path::new("/t/target/debug/deps/flow-1a2b")),
            "dev"
        );
        assert_eq!(
            profile_of(Path::new("/t/target/release/deps/flow-1a2b")),
            "release"
        );
        assert_eq!(
            profile_of(Path::new("/t/target/x86_64-unknown-linux-gnu/ci/deps/f")),
            "ci"
        );
    }
}
