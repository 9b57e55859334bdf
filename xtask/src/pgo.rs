//! Profile-guided optimisation of the release build.
//!
//! `pgo/fiso.profdata.gz` is an LLVM profile of `fiso` serving the bench's Link and Flow HTTP
//! loads and draining Kafka into HTTP with each `ordering`. Every release build of `fiso` made
//! here ([`crate::measure::build_release`], `cargo xtask image --profile release`) and the
//! `Dockerfile`'s compile with it (`-Cprofile-use`): LLVM then lays out and inlines the hot
//! path by what it measured, and optimises for size what the training never ran (the binary
//! shrinks by about an eighth). A function changed since the profile was taken no longer
//! matches its record and is compiled as without a profile, so a stale profile costs speed,
//! never correctness.
//!
//! The profile is checked in compressed (gzip: 39 MB as merged, 8.6 MB compressed) and
//! unpacked into the target directory under a name taken from its content, so a new profile
//! is a new `-Cprofile-use` path and cargo rebuilds with it.
//!
//! `cargo xtask pgo` takes the profile again: an instrumented release build (its own target
//! directory, `-Cprofile-generate`), the training load ([`crate::bench::train`]), then
//! `llvm-profdata merge`. `llvm-profdata` must be the LLVM rustc is built on; it is installed
//! from the Debian package `llvm-<major>` when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::measure::{append_rustflag, target_dir};

/// The compressed profile, relative to the workspace root.
pub const PROFILE: &str = "pgo/fiso.profdata.gz";

/// Seconds of load per HTTP training scenario, and records per Kafka drain.
const TRAINING: (u32, usize) = (10, 20_000);

/// `-Cprofile-use` of the checked-in profile (unpacked into the target directory), when
/// there is one.
pub fn use_flag(root: &Path) -> Result<Option<String>> {
    let packed = root.join(PROFILE);
    if !packed.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&packed)?;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    let dir = target_dir(root).join("pgo");
    let unpacked = dir.join(format!("fiso-{}.profdata", &digest[..16]));
    if !unpacked.is_file() {
        std::fs::create_dir_all(&dir)?;
        let partial = unpacked.with_extension("partial");
        gzip(&["-d"], &packed, &partial)?;
        std::fs::rename(&partial, &unpacked)?;
    }
    Ok(Some(format!("-Cprofile-use={}", unpacked.display())))
}

/// `flags` (the caller's `RUSTFLAGS`, if any) with [`use_flag`] appended.
pub fn with_profile(root: &Path, flags: Option<String>) -> Result<Option<String>> {
    Ok(match use_flag(root)? {
        Some(use_flag) => Some(append_rustflag(flags, &use_flag)),
        None => flags.filter(|f| !f.trim().is_empty()),
    })
}

/// `gzip -c` with `args` from `input` into `output`.
fn gzip(args: &[&str], input: &Path, output: &Path) -> Result<()> {
    let status = Command::new("gzip")
        .args(args)
        .arg("-c")
        .arg(input)
        .stdout(std::fs::File::create(output)?)
        .status()
        .context("running gzip")?;
    ensure!(status.success(), "gzip {args:?} {} failed", input.display());
    Ok(())
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
    println!("pgo: training");
    crate::bench::train(
        root,
        &fiso,
        &xtask,
        &work.join("run"),
        TRAINING,
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
    let merged = work.join("fiso.profdata");
    let status = Command::new(&profdata)
        .args(["merge", "-o"])
        .arg(&merged)
        .args(&raw)
        .status()
        .with_context(|| format!("running {}", profdata.display()))?;
    if !status.success() {
        bail!("{} merge failed", profdata.display());
    }
    let out = root.join(PROFILE);
    std::fs::create_dir_all(out.parent().expect("a file in pgo/"))?;
    // `-n`: no name or time in the header, so the same profile compresses to the same bytes.
    gzip(&["-n"], &merged, &out)?;
    println!(
        "pgo: {} ({} KiB, {} KiB merged) from {} run(s)",
        out.display(),
        std::fs::metadata(&out)?.len() / 1024,
        std::fs::metadata(&merged)?.len() / 1024,
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
        crate::bench::apt_install("pgo", &[&format!("llvm-{major}")])?;
        ensure!(
            path.is_file(),
            "llvm-{major} is installed but has no {}",
            path.display()
        );
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
        let use_flag = use_flag(&root)
            .unwrap()
            .expect("pgo/fiso.profdata.gz is checked in");
        let unpacked = use_flag.strip_prefix("-Cprofile-use=").unwrap();
        assert!(Path::new(unpacked).is_file(), "{unpacked} is unpacked");
        assert_eq!(
            with_profile(&root, Some("-C force-frame-pointers=yes".into())).unwrap(),
            Some(format!("-C force-frame-pointers=yes {use_flag}"))
        );
        assert_eq!(
            with_profile(&root, Some(" ".into())).unwrap(),
            Some(use_flag.clone())
        );
        assert_eq!(with_profile(&root, None).unwrap(), Some(use_flag));
        let elsewhere = std::env::temp_dir().join("no-pgo-here");
        assert_eq!(with_profile(&elsewhere, None).unwrap(), None);
    }
}
