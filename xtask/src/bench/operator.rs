//! Operator timings: `e2e/tests/operator_timings.rs` against the Kubernetes control plane of
//! `infra up` (apply → Ready, apply → ConfigMap, pod admission with and without injection;
//! 50 FlowDefinitions, 5 with `--quick`), its figures read back for the report.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::infra;

pub fn run(root: &Path, out: &Path, quick: bool) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ctx = infra::Ctx::new(root);
    let mut started = Vec::new();
    let dir = out.join("operator");
    let _ = std::fs::remove_dir_all(&dir);
    let result = infra::up(
        &ctx,
        &["kubernetes".to_owned(), "kube_tools".to_owned()],
        &mut started,
    )
    .and_then(|()| {
        println!("bench: operator timings");
        let status = Command::new(&cargo)
            .args(["test", "-p", "fiso-e2e", "--test", "operator_timings"])
            .args(["--", "--nocapture"])
            .envs(infra::env_vars(&ctx))
            .env("PATH", infra::path_with_bin(&ctx))
            .env("FISO_RELIABILITY", if quick { "short" } else { "full" })
            .env("FISO_RELIABILITY_DIR", &dir)
            .current_dir(root)
            .status()?;
        if !status.success() {
            bail!("the operator timing run failed (see its output above)");
        }
        Ok(())
    });
    let names: Vec<String> = started.iter().map(|s| s.to_string()).collect();
    let down = if names.is_empty() {
        Ok(())
    } else {
        infra::down(&ctx, &names)
    };
    result.and(down)?;
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
