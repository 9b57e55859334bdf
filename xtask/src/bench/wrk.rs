//! Saturation load with `wrk`: its POST script, one run against a URL, and the reading of its
//! output (throughput, latency percentiles, errors) into a [`Load`].

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::payload;
use super::procs::cpu_seconds;

/// Open connections (over two wrk threads).
pub const CONNECTIONS: u32 = 64;

/// The Lua script wrk runs (from `post.lua` in the work directory): a POST of [`payload`].
pub fn script() -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        payload()
    )
}

/// One load measurement.
#[derive(Debug, Clone)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// CPU seconds the measured process spent per 1000 requests.
    pub cpu_per_1000: Option<f64>,
}

/// `seconds` of wrk against `url` with the script in `dir`; with `pid`, the CPU time that
/// process spent meanwhile.
pub fn run(dir: &Path, url: &str, seconds: u32, pid: Option<u32>) -> Result<Load> {
    run_with(dir, url, seconds, pid, CONNECTIONS)
}

/// [`run`] over `connections` connections (one wrk thread below two).
pub fn run_with(
    dir: &Path,
    url: &str,
    seconds: u32,
    pid: Option<u32>,
    connections: u32,
) -> Result<Load> {
    let cpu_before = pid.map(cpu_seconds);
    let out = Command::new("wrk")
        .args([
            &format!("-t{}", connections.clamp(1, 2)),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(dir.join("post.lua"))
        .arg(url)
        .output()?;
    let cpu_after = pid.map(cpu_seconds);
    let text = String::from_utf8_lossy(&out.stdout);
    let output =
        parse(&text).with_context(|| format!("wrk printed no Requests/sec for {url}:\n{text}"))?;
    let cpu_per_1000 = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if output.requests > 0.0 => Some((b - a) / (output.requests / 1000.0)),
        _ => None,
    };
    Ok(Load {
        rps: output.rps,
        p50_ms: output.p50_ms,
        p99_ms: output.p99_ms,
        errors: output.errors,
        cpu_per_1000,
    })
}

/// What one wrk run printed.
#[derive(Debug, PartialEq)]
struct Output {
    rps: f64,
    /// Requests completed in the whole run (0 when not printed).
    requests: f64,
    /// Non-2xx answers plus socket errors of every kind.
    errors: u64,
    /// Median and 99th percentile latency (NaN when not printed).
    p50_ms: f64,
    p99_ms: f64,
}

/// wrk's `--latency` output; `None` without a `Requests/sec` line (wrk failed).
fn parse(text: &str) -> Option<Output> {
    let find = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps: f64 = find("Requests/sec:").and_then(|v| v.parse().ok())?;
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        // Only the counts after the colon: "Non-2xx or 3xx" has digits of its own.
        .filter_map(|l| l.split_once(':').map(|(_, counts)| counts))
        .flat_map(|counts| counts.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    Some(Output {
        rps,
        requests,
        errors,
        p50_ms: find("50%").map(parse_latency).unwrap_or(f64::NAN),
        p99_ms: find("99%").map(parse_latency).unwrap_or(f64::NAN),
    })
}

/// `1.23ms`, `850.00us`, `1.02s` → milliseconds.
fn parse_latency(v: &str) -> f64 {
    let v = v.trim();
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.2's output for `-t2 -c64 -d2s --latency` with some failures.
    const OUTPUT: &str = "\
Running 2s test @ http://127.0.0.1:8080/ingest
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.92ms    1.07ms  27.41ms   89.22%
    Req/Sec    17.01k     1.21k   19.47k    72.50%
  Latency Distribution
     50%    1.71ms
     75%    2.21ms
     90%    2.89ms
     99%    5.93ms
  67712 requests in 2.00s, 10.53MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  33845.30
Transfer/sec:      5.26MB
";

    #[test]
    fn parses_throughput_latency_and_errors() {
        let out = parse(OUTPUT).unwrap();
        assert_eq!(
            out,
            Output {
                rps: 33845.30,
                requests: 67712.0,
                // Socket errors 0 + 3 + 0 + 2 and non-2xx 7 (not the 2 and 3 of the words
                // `Non-2xx or 3xx`).
                errors: 12,
                p50_ms: 1.71,
                p99_ms: 5.93,
            }
        );
    }

    #[test]
    fn no_requests_per_second_is_none() {
        assert_eq!(
            parse("unable to connect to 127.0.0.1:1 Connection refused\n"),
            None
        );
    }

    #[test]
    fn latency_units() {
        assert_eq!(parse_latency("850.00us"), 0.85);
        assert_eq!(parse_latency(" 1.23ms "), 1.23);
        assert_eq!(parse_latency("1.02s"), 1020.0);
        assert_eq!(parse_latency("4"), 4.0);
        assert!(parse_latency("n/a").is_nan());
    }

    #[test]
    fn the_script_posts_the_payload() {
        let script = script();
        assert!(script.starts_with("wrk.method = \"POST\"\n"));
        assert!(script.contains(&payload()));
    }
}
