//! Every fuzz target over its checked-in inputs, as an ordinary test: the hand-written seeds and
//! the minimized corpora in `fuzz/seeds/<target>/` (kept by `cargo xtask fuzz`'s runs), plus any
//! crash reproducer a local run left in `fuzz/artifacts/<target>/`. Coverage-guided fuzzing
//! itself stays in `cargo xtask fuzz`; this is what CI runs so that a change which breaks an
//! input the fuzzer once found interesting fails the suite.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/targets lives in fuzz/")
        .to_path_buf()
}

/// The files under `dir`, recursively (libFuzzer reads corpus directories the same way).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = fuzz_dir();
    let mut found = Vec::new();
    files(&fuzz.join("seeds").join(target), &mut found);
    assert!(
        !found.is_empty(),
        "no checked-in inputs in fuzz/seeds/{target}"
    );
    let mut crashes = Vec::new();
    files(&fuzz.join("artifacts").join(target), &mut crashes);
    crashes.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("crash-"))
    });
    found.extend(crashes);
    found.sort();
    found
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    let failed: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("a fuzz input");
            catch_unwind(AssertUnwindSafe(|| run(&data)))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panicked (messages above); reproduce one with \
         `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none {target} <file>`:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

#[test]
fn cel() {
    replay("cel", fiso_fuzz_targets::cel::run);
}

#[test]
fn flow_config() {
    replay("flow_config", fiso_fuzz_targets::flow_config::run);
}

#[test]
fn http_body() {
    replay("http_body", fiso_fuzz_targets::http_body::run);
}

#[test]
fn link_path() {
    replay("link_path", fiso_fuzz_targets::link_path::run);
}

#[test]
fn admission() {
    replay("admission", fiso_fuzz_targets::admission::run);
}

#[test]
fn reload() {
    replay("reload", fiso_fuzz_targets::reload::run);
}

#[test]
fn upstream_answer() {
    replay("upstream_answer", fiso_fuzz_targets::upstream_answer::run);
}
