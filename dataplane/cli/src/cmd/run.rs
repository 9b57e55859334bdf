//! `fiso run`: the whole data plane of a pod, as the injected sidecar runs it — the flows of
//! `FISO_CONFIG_DIR` and the link proxy of `FISO_LINK_CONFIG`, one metrics / health server.
//!
//! In a pod the configuration arrives after the process starts: the webhook mounts the
//! ConfigMap `optional`, and kubelet fills the volumes in once the operator has rendered it.
//! An empty flow directory is watched like any other; a link config whose directory exists
//! but whose file does not yet is waited for (the `link` component is not ready meanwhile), and
//! the proxy starts when it appears.

use std::path::{Path, PathBuf};
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
use fiso_runtime::watch::watch_dir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cmd::flow::tokio_runtime;

pub use fiso_link::DEFAULT_LINK_CONFIG;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory of flow files (may be absent when the pod selects no flows).
    #[arg(long, env = "FISO_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Link config file. When it is absent but its directory exists (a ConfigMap volume kubelet
    /// has not filled yet), the link proxy is not ready until the file appears, then starts.
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
        let link = Link::start(&args.link_config, &obs).await?;
        obs.readiness.mark_started();
        shutdown.cancelled().await;
        obs.readiness.set_not_ready("shutdown", "the process is stopping");
        link.shutdown().await?;
        if let Some(flows) = flows {
            flows.shutdown().await;
        }
        health_stop.cancel();
        let _ = health.handle.await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Readiness component of the link proxy (while its config is awaited).
const LINK_COMPONENT: &str = "link";

/// How soon after its file appears the link config is read.
const LINK_CONFIG_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The link proxy: running, waiting for its config file, or not configured.
enum Link {
    Running(LinkRuntime),
    Waiting {
        task: JoinHandle<Result<Option<LinkRuntime>>>,
        stop: CancellationToken,
    },
    Absent,
}

impl Link {
    async fn start(path: &Path, obs: &Observability) -> Result<Self> {
        if path.is_file() {
            return Ok(Link::Running(LinkRuntime::start(path, obs).await?));
        }
        let Some(dir) = path.parent().filter(|d| d.is_dir()) else {
            tracing::info!(file = %path.display(), "no link config: running without the link proxy");
            return Ok(Link::Absent);
        };
        let mut changes = watch_dir(dir, LINK_CONFIG_SETTLE)?;
        obs.readiness
            .set_not_ready(LINK_COMPONENT, format!("waiting for {}", path.display()));
        tracing::info!(file = %path.display(), "waiting for the link config");
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (path, obs, stop) = (path.to_owned(), obs.clone(), stop.clone());
            async move {
                // Checked before every wait: the file may have appeared before the watch began.
                while !path.is_file() {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_none() {
                                anyhow::bail!("the watch of {} stopped", path.display());
                            }
                        }
                        () = stop.cancelled() => return Ok(None),
                    }
                }
                match LinkRuntime::start(&path, &obs).await {
                    Ok(link) => Ok(Some(link)),
                    Err(e) => {
                        // The flows keep running; the pod's readiness says why the link does not.
                        tracing::error!(file = %path.display(), error = %e, "cannot start the link proxy");
                        obs.readiness.set_not_ready(LINK_COMPONENT, e.to_string());
                        Ok(None)
                    }
                }
            }
        });
        Ok(Link::Waiting { task, stop })
    }

    async fn shutdown(self) -> Result<()> {
        let running = match self {
            Link::Running(link) => Some(link),
            Link::Waiting { task, stop } => {
                stop.cancel();
                task.await??
            }
            Link::Absent => None,
        };
        if let Some(link) = running {
            link.shutdown().await;
        }
        Ok(())
    }
}
