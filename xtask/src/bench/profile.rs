//! Where a Fiso process spends its CPU under load: `perf record` (Debian `linux-perf`) on the
//! process, flat profile by self time. The software `cpu-clock` event is used because VMs
//! often expose no hardware counters; there are no call graphs (release builds keep no frame
//! pointers), so each cost is the function the samples landed in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Costs reported per scenario.
const TOP: usize = 3;

/// One line of the flat profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub percent: f64,
    /// The binary or library (`fiso`, `libc.so.6`, `[kernel.kallsyms]`).
    pub dso: String,
    pub symbol: String,
}

/// `Err(reason)` when perf cannot record here (not installed, no perf events in this VM, ...).
pub fn available(dir: &Path) -> std::result::Result<(), String> {
    let out = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-q", "-o"])
        .arg(dir.join("perf-probe.data"))
        .args(["--", "true"])
        .output()
        .map_err(|e| format!("perf not found ({e}); install Debian linux-perf"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "perf record failed: {}",
            err.lines().next().unwrap_or("no output").trim()
        ))
    }
}

/// A `perf record` attached to a running process until [`Recording::finish`].
pub struct Recording {
    perf: Child,
    data: PathBuf,
}

impl Recording {
    pub fn start(pid: u32, data: &Path) -> Result<Self> {
        let perf = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "999", "-q", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        // perf attaches asynchronously; samples from before it did are simply missing.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(Self {
            perf,
            data: data.to_owned(),
        })
    }

    /// Stops recording (SIGINT, so perf writes its data) and returns the top costs.
    pub fn finish(mut self) -> Result<Vec<Cost>> {
        let _ = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status();
        // Its exit status after SIGINT varies between versions; the data file tells.
        self.perf.wait()?;
        if !self.data.exists() {
            bail!("perf record wrote no {}", self.data.display());
        }
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "dso,symbol"])
            .arg("-i")
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        Ok(parse_report(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// `    12.34%  fiso  [.] symbol name` lines, highest first.
fn parse_report(text: &str) -> Vec<Cost> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (percent, rest) = l.trim().split_once('%')?;
            let percent: f64 = percent.trim().parse().ok()?;
            let (dso, rest) = rest.trim().split_once(char::is_whitespace)?;
            // Some perf versions append `-  -` (IPC columns) after wide padding; symbols
            // never contain two spaces in a row.
            let symbol = rest
                .trim()
                .trim_start_matches("[.]")
                .trim_start_matches("[k]")
                .trim()
                .split("  ")
                .next()
                .unwrap_or_default();
            Some(Cost {
                percent,
                dso: dso.to_owned(),
                symbol: symbol.to_owned(),
            })
        })
        .take(TOP)
        .collect()
}

pub fn to_json(costs: &[Cost]) -> Value {
    Value::Array(
        costs
            .iter()
            .map(|c| json!({"percent": c.percent, "dso": c.dso, "symbol": c.symbol}))
            .collect(),
    )
}

/// `12.3% fiso: symbol` (long Rust paths shortened), for the markdown report.
pub fn describe(cost: &Value) -> String {
    let symbol = cost["symbol"].as_str().unwrap_or("?");
    let short: String = if symbol.chars().count() > 90 {
        symbol.chars().take(87).chain("...".chars()).collect()
    } else {
        symbol.to_owned()
    };
    format!(
        "{:.1}% `{}` in {}",
        cost["percent"].as_f64().unwrap_or(f64::NAN),
        short.replace('`', "'"),
        cost["dso"].as_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flat_report() {
        let text =
            "# Samples: 125  of event 'cpu-clock'\n#\n# Overhead  Shared Object      Symbol\n\
                    # ........  .................  ......\n#\n\
                    \x20   28.80%  [kernel.kallsyms]  [k] do_syscall_64\n\
                    \x20   19.20%  fiso               [.] hyper::proto::h1::role::parse_headers\n\
                    \x20    9.60%  libc.so.6          [.] __memmove_avx_unaligned_erms            -      -\n\
                    \x20    1.00%  fiso               [.] other\n";
        let costs = parse_report(text);
        assert_eq!(costs.len(), 3);
        assert_eq!(costs[0].percent, 28.8);
        assert_eq!(costs[0].dso, "[kernel.kallsyms]");
        assert_eq!(costs[0].symbol, "do_syscall_64");
        assert_eq!(costs[1].symbol, "hyper::proto::h1::role::parse_headers");
        assert_eq!(costs[2].dso, "libc.so.6");
        assert_eq!(costs[2].symbol, "__memmove_avx_unaligned_erms");
    }
}
