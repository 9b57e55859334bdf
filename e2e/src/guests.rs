//! WASI / WASIX test guests (`e2e/guests/*.c`) compiled on this machine with Debian's `clang`,
//! `lld` and `wasi-libc` (the Rust toolchain here has no wasm32 target). The compiler is
//! installed with apt when missing; each module is cached under `target/guests/` by the SHA-256
//! of its sources and flags, so a test run compiles a guest once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The Debian packages that compile C to wasm32-wasi.
pub const PACKAGES: [&str; 4] = ["clang", "lld", "wasi-libc", "libclang-rt-14-dev-wasm32"];

/// Compiles `e2e/guests/<name>.c` with `defines` (`-D` flags, e.g. `VERSION="2"`), returning
/// the module's path. Panics with the compiler's output on failure.
pub fn build(name: &str, defines: &[&str]) -> PathBuf {
    // One compile at a time: tests of one binary ask for the same guests concurrently.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests");
    let source = dir.join(format!("{name}.c"));
    let mut hasher = Sha256::new();
    for file in [source.clone(), dir.join("wasix.h")] {
        hasher.update(
            std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display())),
        );
    }
    for d in defines {
        hasher.update(d.as_bytes());
        hasher.update(b"\0");
    }
    let out_dir = target_dir().join("guests");
    std::fs::create_dir_all(&out_dir).expect("creating target/guests");
    let hash: String = hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = out_dir.join(format!("{name}-{hash}.wasm"));
    if out.is_file() {
        return out;
    }
    ensure_toolchain();
    let tmp = out.with_extension("wasm.tmp");
    let mut cmd = Command::new("clang");
    cmd.args([
        "--target=wasm32-wasi",
        "-O2",
        "-Wall",
        "-Wl,--strip-all",
        "-o",
    ])
    .arg(&tmp)
    .arg(&source);
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let output = cmd.output().expect("running clang");
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).expect("moving the compiled guest into place");
    out
}

/// Installs the compiler packages when one of them is missing (the test machine is root, as
/// for `cargo xtask infra up`).
pub fn ensure_toolchain() {
    let missing: Vec<&str> = PACKAGES
        .into_iter()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("running apt-get")
    };
    let mut status = install();
    if !status.success() {
        // A fresh machine has no package lists yet.
        let _ = Command::new("apt-get").arg("update").status();
        status = install();
    }
    assert!(
        status.success(),
        "installing {missing:?} failed; run `apt-get update` and `apt-get install {}`",
        missing.join(" ")
    );
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
