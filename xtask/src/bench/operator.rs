//! Operator timings: `e2e/tests/operator_timings.rs` against the Kubernetes control plane of
//! `infra up` (apply → Ready, apply → ConfigMap, pod admission with and without injection;
//! 50 FlowDefinitions, 5 with `--quick`), its figures read back for the report.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{infra, measure};

pub fn run(root: &Path, out: &Path, quick: bool) -> Result<Value> {
    let dir = out.join("operator");
    let _ = std::fs::remove_dir_all(&dir);
    infra::with_servers(
        &infra::Ctx::new(root),
        &["kubernetes", "kube-tools"],
        || {
            println!("bench: operator timings");
            measure::run_scenarios(root, "operator_timings", !quick, &dir, &[])
        },
    )?;
    let path = dir.join("operator.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The report's operator section.
pub fn markdown(r: &Value) -> String {
    let row = |what: &str, key: &str| {
        format!(
            "| {what} | {:.1} | {:.1} |\n",
            r[key]["p50"].as_f64().unwrap_or_default(),
            r[key]["p99"].as_f64().unwrap_or_default()
        )
    };
    format!(
        "**Operator** ({} FlowDefinitions, one at a time, on the local control plane)\n\n\
         | from → to | p50 ms | p99 ms |\n|---|---|---|\n{}{}{}{}\n\
         Admission latency of the webhook ≈ injected − plain pod creation.\n",
        r["resources"],
        row("apply → status Ready", "apply_to_ready_ms"),
        row(
            "apply → rendered into the pod's ConfigMap",
            "apply_to_configmap_ms"
        ),
        row(
            "create an opted-in pod (webhook injects)",
            "pod_create_injected_ms"
        ),
        row(
            "create a plain pod (API server alone)",
            "pod_create_plain_ms"
        ),
    )
}
