//! `fiso link`: the proxy server on `listenAddr`, its targets loaded from the link config file,
//! which is watched and hot-reloaded (unchanged targets keep their state — breaker, rate limit,
//! credentials; an invalid file keeps the last good config), and graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use fiso_config::link::{LinkConfig, Protocol, TargetConfig};
use fiso_config::validate::{check_project, SourceFile};
use fiso_runtime::addr::{parse_listen_addr, AddrError};
use fiso_runtime::health::{serve, HealthState, ServeError};
use fiso_runtime::metrics::MetricsError;
use fiso_runtime::reload::{changes_in_words, ReloadLoop};
use fiso_runtime::server::{PerCoreServer, ServerTimeouts};
use fiso_runtime::watch::{read_config_file, watch_dir, WatchError};
use fiso_runtime::Observability;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::auth::VaultSettings;
use crate::metrics::LinkMetrics;
use crate::route::{handle, Ready, Route, Routes};
use crate::target::Target;

/// Default of `FISO_LINK_CONFIG`.
pub const DEFAULT_LINK_CONFIG: &str = "/etc/fiso/link/config.yaml";
/// Filesystem events settle for this long before a reload.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);
/// Readiness component of the proxy.
const COMPONENT: &str = "link";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("link listenAddr: {0}")]
    Addr(#[from] AddrError),
    #[error(
        "link proxy cannot listen on {addr}: {source}{}",
        fiso_runtime::addr::bind_hint(source)
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("metrics server: {0}")]
    Serve(#[from] ServeError),
    #[error("watching the link config: {0}")]
    Watch(#[from] WatchError),
}

/// A running link proxy.
pub struct LinkRuntime {
    loader: Arc<Loader>,
    local_addr: SocketAddr,
    server: PerCoreServer,
    stop_serving: CancellationToken,
    reloads: ReloadLoop,
}

impl LinkRuntime {
    /// Loads `config_path` (which must be valid), binds its `listenAddr` and serves; reloads
    /// whenever the file changes.
    pub async fn start(
        config_path: impl Into<PathBuf>,
        obs: &Observability,
    ) -> Result<Self, LinkError> {
        let path = config_path.into();
        let (hash, config) = read_config(&path)?;
        let loader = Arc::new(Loader {
            path: path.clone(),
            routes: Arc::new(Routes::default()),
            metrics: LinkMetrics::register(&obs.metrics)?,
            vault: VaultSettings::from_env(),
            obs: obs.clone(),
            current: Mutex::new(None),
        });
        loader.apply(hash, config.clone()).await;
        // The initial load counts, like the flows' does: the series exist from startup, so a
        // dashboard shows the link and `increase()` sees the first failed reload.
        obs.metrics.config_reload().success(COMPONENT);
        let addr = parse_listen_addr(&config.listen_addr)?;
        let stop_serving = CancellationToken::new();
        // Every path is the proxy's: no router, and one `Arc` (the core's own) cloned per
        // request.
        let app = || {
            let proxy = Arc::new((Arc::clone(&loader.routes), loader.metrics.clone()));
            tower::service_fn(move |req: http::Request<Body>| {
                let proxy = Arc::clone(&proxy);
                async move {
                    let (routes, metrics) = &*proxy;
                    Ok::<_, Infallible>(handle(routes, metrics, req).await)
                }
            })
        };
        let timeouts = ServerTimeouts::from_config(
            config.read_header_timeout,
            config.idle_timeout,
            config.body_timeout,
        );
        let server = PerCoreServer::start(
            addr,
            "fiso-link",
            app,
            timeouts.fixed(),
            stop_serving.clone(),
        )
        .map_err(|source| LinkError::Bind { addr, source })?;
        let local_addr = server.local_addr();
        tracing::info!(addr = %local_addr, config = %path.display(), "link proxy listening");
        obs.readiness.set_ready(COMPONENT);

        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let reloader = Arc::clone(&loader);
        let reloads = ReloadLoop::spawn(watch_dir(&dir, RELOAD_DEBOUNCE)?, move || {
            let reloader = Arc::clone(&reloader);
            async move { reloader.reload().await }
        });
        Ok(LinkRuntime {
            loader,
            local_addr,
            server,
            stop_serving,
            reloads,
        })
    }

    /// Where the proxy listens (the real port when `listenAddr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Re-reads the config file now (normally the watcher does this).
    pub async fn reload(&self) {
        self.loader.reload().await;
    }

    /// Stops watching and accepting, lets requests in flight finish, then returns.
    pub async fn shutdown(self) {
        self.reloads.stop().await;
        self.stop_serving.cancel();
        self.server.stopped().await;
        self.loader.obs.readiness.remove(COMPONENT);
        tracing::info!("link proxy stopped");
    }
}

/// `fiso link`: serve `config_path` until `shutdown`, with the metrics / health server on
/// `metrics_addr` (default: the config's `metricsAddr`).
pub async fn run(
    config_path: PathBuf,
    metrics_addr: Option<&str>,
    shutdown: CancellationToken,
) -> Result<(), LinkError> {
    let (_, config) = read_config(&config_path)?;
    let obs = Observability::default();
    let health_stop = CancellationToken::new();
    let server = serve(
        metrics_addr.unwrap_or(&config.metrics_addr),
        HealthState::new(obs.metrics.clone(), obs.readiness.clone())
            .with_config(obs.config.clone()),
        health_stop.clone(),
    )
    .await?;
    tracing::info!(addr = %server.local_addr, "metrics server listening");
    let runtime = LinkRuntime::start(config_path, &obs).await?;
    obs.readiness.mark_started();
    shutdown.cancelled().await;
    tracing::info!("shutting down: finishing requests in flight");
    obs.readiness
        .set_not_ready("shutdown", "the process is stopping");
    runtime.shutdown().await;
    health_stop.cancel();
    let _ = server.handle.await;
    Ok(())
}

/// Reads, parses and validates the link config file: its content hash and the config. The
/// file is read within the bound `fiso validate` and the flows' files have
/// ([`fiso_runtime::watch::MAX_CONFIG_FILE_SIZE`]).
pub fn read_config(path: &Path) -> Result<(String, LinkConfig), LinkError> {
    let unreadable = |source| LinkError::Read {
        path: path.display().to_string(),
        source,
    };
    let text = match read_config_file(path) {
        Ok(Some(text)) => text,
        // Gone, or not a file: the OS's own words when it has some.
        Ok(None) => {
            return Err(unreadable(
                std::fs::metadata(path)
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("not a regular file")),
            ))
        }
        Err(WatchError::Read { source, .. }) => return Err(unreadable(source)),
        Err(e) => return Err(LinkError::Invalid(e.to_string())),
    };
    let file = SourceFile {
        path: path.display().to_string(),
        text,
    };
    // Every finding at once, located, as `fiso validate` reports them.
    let (project, diags) = check_project(&[], Some(&file));
    let errors: Vec<String> = diags.errors().map(ToString::to_string).collect();
    match project.link {
        Some(link) if errors.is_empty() => {
            Ok((hex(&Sha256::digest(file.text.as_bytes())), link.config))
        }
        _ => Err(LinkError::Invalid(errors.join("\n"))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tracing is set up once, at start: a `tracing:` section that changed on reload (or that a
/// file read after start brings) is reported, not applied, and never fails the reload.
fn tracing_section_applies_at_restart(
    previous: Option<&LinkConfig>,
    config: &LinkConfig,
    path: &Path,
) {
    let changed = match previous {
        Some(previous) => previous.tracing != config.tracing,
        None => config.tracing.is_some(),
    };
    if changed && fiso_runtime::otel::differs_from_running(config.tracing.as_ref()) {
        tracing::warn!(
            file = %path.display(),
            "the link config's `tracing:` section differs from the one this process started \
             with; traces keep being exported as at start: a restart applies it"
        );
    }
}

/// Brings the route table in line with the config file.
struct Loader {
    path: PathBuf,
    routes: Arc<Routes>,
    metrics: LinkMetrics,
    vault: VaultSettings,
    obs: Observability,
    /// The config the routes were built from, and its content hash.
    current: Mutex<Option<(String, LinkConfig)>>,
}

impl Loader {
    async fn reload(&self) {
        let reloads = self.obs.metrics.config_reload();
        let file = self.path.display().to_string();
        match read_config(&self.path) {
            Ok((hash, config)) => {
                let unchanged = self.current.lock().await.as_ref().map(|(h, _)| h) == Some(&hash);
                if unchanged && !self.modules_changed().await {
                    return;
                }
                self.obs.readiness.clear_warning(&format!("config/{file}"));
                self.apply(hash, config).await;
                reloads.success(COMPONENT);
            }
            Err(e) => {
                tracing::error!(file = %file, error = %e, "invalid link config; keeping the last good one");
                self.obs
                    .readiness
                    .set_warning(format!("config/{file}"), e.to_string());
                reloads.failure(COMPONENT);
                self.publish(Some(e.to_string())).await;
            }
        }
    }

    /// Whether an interceptor module of a running target changed on disk (its target is then
    /// rebuilt, like a target whose config changed).
    async fn modules_changed(&self) -> bool {
        !stale_modules(&self.routes.snapshot()).await.is_empty()
    }

    /// The directory relative interceptor module paths resolve against.
    fn base_dir(&self) -> Option<&Path> {
        self.path.parent().filter(|p| !p.as_os_str().is_empty())
    }

    /// Builds what changed; a target that fails to build keeps its previous version, or is
    /// answered with 503 when it had none.
    async fn apply(&self, hash: String, config: LinkConfig) {
        let mut current = self.current.lock().await;
        let previous = current.as_ref().map(|(_, c)| c.clone());
        tracing_section_applies_at_restart(previous.as_ref(), &config, &self.path);
        let running = self.routes.snapshot();
        let stale = stale_modules(&running).await;
        let mut table = HashMap::new();
        let (mut started, mut replaced, mut kept) = (Vec::new(), Vec::new(), 0);
        for target in &config.targets {
            let name = target.name.clone().unwrap_or_default();
            let old = running.get(&name);
            if let (Some(Route::Ready(t)), Some(prev)) = (old, &previous) {
                if unchanged(t, target, prev, &config) && !stale.contains(&name) {
                    table.insert(name, Route::Ready(t.clone()));
                    kept += 1;
                    continue;
                }
            }
            let component = format!("link/target/{name}");
            match Target::build(
                &name,
                target,
                config.kafka.as_ref(),
                &self.vault,
                &self.metrics,
                self.base_dir(),
                &self.obs.apps,
            )
            .await
            {
                Ok(t) => {
                    self.obs.readiness.remove(&component);
                    if old.is_some() {
                        replaced.push(name.clone());
                    } else {
                        started.push(name.clone());
                    }
                    table.insert(name, Route::Ready(Ready::new(&t)));
                }
                Err(e) => {
                    tracing::error!(target_name = %name, error = %e, "link target not loaded");
                    match old {
                        Some(Route::Ready(t)) => {
                            self.obs.readiness.set_warning(
                                component,
                                format!("{e}; the previous version keeps serving"),
                            );
                            table.insert(name, Route::Ready(t.clone()));
                        }
                        _ => {
                            self.obs.readiness.set_not_ready(component, e.to_string());
                            table.insert(name, Route::Broken(e.to_string().into()));
                        }
                    }
                }
            }
        }
        let stopped: Vec<String> = running
            .keys()
            .filter(|n| !table.contains_key(*n))
            .cloned()
            .collect();
        for name in &stopped {
            self.obs.readiness.remove(&format!("link/target/{name}"));
        }
        if previous.is_some() {
            let changes = changes_in_words(&[
                ("added", &started[..]),
                ("changed", &replaced[..]),
                ("removed", &stopped[..]),
            ]);
            if changes.is_empty() {
                tracing::info!(kept, "link targets reloaded: nothing changed");
            } else {
                tracing::info!(kept, "link targets reloaded: {changes}");
            }
        } else {
            tracing::info!(targets = table.len(), "link targets loaded");
        }
        self.routes.replace(table);
        *current = Some((hash, config));
        drop(current);
        self.publish(None).await;
    }

    /// The `link` section of `/config`.
    async fn publish(&self, problem: Option<String>) {
        let current = self.current.lock().await;
        let (hash, targets) = match current.as_ref() {
            Some((h, c)) => (
                Some(h.clone()),
                c.targets
                    .iter()
                    .filter_map(|t| t.name.clone())
                    .collect::<Vec<_>>(),
            ),
            None => (None, Vec::new()),
        };
        let loaded_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.obs.config.set_section(
            COMPONENT,
            json!({
                "file": self.path.display().to_string(),
                "sha256": hash,
                "loadedAt": loaded_at,
                "targets": targets,
                "problems": problem.into_iter().collect::<Vec<_>>(),
            }),
        );
    }
}

/// The running targets whose interceptor module files changed since they were built (read and
/// hashed off the async workers).
async fn stale_modules(running: &Arc<HashMap<String, Route>>) -> HashSet<String> {
    let running = Arc::clone(running);
    tokio::task::spawn_blocking(move || {
        running
            .iter()
            .filter(|(_, route)| matches!(route, Route::Ready(t) if t.modules_changed()))
            .map(|(name, _)| name.clone())
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Whether a running target can stay as it is under the new config.
fn unchanged(
    running: &Target,
    new: &TargetConfig,
    previous: &LinkConfig,
    config: &LinkConfig,
) -> bool {
    if running.config != *new {
        return false;
    }
    // A Kafka target also depends on its cluster's settings.
    match (new.protocol, &new.kafka) {
        (Protocol::Kafka, Some(k)) => {
            let cluster = |c: &LinkConfig| {
                c.kafka
                    .as_ref()
                    .and_then(|kc| kc.clusters.get(&k.cluster))
                    .cloned()
            };
            cluster(previous) == cluster(config)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_is_read_within_the_bound_validate_has() {
        use fiso_runtime::watch::MAX_CONFIG_FILE_SIZE;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let valid = "listenAddr: \"127.0.0.1:0\"\ntargets: []\n";
        let padded = |size: u64| {
            let mut text = valid.to_owned();
            text.push_str(&"#".repeat(size as usize - valid.len() - 1));
            text.push('\n');
            text
        };
        std::fs::write(&path, padded(MAX_CONFIG_FILE_SIZE)).unwrap();
        read_config(&path).expect("a file of exactly the bound is read");

        std::fs::write(&path, padded(MAX_CONFIG_FILE_SIZE + 1)).unwrap();
        let Err(LinkError::Invalid(message)) = read_config(&path) else {
            panic!("a file over the bound is refused");
        };
        assert!(
            message.contains("is larger than 1048576 bytes"),
            "{message}"
        );

        let missing = dir.path().join("missing.yaml");
        let Err(e @ LinkError::Read { .. }) = read_config(&missing) else {
            panic!("a missing file cannot be read");
        };
        assert!(e.to_string().contains("No such file"), "{e}");
        let Err(e @ LinkError::Read { .. }) = read_config(dir.path()) else {
            panic!("a directory is not a config file");
        };
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn an_invalid_config_says_every_finding_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "listenAddr: \":3500\"\ntargets:\n  - name: crm\n    host: crm.example.com\n    timeout: soon\n    retry: {jitter: 3}\n  - name: erp\n    hots: erp.example.com\n",
        )
        .unwrap();
        let Err(LinkError::Invalid(message)) = read_config(&path) else {
            panic!("the config is invalid");
        };
        let shown = path.display().to_string();
        let findings: Vec<&str> = message
            .lines()
            .filter(|l| !l.starts_with("  hint:"))
            .collect();
        let expected = [
            "5:14: error: targets[0].timeout:",
            "6:21: error: targets[0].retry.jitter: jitter 3 is outside [0, 1]",
            "8:5: error: targets[1].hots: unknown field `hots`",
        ];
        assert_eq!(findings.len(), expected.len(), "{message}");
        for (found, expected) in findings.iter().zip(expected) {
            assert!(
                found.starts_with(&format!("{shown}:{expected}")),
                "{message}"
            );
        }
    }
}
