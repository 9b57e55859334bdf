//! Where a Fiso process spends its CPU under load: `perf record -g` (Debian `linux-perf`) on the
//! process. The software `cpu-clock` event is used because VMs often expose no hardware
//! counters. Two views: the flat profile by self time (the function each sample landed in,
//! often libc's allocator or `memmove`), and each sample charged to the nearest Fiso function on
//! its stack (the bench builds with frame pointers), which names the code that caused it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Costs reported per scenario.
const TOP: usize = 3;

/// One line of a profile.
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
            .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-q", "-p"])
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
    pub fn finish(mut self) -> Result<Profile> {
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
        let flat = parse_report(&String::from_utf8_lossy(&out.stdout));
        let out = Command::new("perf")
            .args(["script", "-F", "ip,sym,dso", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        let by_fiso_function = by_nearest_fiso_function(&String::from_utf8_lossy(&out.stdout));
        Ok(Profile {
            flat,
            by_fiso_function,
        })
    }
}

/// The two views of one recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// By self time.
    pub flat: Vec<Cost>,
    /// Samples charged to the nearest Fiso function on their stack.
    pub by_fiso_function: Vec<Cost>,
}

/// Fiso's own crates: what a sample is charged to.
fn is_fiso_function(symbol: &str) -> bool {
    ["fiso_", "<fiso_", "fiso::", "<fiso::"]
        .iter()
        .any(|p| symbol.starts_with(p))
}

/// `perf script -F ip,sym,dso` with call chains: one frame per line, innermost first, samples
/// separated by blank lines. Samples with no Fiso frame (runtime threads idling, librdkafka's
/// threads) are charged to `(outside Fiso code)`.
fn by_nearest_fiso_function(script: &str) -> Vec<Cost> {
    let mut charged: std::collections::HashMap<String, u64> = Default::default();
    let mut total = 0u64;
    for sample in script.split("\n\n").filter(|s| !s.trim().is_empty()) {
        total += 1;
        let nearest = sample.lines().find_map(|frame| {
            // `    55d0c1a2b3c4 fiso_link::route::handle::{{closure}}+0x1f (/path/fiso)`
            let (_ip, rest) = frame.trim().split_once(char::is_whitespace)?;
            let symbol = rest.rsplit_once(" (").map_or(rest, |(s, _)| s);
            let symbol = symbol.rsplit_once("+0x").map_or(symbol, |(s, _)| s);
            is_fiso_function(symbol).then(|| symbol.to_owned())
        });
        *charged
            .entry(nearest.unwrap_or_else(|| "(outside Fiso code)".to_owned()))
            .or_default() += 1;
    }
    let mut costs: Vec<Cost> = charged
        .into_iter()
        .map(|(symbol, n)| Cost {
            percent: 100.0 * n as f64 / total.max(1) as f64,
            dso: "fiso".to_owned(),
            symbol,
        })
        .collect();
    costs.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    costs.truncate(TOP);
    costs
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

pub fn to_json(profile: &Profile) -> Value {
    let costs = |costs: &[Cost]| -> Value {
        costs
            .iter()
            .map(|c| json!({"percent": c.percent, "dso": c.dso, "symbol": c.symbol}))
            .collect()
    };
    json!({
        "self": costs(&profile.flat),
        "by_fiso_function": costs(&profile.by_fiso_function),
    })
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

    #[test]
    fn charges_samples_to_the_nearest_fiso_function() {
        let script = "\t    7f01 malloc+0x20 (/usr/lib/libc.so.6)\n\
                      \t    5501 alloc::raw_vec::finish_grow+0x11 (/t/fiso)\n\
                      \t    5502 fiso_link::route::handle::{{closure}}+0x1f (/t/fiso)\n\
                      \t    5503 tokio::runtime::task::raw::poll+0x9 (/t/fiso)\n\
                      \n\
                      \t    5504 <fiso_flow::sink::http::HttpSink as fiso_flow::sink::Sink>::deliver+0x3 (/t/fiso)\n\
                      \n\
                      \t    ffff do_syscall_64+0x5 ([kernel.kallsyms])\n\
                      \t    5505 mio::poll::Poll::poll+0x1 (/t/fiso)\n\
                      \n\
                      \t    7f02 free+0x2 (/usr/lib/libc.so.6)\n\
                      \t    5506 fiso_link::route::handle::{{closure}}+0x44 (/t/fiso)\n";
        let costs = by_nearest_fiso_function(script);
        assert_eq!(costs[0].symbol, "fiso_link::route::handle::{{closure}}");
        assert_eq!(costs[0].percent, 50.0);
        let rest: Vec<&str> = costs[1..].iter().map(|c| c.symbol.as_str()).collect();
        assert!(rest.contains(&"(outside Fiso code)"), "{rest:?}");
        assert!(
            rest.contains(&"<fiso_flow::sink::http::HttpSink as fiso_flow::sink::Sink>::deliver"),
            "{rest:?}"
        );
    }
}
