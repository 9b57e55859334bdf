//! `cargo xtask fuzz [--seconds N] [target...]`: the cargo-fuzz targets of `fuzz/`, each run for
//! N seconds (default 30), with a report in `target/fuzz/report.md`. CI does not fuzz: it replays
//! the checked-in inputs as tests (`fuzz/targets/tests/replay.rs`).
//!
//! * `cargo-fuzz` is installed into `target/infra` (like the other tools) unless
//!   `cargo fuzz --version` already works.
//! * The targets need nightly compiler flags; `RUSTC_BOOTSTRAP=1` unlocks them on the stable
//!   toolchain, so no second toolchain is installed.
//! * `--sanitizer none`: every fuzzed crate is safe Rust, where AddressSanitizer has nothing to
//!   find that the borrow checker has not ruled out, yet it doubles the build (every
//!   dependency instrumented) and slows each execution 2-3×. Without it libFuzzer still catches
//!   what safe Rust can do wrong: panics, stack overflows (the abort they end in), hangs
//!   (`-timeout`) and runaway memory (`-rss_limit_mb`).
//! * All targets are built by one `cargo fuzz build` (one dependency build, shared), in
//!   `fuzz/target`, never in the workspace's `target/` that other builds use.
//! * Corpora grow in `fuzz/corpus/<target>` (gitignored) and start from the checked-in
//!   `fuzz/seeds/<target>` (hand-written seeds and `minimized/`, a set-cover merge of earlier
//!   corpora); crashes land in `fuzz/artifacts/<target>`.
//!
//! Exits non-zero when any target found a crash, naming the reproducer.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::infra::{self, Ctx};

/// Every target in `fuzz/fuzz_targets`, in the order they run.
pub const TARGETS: [&str; 7] = [
    "flow_config",
    "cel",
    "reload",
    "http_body",
    "link_path",
    "admission",
    "upstream_answer",
];

/// Seconds per target unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 30;

/// One input that takes longer than this is a finding: a flow evaluates per event.
const UNIT_TIMEOUT_SECONDS: u64 = 10;

/// What one run of a target found.
#[derive(Debug, Default)]
struct Run {
    target: String,
    seconds: u64,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    /// `cov:` (coverage points) and `ft:` (features) of libFuzzer's last status line.
    coverage: Option<u64>,
    features: Option<u64>,
    corpus: Option<u64>,
    /// libFuzzer's `SUMMARY:` line when it stopped on a finding.
    finding: Option<String>,
    artifact: Option<PathBuf>,
    log: PathBuf,
    success: bool,
}

impl Run {
    fn result(&self) -> String {
        match (&self.finding, &self.artifact, self.success) {
            (_, _, true) => "ok".into(),
            (finding, artifact, false) => {
                let mut s = finding.clone().unwrap_or_else(|| "failed".into());
                if let Some(a) = artifact {
                    s.push_str(&format!(" — `{}`", a.display()));
                }
                s
            }
        }
    }
}

/// `cargo xtask fuzz [--seconds N] [target...]`.
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let (seconds, targets) = parse_args(args)?;
    let ctx = Ctx::new(root);
    let fuzz_dir = root.join("fuzz");
    let report_dir = root.join("target").join("fuzz");
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;

    ensure_cargo_fuzz(&ctx)?;

    println!("==> cargo fuzz build --sanitizer none (all targets)");
    let started = Instant::now();
    let status = cargo_fuzz(&ctx, &fuzz_dir)
        .args(["build", "--sanitizer", "none"])
        .status()
        .context("starting cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    let build_time = started.elapsed();
    println!("    built in {}", format_duration(build_time));

    let mut runs = Vec::new();
    for target in &targets {
        println!("==> fuzz {target} for {seconds} s");
        let run = run_target(&ctx, &fuzz_dir, &report_dir, target, seconds)?;
        println!(
            "    {}: {} executions, cov {}, ft {} (log: {})",
            run.result(),
            show(run.executions),
            show(run.coverage),
            show(run.features),
            run.log.display()
        );
        runs.push(run);
    }

    let report = report_dir.join("report.md");
    std::fs::write(&report, render_report(&runs, build_time))
        .with_context(|| format!("writing {}", report.display()))?;
    println!("wrote {}", report.display());

    let failed: Vec<&Run> = runs.iter().filter(|r| !r.success).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for run in &failed {
        eprintln!("fuzz target {} failed: {}", run.target, run.result());
        if let Some(artifact) = &run.artifact {
            eprintln!(
                "  reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none {} {}",
                run.target,
                artifact.display()
            );
        }
    }
    bail!(
        "{} fuzz target(s) failed: {}",
        failed.len(),
        failed
            .iter()
            .map(|r| r.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn parse_args(args: &[String]) -> Result<(u64, Vec<String>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a value")?;
                seconds = value
                    .parse()
                    .with_context(|| format!("--seconds {value:?} is not a whole number"))?;
            }
            name if TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => bail!(
                "unknown fuzz argument {other:?}; usage: cargo xtask fuzz [--seconds N] [{}]",
                TARGETS.join("|")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok((seconds, targets))
}

/// `cargo fuzz` in `fuzz/`, with the infra bin dir on `PATH` (where an installed `cargo-fuzz`
/// lives) and nightly features unlocked.
fn cargo_fuzz(ctx: &Ctx, fuzz_dir: &Path) -> Command {
    let mut cmd = crate::cargo::command();
    cmd.arg("fuzz")
        .current_dir(fuzz_dir)
        .env("PATH", infra::path_with_bin(ctx))
        .env("RUSTC_BOOTSTRAP", "1")
        // The instrumented build must stay in fuzz/target: a shared target dir would mix its
        // flags with the workspace's builds and rebuild both every time.
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

fn ensure_cargo_fuzz(ctx: &Ctx) -> Result<()> {
    let works = |ctx: &Ctx| {
        cargo_fuzz(ctx, Path::new("."))
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(ctx) {
        return Ok(());
    }
    let logs = ctx.logs_dir();
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join("cargo-fuzz-install.log");
    println!(
        "==> cargo install cargo-fuzz --locked (into {}, log {})",
        ctx.dir.display(),
        log_path.display()
    );
    let log = std::fs::File::create(&log_path)?;
    let status = crate::cargo::command()
        .args(["install", "cargo-fuzz", "--locked", "--root"])
        .arg(&ctx.dir)
        .env_remove("CARGO_TARGET_DIR")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting cargo install cargo-fuzz")?;
    if !status.success() || !works(ctx) {
        bail!(
            "installing cargo-fuzz failed ({status}); see {}",
            log_path.display()
        );
    }
    Ok(())
}

fn run_target(
    ctx: &Ctx,
    fuzz_dir: &Path,
    report_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<Run> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let log_path = report_dir.join(format!("{target}.log"));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;

    // The first corpus dir is where libFuzzer adds new inputs; the seeds are only read.
    let mut child = cargo_fuzz(ctx, fuzz_dir)
        .args(["run", "--sanitizer", "none", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;

    // libFuzzer reports on stderr; cargo fuzz's own messages may come on either. Merge both
    // into the log (stdout is small, so reading it after stderr cannot deadlock the child).
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut run = Run {
        target: target.to_owned(),
        seconds,
        log: log_path.clone(),
        ..Run::default()
    };
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        observe(&mut run, &line, fuzz_dir);
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(
        &mut child.stdout.take().expect("stdout is piped"),
        &mut stdout,
    )?;
    for line in stdout.lines() {
        writeln!(log, "{line}")?;
        observe(&mut run, line, fuzz_dir);
    }
    run.success = child.wait()?.success();
    if !run.success {
        print_tail(&log_path, 40);
    }
    Ok(run)
}

/// Picks the numbers and findings out of one line of libFuzzer output.
fn observe(run: &mut Run, line: &str, fuzz_dir: &Path) {
    let line = line.trim();
    // `#123456	DONE   cov: 1234 ft: 5678 corp: 90/12Kb lim: 4096 exec/s: 4115 rss: 60Mb`
    if line.starts_with('#') {
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            let value = || words.clone().next().and_then(leading_number);
            match word {
                "cov:" => run.coverage = value().or(run.coverage),
                "ft:" => run.features = value().or(run.features),
                "corp:" => run.corpus = value().or(run.corpus),
                "exec/s:" => run.exec_per_sec = value().or(run.exec_per_sec),
                _ => {}
            }
        }
    } else if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
        run.executions = v.trim().parse().ok();
    } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
        run.exec_per_sec = v.trim().parse().ok();
    } else if let Some(summary) = line.strip_prefix("SUMMARY: libFuzzer: ") {
        run.finding = Some(summary.to_owned());
    } else if let Some(rest) = line.split("Test unit written to ").nth(1) {
        let path = PathBuf::from(rest.trim());
        run.artifact = Some(if path.is_absolute() {
            path
        } else {
            fuzz_dir.join(path)
        });
    }
}

/// `12Kb` → 12, `90/12Kb` → 90.
fn leading_number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

fn print_tail(path: &Path, lines: usize) {
    if let Ok(text) = std::fs::read_to_string(path) {
        let all: Vec<&str> = text.lines().collect();
        eprintln!("---- last lines of {} ----", path.display());
        for line in &all[all.len().saturating_sub(lines)..] {
            eprintln!("{line}");
        }
    }
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "?".into(), |n| n.to_string())
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

fn render_report(runs: &[Run], build_time: Duration) -> String {
    let mut out = String::from("# Fuzzing report\n\n");
    out.push_str(&format!(
        "`cargo xtask fuzz`, sanitizer none; build of all targets: {} (a no-op when nothing \
         changed).\n\n",
        format_duration(build_time)
    ));
    out.push_str(
        "| Target | Seconds | Executions | Exec/s | Coverage (cov) | Features (ft) | Corpus | Result |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.target,
            r.seconds,
            show(r.executions),
            show(r.exec_per_sec),
            show(r.coverage),
            show(r.features),
            show(r.corpus),
            r.result()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_is_read() {
        let mut run = Run::default();
        let dir = Path::new("/w/fuzz");
        for line in [
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#524288\tpulse  cov: 1234 ft: 5678 corp: 90/12Kb lim: 4096 exec/s: 4115 rss: 60Mb",
            "stat::number_of_executed_units: 600000",
            "stat::average_exec_per_sec:     20000",
            "SUMMARY: libFuzzer: deadly signal",
            "artifact_prefix='/w/fuzz/artifacts/cel/'; Test unit written to /w/fuzz/artifacts/cel/crash-ab",
        ] {
            observe(&mut run, line, dir);
        }
        assert_eq!(run.coverage, Some(1234));
        assert_eq!(run.features, Some(5678));
        assert_eq!(run.corpus, Some(90));
        assert_eq!(run.executions, Some(600_000));
        assert_eq!(run.exec_per_sec, Some(20_000));
        assert_eq!(run.finding.as_deref(), Some("deadly signal"));
        assert_eq!(
            run.artifact.as_deref(),
            Some(Path::new("/w/fuzz/artifacts/cel/crash-ab"))
        );
    }

    #[test]
    fn arguments() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let (seconds, targets) = args(&[]).unwrap();
        assert_eq!(seconds, DEFAULT_SECONDS);
        assert_eq!(targets, TARGETS);
        let (seconds, targets) = args(&["--seconds", "600", "cel"]).unwrap();
        assert_eq!((seconds, targets), (600, vec!["cel".to_owned()]));
        assert!(args(&["nope"]).is_err());
        assert!(args(&["--seconds"]).is_err());
    }
}
