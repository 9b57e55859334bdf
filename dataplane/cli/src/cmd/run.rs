//! `fiso run`: the whole data plane of a pod, as the injected sidecar runs it — the flows of
//! `FISO_CONFIG_DIR`, the link proxy of `FISO_LINK_CONFIG` and the Wasmer/WASIX apps of
//! `FISO_APPS_CONFIG`, one metrics / health server. `--config aio.yaml` reads all three from
//! upstream's all-in-one file instead (`flow:` / `link:` / `wasmer:`).
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

use crate::cmd::apps::{AppsSource, RunningApps};
use crate::cmd::flow::tokio_runtime;
use crate::cmd::link::tracing_section;
use fiso_config::apps::AioLink;
use fiso_config::TracingConfig;

pub use fiso_link::DEFAULT_LINK_CONFIG;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory of flow files (may be absent when the pod selects no flows).
    #[arg(long, env = "FISO_CONFIG_DIR", hide_env_values = true, default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Link config file. When it is absent but its directory exists (a ConfigMap volume kubelet
    /// has not filled yet), the link proxy is not ready until the file appears, then starts.
    #[arg(long, env = "FISO_LINK_CONFIG", hide_env_values = true, default_value = DEFAULT_LINK_CONFIG)]
    pub link_config: PathBuf,
    /// Apps file, or a directory of them (Wasmer/WASIX apps run next to the flows and the link;
    /// flows and link targets reach them by name). Watched, as are the modules it names.
    #[arg(long, env = "FISO_APPS_CONFIG", hide_env_values = true)]
    pub apps_config: Option<PathBuf>,
    /// Upstream's all-in-one file: `flow: {configDir, metricsAddr}`, `link: {configPath}` or the
    /// link config inline, `wasmer: {apps, defaultPortRange}`. Replaces `--config-dir`,
    /// `--link-config` and `--apps-config`; relative paths are from the file's directory.
    #[arg(long, env = "FISO_AIO_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Metrics and health server shared by flows, link and apps (default `:9090`, or the
    /// all-in-one file's `flow.metricsAddr`).
    #[arg(long, env = "FISO_METRICS_ADDR", hide_env_values = true)]
    pub metrics_addr: Option<String>,
}

/// What `fiso run` runs, from its options or from an all-in-one file.
struct Plan {
    config_dir: PathBuf,
    link_config: PathBuf,
    apps: Option<AppsSource>,
    metrics_addr: String,
    /// The inline `link:` of an all-in-one file, written where `link_config` points.
    _inline_link: Option<aio::InlineLink>,
    /// The all-in-one file's `tracing:`, else the link config's (read at start).
    tracing: Option<TracingConfig>,
}

impl Plan {
    fn new(args: RunArgs) -> Result<Self> {
        let Some(file) = args.config else {
            let tracing = tracing_section(&args.link_config);
            return Ok(Plan {
                tracing,
                config_dir: args.config_dir,
                link_config: args.link_config,
                apps: args.apps_config.map(|path| {
                    if path.is_dir() {
                        AppsSource::Dir(path)
                    } else {
                        AppsSource::File(path)
                    }
                }),
                metrics_addr: args
                    .metrics_addr
                    .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_owned()),
                _inline_link: None,
            });
        };
        let aio = aio::load(&file)?;
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let flow = aio.flow.unwrap_or_default();
        let config_dir = base.join(flow.config_dir.as_deref().unwrap_or(DEFAULT_CONFIG_DIR));
        let (link_config, inline_link) = match aio.link {
            Some(AioLink::Path(p)) => (base.join(p), None),
            Some(AioLink::Inline(config)) => {
                let inline = aio::InlineLink::write(&config)?;
                (inline.path(), Some(inline))
            }
            // A path that does not exist: no link proxy.
            None => (base.join(".fiso-no-link/none.yaml"), None),
        };
        let tracing = aio.tracing.or_else(|| tracing_section(&link_config));
        Ok(Plan {
            tracing,
            config_dir,
            link_config,
            apps: aio.wasmer.is_some().then(|| AppsSource::Aio(file.clone())),
            metrics_addr: args
                .metrics_addr
                .or(flow.metrics_addr)
                .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_owned()),
            _inline_link: inline_link,
        })
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    // Read first: the plan says where the `tracing:` section is.
    let plan = Plan::new(args)?;
    let _logs = LogSettings::from_env_and_file(plan.tracing.as_ref())?.init()?;
    // An invalid apps config, or one this build cannot run, fails before anything listens.
    if let Some(apps) = &plan.apps {
        apps.load()?;
    }
    let args = &plan;
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
        // Apps first: flows and link targets that name an app find it from their first event.
        let apps = match &args.apps {
            Some(source) => Some(RunningApps::start(source.clone(), &obs).await?),
            None => None,
        };
        let flows = if args.config_dir.is_dir() {
            Some(FlowRuntime::start(&args.config_dir, &obs)?)
        } else {
            tracing::info!(dir = %args.config_dir.display(), "no flow directory: running without flows");
            None
        };
        let link = Link::start(&args.link_config, &obs).await?;
        if flows.is_none() && apps.is_none() && matches!(link, Link::Absent) {
            tracing::warn!(
                flows = %args.config_dir.display(),
                link = %args.link_config.display(),
                "nothing to run: no flow directory, no link config and no apps; give them with \
                 --config-dir, --link-config and --apps-config (or FISO_CONFIG_DIR, \
                 FISO_LINK_CONFIG, FISO_APPS_CONFIG), or an all-in-one file with --config"
            );
        }
        obs.readiness.mark_started();
        shutdown.cancelled().await;
        obs.readiness.set_not_ready("shutdown", "the process is stopping");
        link.shutdown().await?;
        if let Some(flows) = flows {
            flows.shutdown().await;
        }
        if let Some(apps) = apps {
            apps.shutdown().await;
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

/// Upstream's all-in-one file.
mod aio {
    use std::path::{Path, PathBuf};

    use anyhow::{bail, Context, Result};
    use fiso_config::apps::AioConfig;
    use fiso_config::LinkConfig;

    pub(super) fn load(path: &Path) -> Result<AioConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match fiso_config::parse::parse::<AioConfig>(&path.display().to_string(), &text) {
            Ok(c) => Ok(c),
            Err(d) => bail!("invalid all-in-one config:\n{d}"),
        }
    }

    /// An inline `link:` written to a private file for the link runtime, removed when dropped.
    /// Read at start: edit a `configPath` file instead to reload the link without a restart.
    pub(super) struct InlineLink {
        dir: PathBuf,
    }

    impl InlineLink {
        pub(super) fn write(config: &LinkConfig) -> Result<Self> {
            let dir = std::env::temp_dir().join(format!("fiso-aio-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let inline = InlineLink { dir };
            let text =
                serde_yaml_ng::to_string(config).context("writing the inline link config")?;
            std::fs::write(inline.path(), text)
                .with_context(|| format!("writing {}", inline.path().display()))?;
            Ok(inline)
        }

        pub(super) fn path(&self) -> PathBuf {
            self.dir.join("link.yaml")
        }
    }

    impl Drop for InlineLink {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
