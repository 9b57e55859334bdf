//! `fiso wasmer --config apps.yaml`: upstream's standalone Wasmer app runner — the apps of one
//! apps file, supervised and hot-reloaded, with their own metrics / health server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fiso_runtime::health::{serve, HealthState};
use fiso_runtime::logging::LogSettings;
use fiso_runtime::shutdown::shutdown_signal;
use fiso_runtime::Observability;
use tokio_util::sync::CancellationToken;

use crate::cmd::apps::{AppsSource, RunningApps};
use crate::cmd::flow::tokio_runtime;

#[derive(Debug, Args)]
pub struct WasmerArgs {
    /// Apps file (`apps:`, `defaultPortRange`, ...); watched, as are the modules it names.
    #[arg(long, env = "FISO_APPS_CONFIG", hide_env_values = true)]
    pub config: PathBuf,
    /// Metrics and health server (default: the file's `metricsAddr`, `:9092`).
    #[arg(long, env = "FISO_METRICS_ADDR", hide_env_values = true)]
    pub metrics_addr: Option<String>,
}

pub fn run(args: WasmerArgs) -> Result<ExitCode> {
    let _logs = LogSettings::from_env()?.init()?;
    let source = AppsSource::File(args.config);
    // Read before the server starts: its address may come from the file, and an invalid
    // file (or a build without wasmer) should fail before anything listens.
    let config = source.load()?;
    tokio_runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let obs = Observability::default();
        let health_stop = CancellationToken::new();
        let addr = args.metrics_addr.unwrap_or(config.metrics_addr);
        let health = serve(
            &addr,
            HealthState::new(obs.metrics.clone(), obs.readiness.clone())
                .with_config(obs.config.clone()),
            health_stop.clone(),
        )
        .await?;
        tracing::info!(addr = %health.local_addr, "metrics server listening");
        let apps = RunningApps::start(source, &obs).await?;
        obs.readiness.mark_started();
        shutdown.cancelled().await;
        obs.readiness
            .set_not_ready("shutdown", "the process is stopping");
        apps.shutdown().await;
        health_stop.cancel();
        let _ = health.handle.await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
