//! `cargo xtask ci`: everything CI checks, each step timed, and a table of the times printed at
//! the end (also when a step fails).
//!
//! The workspace is compiled once: the build of every test target runs with `clippy-driver` as
//! the workspace's rustc wrapper — exactly what `cargo clippy` does, but with code generation —
//! so the lint and the tests share one compilation instead of a `check` build and a `test`
//! build. The test run then finds everything fresh. The fuzz targets' checked-in inputs are
//! replayed by `fuzz/targets`' tests inside that run (coverage-guided fuzzing, which needs its
//! own instrumented build, stays in `cargo xtask fuzz`). That build turns on the fiso binary's
//! `wasmer` feature (off by default; the `fiso-wasmer` image's build), so the suite runs the
//! binary with everything in it; the refusals of a build without it are tested last, on the
//! libraries that have them.

mod steps;
mod test_output;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::infra;
use steps::Steps;
use test_output::{TestBinary, TestRun};

pub fn main(root: &Path) -> Result<()> {
    let mut steps = Steps::default();
    if let Some(xtask_build) = since_ci_started() {
        steps.record("build xtask (before this task ran)", xtask_build, true);
    }
    let free_at_start = free_disk(root);
    let result = all_steps(root, &mut steps);
    let free_at_end = free_disk(root);
    steps.note(format!(
        "disk free: {} at the start, {} at the end",
        gib(free_at_start),
        gib(free_at_end)
    ));
    if free_at_end.is_some_and(|free| free < LOW_DISK) {
        steps.note(
            "the disk is nearly full: a step that failed writing (\"No space left on device\"), \
             or pods the kubelet would not run, failed for the machine, not the code"
                .into(),
        );
    }
    steps.print();
    result
}

/// Below this, the kubelet of the e2e node stops running pods, and builds fail writing.
const LOW_DISK: u64 = 3 << 30;

/// Free bytes on the disk holding `dir`, as `df` counts them. The machine's disk is shared
/// with others: a run that finds it full fails in whatever step writes next, so the table
/// says how much there was.
fn free_disk(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    df_available(&String::from_utf8_lossy(&out.stdout))
}

/// The "Available" column (KiB) of `df -P`'s one filesystem line, in bytes.
fn df_available(text: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "unknown".to_owned(),
        |b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
    )
}

fn all_steps(root: &Path, steps: &mut Steps) -> Result<()> {
    let cargo = Cargo::new(root)?;
    steps.time("cargo fmt --check", || {
        run(cargo.plain().args(["fmt", "--all", "--", "--check"]))
    })?;
    // The CRD drift check is the `checked_in_crds_match_types` test in fiso-config.
    let build = steps.time("build + clippy (workspace, all targets)", || {
        build_tests(
            &mut cargo.linted(),
            &["--workspace", "--all-targets", WITH_WASMER],
        )
    })?;
    // Tests run against real servers: start them first, and stop what this run started
    // afterwards whatever the outcome (a server that was already up is left running).
    let ctx = infra::Ctx::new(root);
    let up = Instant::now();
    println!("==> infra up");
    infra::with_servers(&ctx, &[], || {
        steps.record("infra up", up.elapsed(), true);
        let mut test = cargo.linted();
        test.args(["test", "--workspace", WITH_WASMER, "--no-fail-fast"])
            .envs(infra::env_vars(&ctx))
            .env("PATH", infra::path_with_bin(&ctx));
        // The e2e suite runs the binaries this build made instead of building its own: a
        // `cargo build -p fiso` unifies features differently from the workspace's test build
        // and would compile much of the dependency tree a second time.
        if let Some(dir) = &build.bin_dir {
            test.env(E2E_BIN_DIR_ENV, dir);
        }
        test.env(E2E_XTASK_ENV, std::env::current_exe()?);
        run_tests(test, &build.tests, steps)
    })?;
    // The steps above build and test the wasmer interceptors and the apps runtime. What only a
    // build without it has — the engine's, fiso-flow's and fiso-apps' "this build has no
    // wasmer" refusals — is tested here, on those libraries alone (their own feature
    // resolution: about a minute of rebuilds).
    steps.time("without wasmer: the \"no wasmer\" refusals", || {
        run(cargo.linted().args([
            "test",
            "-p",
            "fiso-flow",
            "-p",
            "fiso-apps",
            "-p",
            "fiso-wasm",
            "--lib",
            "wasmer",
        ]))
    })
}

/// The time since `FISO_CI_STARTED` (Unix seconds, set by `.ci/run` before `cargo xtask ci`
/// compiles this program).
fn since_ci_started() -> Option<Duration> {
    let started: u64 = std::env::var("FISO_CI_STARTED").ok()?.parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    now.checked_sub(Duration::from_secs(started))
}

/// How CI invokes cargo.
struct Cargo {
    root: PathBuf,
    clippy_driver: PathBuf,
}

impl Cargo {
    fn new(root: &Path) -> Result<Self> {
        Ok(Cargo {
            root: root.to_path_buf(),
            clippy_driver: clippy_driver()?,
        })
    }

    fn plain(&self) -> Command {
        let mut cmd = crate::cargo::command();
        // CI builds once from scratch: incremental state would only take disk (gigabytes for
        // the workspace's test builds) on a machine whose disk is shared.
        cmd.env("CARGO_INCREMENTAL", "0").current_dir(&self.root);
        cmd
    }

    /// Cargo with the workspace's crates compiled by `clippy-driver`, lints denied: the
    /// environment `cargo clippy` itself sets for `cargo check` (`CLIPPY_ARGS` holds the
    /// arguments after `--`, each followed by the separator clippy-driver splits on). The
    /// same variables on every command keep the builds fresh from one step to the next.
    fn linted(&self) -> Command {
        let mut cmd = self.plain();
        cmd.env("RUSTC_WORKSPACE_WRAPPER", &self.clippy_driver).env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
        cmd
    }
}

/// `clippy-driver` of the toolchain that builds (rustup puts it beside `rustc`).
fn clippy_driver() -> Result<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let driver = PathBuf::from(String::from_utf8(out.stdout)?.trim())
        .join("bin")
        .join("clippy-driver");
    if !driver.is_file() {
        bail!(
            "{} is missing: install clippy (`rustup component add clippy`)",
            driver.display()
        );
    }
    Ok(driver)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The fiso binary's `wasmer` feature, on for the whole suite: the e2e tests run apps and
/// `runtime: wasmer` interceptors (the binary `fiso_e2e::bin` builds by hand has it too).
const WITH_WASMER: &str = "--features=fiso/wasmer";

/// Where the e2e suite takes `fiso`, `fiso-operator` and `fiso-testkit` from (its
/// `fiso_e2e::bin::BIN_DIR_ENV`), and the xtask it runs for images.
const E2E_BIN_DIR_ENV: &str = "FISO_E2E_BIN_DIR";
const E2E_XTASK_ENV: &str = "FISO_E2E_XTASK";

/// What the test build made.
struct TestBuild {
    /// Each test executable, keyed by file name, so the test run can say which package took
    /// how long.
    tests: HashMap<String, TestBinary>,
    /// The directory of the (non-test) binaries built for integration tests.
    bin_dir: Option<PathBuf>,
}

/// `cargo test --no-run <args>`: builds (and lints) every test target.
fn build_tests(cmd: &mut Command, args: &[&str]) -> Result<TestBuild> {
    cmd.args([
        "test",
        "--no-run",
        "--message-format",
        "json-render-diagnostics",
    ])
    .args(args)
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut build = TestBuild {
        tests: HashMap::new(),
        bin_dir: None,
    };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            println!("{line}");
            continue;
        };
        if let Some((file, binary)) = TestBinary::from_artifact(&message) {
            build.tests.insert(file, binary);
        } else if message["target"]["name"] == "fiso" && message["profile"]["test"] == false {
            build.bin_dir = message["executable"]
                .as_str()
                .and_then(|e| Path::new(e).parent())
                .map(Path::to_path_buf);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the build failed ({status})");
    }
    Ok(build)
}

/// Runs `cargo test` (stdout and stderr merged, in order, echoed as they come) and records the
/// time of each group of test binaries.
fn run_tests(
    mut cmd: Command,
    binaries: &HashMap<String, TestBinary>,
    steps: &mut Steps,
) -> Result<()> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // The pipe's write ends live in `cmd` too: drop them so the reader sees the end.
    drop(cmd);
    let mut run = TestRun::new(binaries);
    for line in BufReader::new(reader).lines() {
        let line = line?;
        println!("{line}");
        run.line(&line, Instant::now());
    }
    let status = child.wait()?;
    for group in run.finish(Instant::now()) {
        steps.record(&group.label(), group.elapsed, group.failed == 0);
    }
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_disk_is_read_from_dfs_portable_output() {
        let df = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                  /dev/vda        263174212 60718280  28513256      69% /\n";
        assert_eq!(df_available(df), Some(28_513_256 * 1024));
        assert_eq!(
            df_available("df: /nowhere: No such file or directory\n"),
            None
        );
        assert_eq!(gib(Some(3 << 30)), "3.0 GiB");
        assert_eq!(gib(None), "unknown");
        assert!(free_disk(Path::new(".")).is_some());
    }
}
