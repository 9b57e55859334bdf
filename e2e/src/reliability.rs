//! The reliability suite's scale and figures: `cargo test` runs `tests/reliability.rs` short;
//! `cargo xtask reliability` runs it at full scale (`FISO_RELIABILITY=full`) against a release
//! build and turns the figures each scenario records into a report.
//!
//! Scenarios assert what must hold (nothing lost, no failed request); how long things took,
//! duplicates and memory are figures for the report, never assertions.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// `full` selects the full-scale run.
pub const SCALE_ENV: &str = "FISO_RELIABILITY";
/// Where scenarios write their figures (default `target/reliability` of the workspace).
pub const REPORT_DIR_ENV: &str = "FISO_RELIABILITY_DIR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Seconds per scenario: what CI runs on every change.
    Short,
    /// The sizes the issue names (100k records, 5 crashes, 50 reloads, 60 s soak).
    Full,
}

impl Scale {
    pub fn from_env() -> Scale {
        match std::env::var(SCALE_ENV).as_deref() {
            Ok("full") => Scale::Full,
            _ => Scale::Short,
        }
    }

    /// `short` or `full`, whichever this run is.
    pub fn pick<T>(self, short: T, full: T) -> T {
        match self {
            Scale::Short => short,
            Scale::Full => full,
        }
    }

    /// A deadline for work whose size depends on the scale (a bound on hangs, not a
    /// performance expectation).
    pub fn deadline(self) -> Duration {
        self.pick(Duration::from_secs(120), Duration::from_secs(1800))
    }

    pub fn name(self) -> &'static str {
        self.pick("short", "full")
    }
}

/// The directory scenario figures go to.
pub fn report_dir() -> PathBuf {
    std::env::var_os(REPORT_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::infra::workspace_root().join("target/reliability"))
}

/// Records `figures` of `scenario` (printed, and written to `<report_dir>/<scenario>.json`).
pub fn record(scenario: &str, scale: Scale, mut figures: Value) {
    figures["scenario"] = scenario.into();
    figures["scale"] = scale.name().into();
    println!("figures of {scenario}: {figures}");
    let dir = report_dir();
    std::fs::create_dir_all(&dir).expect("creating the reliability report directory");
    let path = dir.join(format!("{scenario}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Resident memory of a process now (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

/// A `kB` field of `/proc/<pid>/status`.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}
