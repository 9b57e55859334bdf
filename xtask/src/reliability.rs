//! `cargo xtask reliability [--short | --report-only]`: the reliability suite (`e2e/tests/reliability.rs`) at
//! full scale against a release build of `fiso`, with the Kafka broker of `infra up`, then a
//! report of what each scenario recorded in `target/reliability/report.md` (+ `report.json`).
//!
//! `cargo test` (and so CI) runs the same scenarios at the short scale on every change; the
//! fuzzing half of the suite is `cargo xtask fuzz`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::infra;
use crate::measure::{build_release, machine, run_scenarios, target_dir};

/// Scenario order in the report, with what each proves.
const SCENARIOS: &[(&str, &str)] = &[
    (
        "crash",
        "Kafka → HTTP with `kill -9` of the flow process at random points: every record id reached the sink",
    ),
    (
        "outage",
        "HTTP sink refusing connections, then answering 503, then 200: delivered + dead-lettered covers every record",
    ),
    (
        "poison",
        "Malformed JSON and transform failures interleaved: exactly the good records delivered, in order per partition; the rest dead-lettered with their error code",
    ),
    (
        "reload",
        "Flow and link configs rewritten (valid and invalid alternately) under constant HTTP load: no failed request",
    ),
    (
        "link_security",
        "Path escapes, absolute URI / Host spoofing, 1 MiB header, slow headers and bodies: refused or cut off; the injected secret in no answer, metric or (debug) log line",
    ),
    (
        "soak",
        "Link at a constant rate: no error; resident memory at start and end",
    ),
    (
        "cel_bounds",
        "Flow files beyond the CEL bounds (a 5,000-deep chain, a 2,000-term sum, a syntax error past column 65,535, a constant of 250³ iterations) and unreadable files (a symlink loop): each refused as its own problem while another flow serves; a later edit is applied",
    ),
    (
        "cel_isolation",
        "As many events as cores burning a raised CEL budget: /healthz and another flow keep answering",
    ),
    (
        "fd_exhaustion",
        "`fiso flow` at RLIMIT_NOFILE 128 with 200 idle connections: deadlines free the descriptors, /healthz answers again, a reload still applies; accept errors logged about once a second",
    ),
    (
        "link_client_faults",
        "Clients hanging up mid-body or sending malformed chunked bodies, past the breaker's threshold: 499 / 400 to them, the breaker stays closed, the next request passes",
    ),
    (
        "sink_answer_cap",
        "Three concurrent 1 GiB sink answers: each refused with 502 SINK_RESPONSE_TOO_LARGE, memory bounded, no answer read to its end",
    ),
];

/// E2e test binaries beside `reliability` whose hardening scenarios record figures too (at
/// one scale: they are bounds, not volumes).
const HARDENING_TESTS: [&str; 5] = [
    "flow_hostile",
    "flow_cel_isolation",
    "connections",
    "link",
    "flow_integrity",
];

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let out = target_dir(root).join("reliability");
    if args.iter().any(|a| a == "--report-only") {
        return write_report(&out);
    }
    let full = !args.iter().any(|a| a == "--short");
    let fiso = build_release(root)?.join("fiso");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;

    infra::with_servers(&infra::Ctx::new(root), &["kafka", "openbao"], || {
        let env = [("FISO_BIN", fiso.as_os_str())];
        run_scenarios(root, "reliability", full, &out, &env)?;
        for test in HARDENING_TESTS {
            run_scenarios(root, test, full, &out, &env)?;
        }
        Ok(())
    })?;
    write_report(&out)
}

/// `report.md` / `report.json` in `out` from the figures the scenarios recorded there.
fn write_report(out: &Path) -> Result<()> {
    let report = report(out)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("report.md"), markdown(&report))?;
    println!("reliability: report in {}", out.join("report.md").display());
    Ok(())
}

fn report(dir: &Path) -> Result<Value> {
    let mut scenarios = Vec::new();
    for (name, what) in SCENARIOS {
        let path = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut figures: Value = serde_json::from_str(&text)?;
        figures["proves"] = (*what).into();
        scenarios.push(figures);
    }
    Ok(json!({"machine": machine(), "scenarios": scenarios}))
}

fn markdown(report: &Value) -> String {
    let m = &report["machine"];
    let mut out = format!(
        "# Reliability report\n\nMachine: {} ({} cores), kernel {}. Every scenario passed its \
         assertions; the figures below are measurements, not thresholds.\n\n\
         | scenario | scale | what it proves | figures |\n|---|---|---|---|\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
    );
    for s in report["scenarios"].as_array().into_iter().flatten() {
        let figures: Vec<String> = s
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "scenario" | "scale" | "proves"))
            .map(|(k, v)| format!("{k}: {}", figure(v)))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s["scenario"].as_str().unwrap_or("?"),
            s["scale"].as_str().unwrap_or("?"),
            s["proves"].as_str().unwrap_or(""),
            figures.join("; ")
        ));
    }
    out
}

/// A figure for a table cell: floats with two decimals.
fn figure(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or_default()),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(figure).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}
