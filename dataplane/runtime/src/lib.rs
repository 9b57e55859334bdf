//! The process plumbing that `fiso flow`, `fiso link` and `fiso dev` share.
//!
//! Nothing here knows what a flow or a link target is; those crates plug into it:
//!
//! - [`logging`]: JSON logs in production, pretty logs for `fiso dev`, optionally mirrored as
//!   JSON lines into a file that `fiso logs` reads back.
//! - [`metrics`]: one Prometheus registry per process, rendered as OpenMetrics text, plus the
//!   config-reload metrics that flow and link both report.
//! - [`health`]: the metrics port (`/healthz`, `/readyz`, `/metrics`, `/config`) and the
//!   [`Readiness`] registry that supervisors update as components come and go.
//! - [`server`]: the HTTP server of the Link proxy, Flow HTTP sources and the metrics port
//!   (a deadline for every connection, lingering close, accept backoff, graceful stop).
//! - [`http_client`]: the pooled HTTP/1.1 + HTTP/2 client (rustls, system roots plus a
//!   `caFile`) of the Link upstream and the Flow HTTP sink.
//! - [`addr`]: listen addresses in the config's Go-style form (`:9090`).
//! - [`shutdown`]: SIGTERM / SIGINT as a [`CancellationToken`](tokio_util::sync::CancellationToken).
//! - [`watch`]: a debounced watcher for a config directory (editor saves and Kubernetes
//!   ConfigMap volume swaps alike) and content-hashed snapshots to diff reloads against.
//! - [`reload`]: the loop that reloads after every change the watcher reports, until stopped.
//! - [`apps`]: the [`AppDirectory`](apps::AppDirectory) through which flows and the Link call
//!   the Wasmer/WASIX apps of the same process by name.
//! - [`error_text`]: an error and its causes as one line, each cause said once.
//! - [`backoff`]: retry delay shapes, `Retry-After`, and [`backoff::Restart`], the doubling
//!   delay between restarts of something that keeps failing.
//! - [`outline`]: rare, large futures built and boxed outside the hot path's stack frames.
//! - [`blocking_drop`]: values whose destruction blocks (librdkafka clients), destroyed on the
//!   blocking pool instead of an async worker.
//!
//! A typical data-plane `main`:
//!
//! ```no_run
//! use std::time::Duration;
//! use fiso_runtime::reload::ReloadLoop;
//! use fiso_runtime::{health, logging, metrics::MetricsRegistry, shutdown, watch, Readiness};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let _logs = logging::LogSettings::from_env()?.init()?;
//! let state = health::HealthState::new(MetricsRegistry::new(), Readiness::new());
//! let stop = shutdown::shutdown_signal();
//! let server = health::serve(":9090", state.clone(), stop.child_token()).await?;
//! tracing::info!(addr = %server.local_addr, "metrics and health listening");
//!
//! let watcher = watch::watch_dir("/etc/fiso/flows", Duration::from_millis(300))?;
//! let mut files = watch::snapshot("/etc/fiso/flows", watch::is_yaml)?.files;
//! // ... build the flows from `files`, then:
//! state.readiness.mark_started();
//! let reloads = ReloadLoop::spawn(watcher, move || {
//!     if let Ok(next) = watch::snapshot("/etc/fiso/flows", watch::is_yaml) {
//!         let diff = watch::diff(&files, &next.files);
//!         // ... rebuild only `diff.added` / `diff.changed`, drop `diff.removed`
//!         files = next.files;
//!     }
//!     std::future::ready(())
//! });
//! stop.cancelled().await;
//! reloads.stop().await;
//! server.handle.await??;
//! # Ok(()) }
//! ```

pub mod addr;
pub mod apps;
pub mod backoff;
pub mod blocking_drop;
pub mod error_text;
pub mod health;
pub mod http_client;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod outline;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod watch;

pub use health::{ConfigInfo, HealthState, Readiness};
pub use metrics::MetricsRegistry;

/// What the data-plane components of one process share: one metrics registry, one readiness
/// report and one `/config` document behind one metrics / health server, and the apps the
/// flows and the Link may call.
#[derive(Clone, Default)]
pub struct Observability {
    pub metrics: MetricsRegistry,
    pub readiness: Readiness,
    pub config: ConfigInfo,
    /// The apps of this process (empty unless it runs apps).
    pub apps: apps::AppDirectory,
}
