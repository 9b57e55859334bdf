//! Profile-guided optimisation of the release build.
//!
//! `pgo/fiso.profdata` is an LLVM profile of `fiso` serving the bench's Link and Flow HTTP
//! loads. Every release build of `fiso` made here ([`crate::measure::build_release`],
//! `cargo xtask image --profile release`) and the `Dockerfile`'s compile with it
//! (`-Cprofile-use`): LLVM then lays out and inlines the hot path by what it measured. A
//! function changed since the profile was taken no longer matches its record and is compiled
//! as without a profile, so a stale profile costs speed, never correctness.
//!
//! `cargo xtask pgo` takes the profile again: an instrumented release build (its own target
//! directory, `-Cprofile-generate`), the training load ([`crate::bench::train`]), then
//! `llvm-profdata merge --sparse` (functions never run are left out: they stay optimised as
//! without a profile, not as cold). `llvm-profdata` must be the LLVM rustc is built on; it is
//! installed from the Debian package `llvm-<major>` when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::measure::target_dir;

/// The profile, relative to the workspace root.
pub const PROFILE: &str = "pgo/fiso.profdata";

/// Seconds of load per training scenario.
const TRAINING_SECONDS: u32 = 10;

/// `-Cprofile-use` of the checked-in profile, when there is one.
pub fn use_flag(root: &Path) -> Option<String> {
    let profile = root.join(PROFILE);
    profile
        .is_file()
        .then(|| format!("-Cprofile-use={}", profile.display()))
}

/// `flags` (the caller's `RUSTFLAGS`, if any) with [`use_flag`] appended.
pub fn with_profile(root: &Path, flags: Option<String>) -> Option<String> {
    let flags = flags.filter(|f| !f.trim().is_empty());
    match (flags, use_flag(root)) {
        (Some(flags), Some(use_flag)) => Some(format!("{flags} {use_flag}")),
        (flags, use_flag) => flags.or(use_flag),
    }
}

/// `cargo xtask pgo`: instrumented build, training load, merged profile in [`PROFILE`].
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask pgo");
    }
    let profdata = llvm_profdata()?;
    crate::bench::ensure_tools()?;
    let work = target_dir(root).join("pgo");
    // Build scripts and proc macros are instrumented too and write their profiles where
    // `-Cprofile-generate` says; the training's go to their own directory.
    let build_profiles = work.join("build-scripts");
    let training = work.join("training");
    for dir in [&build_profiles, &training] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
    }
    let instrumented = work.join("target");
    println!(
        "pgo: instrumented release build in {}",
        instrumented.display()
    );
    let status = crate::cargo::command()
        .args(["build", "--release", "-p", "fiso", "--target-dir"])
        .arg(&instrumented)
        .env(
            "RUSTFLAGS",
            format!("-Cprofile-generate={}", build_profiles.display()),
        )
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("instrumented release build failed");
    }
    let fiso = instrumented.join("release").join("fiso");
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let pattern = training.join("fiso-%p.profraw");
    println!("pgo: training ({TRAINING_SECONDS} s of Link and of Flow load)");
    crate::bench::train(
        &fiso,
        &xtask,
        &work.join("run"),
        TRAINING_SECONDS,
        &[("LLVM_PROFILE_FILE", pattern.display().to_string())],
    )?;
    let raw: Vec<PathBuf> = std::fs::read_dir(&training)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if raw.is_empty() {
        bail!(
            "the training wrote no profile to {} (did fiso exit cleanly?)",
            training.display()
        );
    }
    let out = root.join(PROFILE);
    std::fs::create_dir_all(out.parent().expect("a file in pgo/"))?;
    let status = Command::new(&profdata)
        .args(["merge", "--sparse", "-o"])
        .arg(&out)
        .args(&raw)
        .status()
        .with_context(|| format!("running {}", profdata.display()))?;
    if !status.success() {
        bail!("{} merge failed", profdata.display());
    }
    println!(
        "pgo: {} ({} KiB) from {} run(s)",
        out.display(),
        std::fs::metadata(&out)?.len() / 1024,
        raw.len()
    );
    Ok(())
}

/// `llvm-profdata` of the LLVM rustc is built on (a profile from another major version is
/// refused or misread), installed from Debian when missing.
fn llvm_profdata() -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output()?;
    let major = llvm_major(&String::from_utf8_lossy(&out.stdout))
        .context("rustc -vV names no LLVM version")?;
    let path = PathBuf::from(format!("/usr/lib/llvm-{major}/bin/llvm-profdata"));
    if !path.is_file() {
        println!("pgo: apt-get install llvm-{major}");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", &format!("llvm-{major}")])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("apt-get")?;
        if !status.success() || !path.is_file() {
            bail!("installing llvm-{major} (for {}) failed", path.display());
        }
    }
    Ok(path)
}

/// The major version in `rustc -vV`'s `LLVM version: 22.1.2`.
fn llvm_major(version_text: &str) -> Option<u32> {
    version_text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?
        .split('.')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llvm_major_version_of_rustc() {
        let text = "rustc 1.95.0 (59807616e 2026-04-14)\nhost: x86_64-unknown-linux-gnu\n\
                    release: 1.95.0\nLLVM version: 22.1.2\n";
        assert_eq!(llvm_major(text), Some(22));
        assert_eq!(llvm_major("rustc 1.95.0\n"), None);
    }

    #[test]
    fn the_profile_is_added_to_the_callers_flags() {
        let root = crate::root();
        let use_flag = use_flag(&root).expect("pgo/fiso.profdata is checked in");
        assert_eq!(
            with_profile(&root, Some("-C force-frame-pointers=yes".into())),
            Some(format!("-C force-frame-pointers=yes {use_flag}"))
        );
        assert_eq!(
            with_profile(&root, Some(" ".into())),
            Some(use_flag.clone())
        );
        assert_eq!(with_profile(&root, None), Some(use_flag));
        let elsewhere = std::env::temp_dir().join("no-pgo-here");
        assert_eq!(with_profile(&elsewhere, None), None);
    }
}
