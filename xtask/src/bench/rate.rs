//! Latency at a constant request rate, with Debian `hey`: 10 workers × 100 req/s = 1000 req/s
//! (`-q` limits each worker). wrk measures latency at saturation, where it is mostly queueing;
//! at a fixed rate well below every variant's ceiling the difference between variants is the
//! latency each adds to a request. Few workers at a higher rate each: hey's workers start
//! together, so 50 workers at 20 req/s arrive in bursts of 50 and measure the queue of a burst,
//! not the proxy.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// Requests per second of every constant-rate measurement.
pub const RATE: u32 = 1000;
pub const WORKERS: u32 = 10;

/// One constant-rate measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// What was achieved (below [`RATE`] when the variant could not keep up).
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx responses plus connection errors.
    pub errors: u64,
}

/// POSTs the JSON file `body` to `url` at [`RATE`] req/s for `seconds`.
pub fn hey(body: &Path, url: &str, seconds: u32) -> Result<Rate> {
    let out = Command::new("hey")
        .args(["-z", &format!("{seconds}s")])
        .args(["-c", &WORKERS.to_string()])
        .args(["-q", &(RATE / WORKERS).to_string()])
        .args(["-m", "POST", "-T", "application/json", "-D"])
        .arg(body)
        .arg(url)
        .output()
        .context("running hey")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).with_context(|| format!("hey printed no latency distribution for {url}:\n{text}"))
}

/// The summary's `Requests/sec`, the `50%` / `99%` lines of `Latency distribution` (seconds),
/// and the counts of `Status code distribution` (other than 2xx) and `Error distribution`.
fn parse(text: &str) -> Option<Rate> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let percentile = |p: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(p)?.trim().strip_prefix("in "))
            .and_then(|v| v.trim().strip_suffix("secs"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| s * 1e3)
    };
    let rps = lines
        .iter()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    // `[200]\t9991 responses` / `[502]\t3 responses`; errors: `[12]\tPost "...": ...`.
    let mut errors = 0;
    let mut section = "";
    for line in &lines {
        if line.ends_with("distribution:") {
            section = line;
            continue;
        }
        let Some((code, rest)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
            continue;
        };
        let count = |s: &str| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        };
        match section {
            "Status code distribution:" if !code.starts_with('2') => {
                errors += count(rest).unwrap_or(0);
            }
            // The count is in the brackets here.
            "Error distribution:" => errors += code.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    Some(Rate {
        rps,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "
Summary:
  Total:\t3.0030 secs
  Slowest:\t0.0153 secs
  Fastest:\t0.0002 secs
  Average:\t0.0009 secs
  Requests/sec:\t998.6681

  Total data:\t5994 bytes
  Size/request:\t2 bytes

Response time histogram:
  0.000 [1]\t|
  0.002 [2917]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  10% in 0.0004 secs
  25% in 0.0005 secs
  50% in 0.0008 secs
  75% in 0.0011 secs
  90% in 0.0014 secs
  95% in 0.0017 secs
  99% in 0.0031 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0000 secs, 0.0002 secs, 0.0153 secs

Status code distribution:
  [200]\t2995 responses
  [502]\t2 responses

Error distribution:
  [3]\tPost \"http://127.0.0.1:1/x\": dial tcp 127.0.0.1:1: connect: connection refused
";

    #[test]
    fn parses_rate_percentiles_and_errors() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.rps, 998.6681);
        assert!((r.p50_ms - 0.8).abs() < 1e-9, "{r:?}");
        assert!((r.p99_ms - 3.1).abs() < 1e-9, "{r:?}");
        assert_eq!(r.errors, 5);
    }

    #[test]
    fn no_distribution_is_none() {
        assert_eq!(parse("Summary:\n  Requests/sec:\t0.0000\n"), None);
    }
}
