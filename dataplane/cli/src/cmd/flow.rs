//! `fiso flow`: the Fiso-Flow data plane — every flow of the config directory in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use fiso_flow::topology::runtime::{DEFAULT_CONFIG_DIR, DEFAULT_METRICS_ADDR};
use fiso_runtime::logging::LogSettings;
use fiso_runtime::shutdown::shutdown_signal;

#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Directory of flow files; watched and hot-reloaded.
    #[arg(long, env = "FISO_CONFIG_DIR", hide_env_values = true, default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Metrics and health server (`/metrics`, `/healthz`, `/readyz`, `/config`).
    #[arg(long, env = "FISO_METRICS_ADDR", hide_env_values = true, default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,
}

pub fn run(args: FlowArgs) -> Result<ExitCode> {
    let _logs = LogSettings::from_env()?.init()?;
    if !args.config_dir.is_dir() {
        anyhow::bail!(
            "config directory {} does not exist (set FISO_CONFIG_DIR or --config-dir)",
            args.config_dir.display()
        );
    }
    tokio_runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        fiso_flow::topology::runtime::run(args.config_dir, &args.metrics_addr, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Flows evaluate CEL on these threads: the stack its depth bound is made for.
        .thread_stack_size(fiso_config::cel_check::EVAL_STACK_SIZE)
        .build()
        .context("starting the async runtime")
}
