//! `fiso link`: the Fiso-Link egress proxy of `FISO_LINK_CONFIG`, hot-reloaded.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use fiso_config::TracingConfig;
use fiso_link::runtime::LinkError;
use fiso_link::DEFAULT_LINK_CONFIG;
use fiso_runtime::error_text;
use fiso_runtime::logging::LogSettings;
use fiso_runtime::shutdown::shutdown_signal;

use crate::cmd::flow::tokio_runtime;

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Link config file (listenAddr, metricsAddr, kafka clusters, targets); watched and
    /// hot-reloaded.
    #[arg(long = "config", env = "FISO_LINK_CONFIG", hide_env_values = true, default_value = DEFAULT_LINK_CONFIG)]
    pub config: PathBuf,
    /// Metrics and health server (default: the config's `metricsAddr`).
    #[arg(long, env = "FISO_METRICS_ADDR", hide_env_values = true)]
    pub metrics_addr: Option<String>,
}

pub fn run(args: LinkArgs) -> Result<ExitCode> {
    let _logs = LogSettings::from_env_and_file(tracing_section(&args.config).as_ref())?.init()?;
    let result = tokio_runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        fiso_link::runtime::run(args.config, args.metrics_addr.as_deref(), shutdown).await
    });
    match result {
        Err(e @ LinkError::Read { .. }) => bail!(
            "{}; give the link config with `--config <file>` or `FISO_LINK_CONFIG`",
            error_text::chain(&e)
        ),
        other => other?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The `tracing:` section of the link config at `path`, read before logging is set up (tracing
/// is part of it). A file that cannot be read or is invalid gives none here: the proxy reports
/// it, located, when it loads the file.
pub(crate) fn tracing_section(path: &std::path::Path) -> Option<TracingConfig> {
    fiso_link::runtime::read_config(path)
        .ok()
        .and_then(|(_, config)| config.tracing)
}
