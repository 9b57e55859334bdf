//! What the measuring tasks, [`bench`](crate::bench) and [`reliability`](crate::reliability),
//! share: the release build they measure, where cargo puts it, the machine line their reports
//! open with, and the runner of the e2e binaries whose scenarios record figures. Both depend on
//! this module and not on each other.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::infra;

/// Frame pointers give the profiles call graphs (`perf record -g`) for a cost of about 1%.
const FRAME_POINTERS: &str = "-C force-frame-pointers=yes";

/// Builds `fiso` and `xtask` in release mode, as shipped (with the profile of [`crate::pgo`]),
/// and returns the release directory. `bench` and `reliability` build the same package set
/// with the same flags: one feature resolution, so neither rebuilds the other's artifacts. The
/// bench's own servers in `xtask` (the upstream, the bare proxy) share the profile's libraries
/// (hyper, Tokio, Fiso's client) and so their optimisation.
pub fn build_release(root: &Path) -> Result<PathBuf> {
    println!("building the release binaries");
    let status = crate::cargo::command()
        .args(["build", "--release", "-p", "fiso", "-p", "xtask"])
        .env(
            "RUSTFLAGS",
            with_frame_pointers(crate::pgo::with_profile(
                root,
                std::env::var("RUSTFLAGS").ok(),
            )?),
        )
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    Ok(target_dir(root).join("release"))
}

/// The caller's `RUSTFLAGS`, if any, with [`FRAME_POINTERS`] appended.
fn with_frame_pointers(rustflags: Option<String>) -> String {
    append_rustflag(rustflags, FRAME_POINTERS)
}

/// `rustflags` (the caller's `RUSTFLAGS`, if any) with `flag` appended.
pub fn append_rustflag(rustflags: Option<String>, flag: &str) -> String {
    match rustflags {
        Some(flags) if !flags.trim().is_empty() => format!("{flags} {flag}"),
        _ => flag.to_owned(),
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// CPU model, core count and kernel release, for the head of a report.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({"cpu": cpu_model(&cpuinfo), "cores": cores, "kernel": kernel.trim()})
}

/// The first `model name` of `/proc/cpuinfo`, empty when there is none.
fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default()
}

/// Runs the e2e test binary `test` (scenarios recording their figures with
/// `fiso_e2e::reliability::record`) at full or short scale against the servers of `infra up`,
/// the figures going to `out`.
pub fn run_scenarios(
    root: &Path,
    test: &str,
    full: bool,
    out: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<()> {
    let ctx = infra::Ctx::new(root);
    let status = crate::cargo::command()
        .args(["test", "-p", "fiso-e2e", "--test", test, "--"])
        .args(["--test-threads=1", "--nocapture"])
        .envs(infra::env_vars(&ctx))
        .env("PATH", infra::path_with_bin(&ctx))
        .env("FISO_RELIABILITY", if full { "full" } else { "short" })
        .env("FISO_RELIABILITY_DIR", out)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("`{test}` failed (see its output above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_pointers_are_added_to_the_callers_flags() {
        assert_eq!(with_frame_pointers(None), FRAME_POINTERS);
        assert_eq!(with_frame_pointers(Some(String::new())), FRAME_POINTERS);
        assert_eq!(
            with_frame_pointers(Some("-C target-cpu=native".into())),
            format!("-C target-cpu=native {FRAME_POINTERS}")
        );
    }

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
                       model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nprocessor\t: 1\n\
                       model name\t: other\n";
        assert_eq!(cpu_model(cpuinfo), "Intel(R) Xeon(R) CPU @ 2.20GHz");
        assert_eq!(cpu_model(""), "");
    }
}
