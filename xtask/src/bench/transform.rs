//! The CEL transform against hand-written serde_json code: the criterion benchmark of
//! `dataplane/flow/benches/transform.rs`, run and read back per shape.

use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The criterion benchmark of `dataplane/flow/benches/transform.rs`: per shape, the CEL
/// transform's and the hand-written serde_json code's median time per event.
pub fn run(root: &Path, quick: bool) -> Result<Value> {
    println!("bench: CEL transform vs serde_json (criterion)");
    let (warm, measure) = if quick { ("0.2", "0.3") } else { ("1", "3") };
    let out = crate::cargo::command()
        .args(["bench", "-p", "fiso-flow", "--bench", "transform", "--"])
        .args(["--warm-up-time", warm, "--measurement-time", measure])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("cargo bench -p fiso-flow --bench transform failed");
    }
    Ok(shapes(&String::from_utf8_lossy(&out.stdout)))
}

/// Criterion's output → per shape, `cel_ns`, `serde_json_ns` and their ratio (null when a
/// variant is missing), in the order the shapes first appear.
fn shapes(text: &str) -> Value {
    // `<shape>/<variant>  time:   [low median high]`, the name sometimes on the line before.
    let mut name = String::new();
    let mut times: Vec<(String, String, f64)> = Vec::new();
    for line in text.lines() {
        let (head, tail) = match line.split_once("time:") {
            Some((h, t)) => (h.trim(), Some(t)),
            None => (line.trim(), None),
        };
        if !head.is_empty() && head.contains('/') && !head.starts_with("Benchmarking") {
            name = head.to_owned();
        }
        let Some(tail) = tail else { continue };
        let parts: Vec<&str> = tail
            .trim_matches(|c| c == ' ' || c == '[' || c == ']')
            .split_whitespace()
            .collect();
        let (Some(value), Some(unit)) = (parts.get(2), parts.get(3)) else {
            continue;
        };
        let factor = match *unit {
            "ps" => 1e-3,
            "ns" => 1.0,
            "µs" | "us" => 1e3,
            "ms" => 1e6,
            _ => f64::NAN,
        };
        let ns = value.parse::<f64>().unwrap_or(f64::NAN) * factor;
        if let Some((shape, variant)) = name.rsplit_once('/') {
            times.push((shape.to_owned(), variant.to_owned(), ns));
        }
    }
    let mut shapes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (shape, _, _) in &times {
        if seen.contains(shape) {
            continue;
        }
        seen.push(shape.clone());
        let of = |v: &str| {
            times
                .iter()
                .find(|(s, x, _)| s == shape && x == v)
                .map(|t| t.2)
        };
        let (cel, hand) = (of("cel"), of("serde_json"));
        shapes.push(json!({
            "shape": shape, "cel_ns": cel, "serde_json_ns": hand,
            "ratio": cel.zip(hand).map(|(c, h)| c / h),
        }));
    }
    Value::Array(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Criterion 0.5's stdout: the name on the `time:` line, or on the line before when it is
    /// long, progress lines, a throughput and a change line.
    const OUTPUT: &str = "\
Benchmarking flat/cel: Warming up for 1.0000 s
Benchmarking flat/cel: Collecting 100 samples in estimated 3.0001 s (2.1M iterations)
Benchmarking flat/cel: Analyzing
flat/cel                time:   [1.3901 µs 1.4000 µs 1.4102 µs]
                        change: [-1.2% +0.5% +2.1%] (p = 0.61 > 0.05)
flat/serde_json         time:   [349.12 ns 350.00 ns 351.40 ns]
                        thrpt:  [2.8461 Melem/s 2.8571 Melem/s 2.8643 Melem/s]
nested_with_arrays/cel
                        time:   [2.0000 ms 2.5000 ms 3.0000 ms]
nested_with_arrays/serde_json
                        time:   [900.00 ps 1000.0 ps 1100.0 ps]
only_cel/cel            time:   [10.000 us 20.000 us 30.000 us]
";

    #[test]
    fn medians_per_shape_in_nanoseconds() {
        let shapes = shapes(OUTPUT);
        assert_eq!(
            shapes,
            json!([
                {"shape": "flat", "cel_ns": 1400.0, "serde_json_ns": 350.0, "ratio": 4.0},
                {"shape": "nested_with_arrays", "cel_ns": 2_500_000.0, "serde_json_ns": 1.0,
                 "ratio": 2_500_000.0},
                {"shape": "only_cel", "cel_ns": 20_000.0, "serde_json_ns": null, "ratio": null},
            ])
        );
    }

    #[test]
    fn no_benchmarks_no_shapes() {
        assert_eq!(
            shapes("error: no bench target named `transform`\n"),
            json!([])
        );
    }
}
