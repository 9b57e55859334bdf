//! `fiso export [--dir fiso] [--namespace fiso-system] [-o FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fiso_config::manifests;

use crate::project::{ProjectFiles, DEFAULT_DIR};
use crate::style;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Project directory holding flows/, link/ and apps/.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Namespace of the generated resources.
    #[arg(long, short = 'n', default_value = "fiso-system")]
    pub namespace: String,
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let files = ProjectFiles::read(&args.dir)?;
    if files.is_empty() {
        bail!(
            "nothing to export in {}: no flows/, link/config.yaml or apps/",
            args.dir.display()
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
    let yaml = manifests::to_yaml(&m)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{} wrote {} FlowDefinition(s), {} LinkTarget(s) and {} WasmApp(s) with their module ConfigMaps to {}",
                style::ok("✓"),
                m.flows.len(),
                m.targets.len(),
                m.apps.len(),
                path.display()
            );
        }
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}
