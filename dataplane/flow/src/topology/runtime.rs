//! `fiso flow`: every flow of a directory in one process, with the metrics / health server,
//! hot reload and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fiso_runtime::health::{serve, HealthState, ServeError};
use fiso_runtime::metrics::MetricsError;
use fiso_runtime::reload::ReloadLoop;
use fiso_runtime::watch::{watch_dir, WatchError};
use tokio_util::sync::CancellationToken;

use super::reload::{FlowDirectory, ReloadReport};
use super::router::ServerRegistry;
use super::supervisor::Supervisor;
use crate::metrics::FlowMetrics;
use crate::sources::SourceOptions;

/// Default of `FISO_CONFIG_DIR`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/fiso/flows";
/// Default of `FISO_METRICS_ADDR`.
pub const DEFAULT_METRICS_ADDR: &str = ":9090";
/// Filesystem events settle for this long before a reload (editors write in several steps).
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("metrics server: {0}")]
    Serve(#[from] ServeError),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("watching the flow directory: {0}")]
    Watch(#[from] WatchError),
}

pub use fiso_runtime::Observability;

/// How a runtime runs its flows beyond what their files say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub sources: SourceOptions,
}

impl RuntimeOptions {
    /// `fiso dev`: sources tuned for an edit-and-run loop on a developer's machine (see
    /// [`KafkaSourceOptions::dev`](crate::sources::kafka::KafkaSourceOptions::dev)).
    pub fn dev() -> Self {
        RuntimeOptions {
            sources: SourceOptions {
                kafka: crate::sources::kafka::KafkaSourceOptions::dev(),
            },
        }
    }
}

/// A running flow data plane.
pub struct FlowRuntime {
    directory: Arc<FlowDirectory>,
    supervisor: Arc<Supervisor>,
    reloads: ReloadLoop,
}

impl FlowRuntime {
    /// Loads every flow of `dir`, starts them, and reloads on every change of the directory.
    pub fn start(dir: impl Into<PathBuf>, obs: &Observability) -> Result<Self, RuntimeError> {
        Self::start_with(dir, obs, RuntimeOptions::default())
    }

    /// [`FlowRuntime::start`] with `options`.
    pub fn start_with(
        dir: impl Into<PathBuf>,
        obs: &Observability,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let dir = dir.into();
        let metrics = FlowMetrics::register(&obs.metrics)?;
        let supervisor = Supervisor::new(
            ServerRegistry::new(),
            obs.readiness.clone(),
            metrics.clone(),
        );
        let directory = Arc::new(FlowDirectory::new(
            dir.clone(),
            Arc::clone(&supervisor),
            metrics,
            obs.metrics.clone(),
            obs.readiness.clone(),
            obs.config.clone(),
            obs.apps.clone(),
            options.sources,
        ));
        let watcher = watch_dir(&dir, RELOAD_DEBOUNCE)?;
        directory.reload();
        let reloads = ReloadLoop::spawn(watcher, {
            let directory = Arc::clone(&directory);
            move || {
                // Off the async workers: a rebuild (files, CEL, TLS roots) would hold up the
                // flows' tasks queued on the worker it ran on.
                let directory = Arc::clone(&directory);
                async move {
                    let rebuilt = tokio::task::spawn_blocking(move || directory.reload()).await;
                    if let Err(e) = rebuilt {
                        tracing::error!(error = %e, "the reload task ended abnormally");
                    }
                }
            }
        });
        Ok(FlowRuntime {
            directory,
            supervisor,
            reloads,
        })
    }

    /// Re-reads the directory now (normally the watcher does this).
    pub fn reload(&self) -> ReloadReport {
        self.directory.reload()
    }

    /// Where an HTTP source `listenAddr` is bound (resolves port 0).
    pub fn http_addr(&self, listen_addr: &str) -> Option<SocketAddr> {
        self.supervisor.registry().local_addr(listen_addr)
    }

    /// Stops watching, stops accepting, answers every request in flight, then returns.
    pub async fn shutdown(self) {
        self.reloads.stop().await;
        self.supervisor.shutdown().await;
        tracing::info!("all flows stopped");
    }
}

/// `fiso flow`: run until `shutdown` fires; the metrics / health server lives as long as the flows.
pub async fn run(
    dir: PathBuf,
    metrics_addr: &str,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let obs = Observability::default();
    let health_stop = CancellationToken::new();
    let server = serve(
        metrics_addr,
        HealthState::new(obs.metrics.clone(), obs.readiness.clone())
            .with_config(obs.config.clone()),
        health_stop.clone(),
    )
    .await?;
    tracing::info!(addr = %server.local_addr, "metrics server listening");
    let runtime = FlowRuntime::start(dir, &obs)?;
    obs.readiness.mark_started();
    shutdown.cancelled().await;
    tracing::info!("shutting down: draining in-flight events");
    obs.readiness
        .set_not_ready("shutdown", "the process is stopping");
    runtime.shutdown().await;
    health_stop.cancel();
    let _ = server.handle.await;
    Ok(())
}
