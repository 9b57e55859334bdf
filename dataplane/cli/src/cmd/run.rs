//! `fiso run`: the whole data plane of a pod, as the injected sidecar runs it — the flows of
//! `FISO_CONFIG_DIR` and the link proxy of `FISO_LINK_CONFIG`, one metrics / health server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fiso_flow::topology::runtime::{
    FlowRuntime, Observability, DEFAULT_CONFIG_DIR, DEFAULT_METRICS_ADDR,
};
use fiso_link::LinkRuntime;
use fiso_runtime::health::{serve, HealthState};
use fiso_runtime::logging::LogSettings;
use fiso_runtime::shutdown::shutdown_signal;
use tokio_util::sync::CancellationToken;

use crate::cmd::flow::tokio_runtime;

pub use fiso_link::DEFAULT_LINK_CONFIG;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory of flow files (may be absent when the pod selects no flows).
    #[arg(long, env = "FISO_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Link config file (may be absent when the pod selects no link targets).
    #[arg(long, env = "FISO_LINK_CONFIG", default_value = DEFAULT_LINK_CONFIG)]
    pub link_config: PathBuf,
    /// Metrics and health server shared by flows and link.
    #[arg(long, env = "FISO_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let _logs = LogSettings::from_env()?.init()?;
    tokio_runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let obs = Observability::default();
        let health_stop = CancellationToken::new();
        let health = serve(
            &args.metrics_addr,
            HealthState::new(obs.metrics.clone(), obs.readiness.clone()).with_config(obs.config.clone()),
            health_stop.clone(),
        )
        .await?;
        tracing::info!(addr = %health.local_addr, "metrics server listening");
        let flows = if args.config_dir.is_dir() {
            Some(FlowRuntime::start(&args.config_dir, &obs)?)
        } else {
            tracing::info!(dir = %args.config_dir.display(), "no flow directory: running without flows");
            None
        };
        let link = if args.link_config.is_file() {
            Some(LinkRuntime::start(&args.link_config, &obs).await?)
        } else {
            tracing::info!(file = %args.link_config.display(), "no link config: running without the link proxy");
            None
        };
        obs.readiness.mark_started();
        shutdown.cancelled().await;
        obs.readiness.set_not_ready("shutdown", "the process is stopping");
        if let Some(link) = link {
            link.shutdown().await;
        }
        if let Some(flows) = flows {
            flows.shutdown().await;
        }
        health_stop.cancel();
        let _ = health.handle.await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
