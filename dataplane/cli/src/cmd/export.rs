//! `fiso export [--dir fiso] [-n default] [-o yaml|json] [--file FILE]`, with kubectl's
//! conventions: `-o` is the output format, the namespace defaults to kubectl's (and `init
//! --k8s`'s) `default`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use fiso_config::manifests;

use crate::project::{ProjectFiles, DEFAULT_DIR};
use crate::scaffold::k8s::NAMESPACE;
use crate::style;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Project directory holding flows/, link/ and apps/. Default: ./fiso, or the project the
    /// current directory is in.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Namespace of the generated resources (as `fiso init --k8s` and kubectl default).
    #[arg(long, short = 'n', default_value = NAMESPACE, value_parser = namespace)]
    pub namespace: String,
    /// Output format: multi-document YAML, or one JSON `List` (as `kubectl get -o json`).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// Write to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// A namespace name as Kubernetes takes it (an RFC 1123 label).
fn namespace(name: &str) -> Result<String, String> {
    if fiso_config::validate::is_dns_label(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "`{name}` is not a namespace name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let dir = args
        .dir
        .clone()
        .or_else(crate::project::find)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let files = ProjectFiles::read(&dir)?;
    if files.is_empty() {
        bail!(
            "nothing to export in {}: no flows/, link/config.yaml or apps/",
            dir.display()
        );
    }
    let (project, diags) = files.check();
    if diags.has_errors() {
        for d in diags.errors() {
            eprintln!("{d}");
        }
        bail!("the project is invalid; fix it (see `fiso validate`) before exporting");
    }
    let m = match manifests::export(&project, &args.namespace) {
        Ok(m) => m,
        Err(diags) => {
            for d in diags.iter() {
                eprintln!("{d}");
            }
            bail!("some settings cannot be expressed as Kubernetes resources (see above)");
        }
    };
    let text = match args.output {
        Format::Yaml => manifests::to_yaml(&m)?,
        Format::Json => format!("{:#}\n", manifests::to_json(&m)?),
    };
    match &args.file {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{} wrote {} FlowDefinition(s), {} LinkTarget(s) and {} WasmApp(s) with their module ConfigMaps to {}",
                style::ok("✓"),
                m.flows.len(),
                m.targets.len(),
                m.apps.len(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
