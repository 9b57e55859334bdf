//! `fiso-apps`: Wasmer/WASIX apps that Fiso runs next to its flows and link — upstream's
//! `apps:` (`fiso wasmer`, the all-in-one mode, `fiso dev` with `fiso/apps/`).
//!
//! [`Apps`] starts the apps of an [`AppsConfig`], registers each in the process's
//! [`AppDirectory`](fiso_runtime::apps::AppDirectory) (so flows and the Link call them by name),
//! reports each on `/readyz` as `app/<name>` and in the `fiso_app_*` [`metrics`], and
//! [`reload`](Apps::reload)s them when their config or module file changes:
//!
//! * `longRunning` ([`long_running`]): a supervised WASIX server on `$PORT`.
//! * `pooled` / `perRequest` ([`pooled`]): one run per request over stdin/stdout
//!   ([`framing`]); a `pooled` app keeps up to `poolSize` instances instantiated ahead
//!   ([`warm`]).
//!
//! The guest environment: `PORT` (long-running apps) and `FISO_APP_NAME`, then the app's `env`;
//! `preopens` mounted read-only; host networking (outbound connections, listeners on
//! `listenHost`); linear memory limited to `memoryMB`.
//!
//! Running needs the cargo feature `wasmer`; without it the crate still builds and
//! [`Apps::start`] refuses any app with [`AppsError::NoWasmer`].

mod error;
pub mod framing;
pub mod metrics;
mod ports;

#[cfg(feature = "wasmer")]
mod engine;
#[cfg(feature = "wasmer")]
mod long_running;
#[cfg(feature = "wasmer")]
mod pooled;
#[cfg(feature = "wasmer")]
mod warm;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fiso_config::apps::{AppConfig, AppsConfig};
use fiso_runtime::Observability;
use tokio::sync::Mutex;

pub use error::AppsError;
use metrics::AppMetrics;
use ports::Ports;

/// Whether this build can run apps (the `wasmer` cargo feature).
pub const AVAILABLE: bool = cfg!(feature = "wasmer");

/// The apps of one process.
pub struct Apps {
    obs: Observability,
    metrics: AppMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, Running>,
    ports: Ports,
}

/// One started app and what it was started from (to tell on reload whether it changed).
struct Running {
    fingerprint: Fingerprint,
    port: Option<u16>,
    #[cfg(feature = "wasmer")]
    handle: Handle,
}

#[cfg(feature = "wasmer")]
enum Handle {
    LongRunning(long_running::Supervisor),
    Pooled,
}

#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    config: AppConfig,
    module: PathBuf,
    module_sha256: [u8; 32],
    listen_host: IpAddr,
}

/// What a [`reload`](Apps::reload) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
}

impl Apps {
    /// Starts every app of `config`; relative module paths are taken from `base` (the
    /// directory of the file that declared them). Fails, with nothing left running, when a
    /// module cannot be read or compiled.
    pub async fn start(
        config: &AppsConfig,
        base: &Path,
        obs: &Observability,
    ) -> Result<Self, AppsError> {
        refuse_without_wasmer(config)?;
        let apps = Apps {
            obs: obs.clone(),
            metrics: AppMetrics::register(&obs.metrics)?,
            state: Mutex::new(State::default()),
        };
        if let Err(e) = apps.reload(config, base).await {
            apps.shutdown().await;
            return Err(e);
        }
        Ok(apps)
    }

    /// Brings the running apps to `config`: new apps start, removed ones stop, and an app whose
    /// config or module content changed is restarted with the new one. Apps that fail to
    /// build keep running as they were, and the error names them.
    pub async fn reload(
        &self,
        config: &AppsConfig,
        base: &Path,
    ) -> Result<ReloadSummary, AppsError> {
        refuse_without_wasmer(config)?;
        let listen_host: IpAddr = if config.listen_host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            config.listen_host.parse().map_err(|_| AppsError::Setup {
                app: String::new(),
                message: format!("listenHost `{}` is not an IP address", config.listen_host),
            })?
        };
        let mut state = self.state.lock().await;
        let mut summary = ReloadSummary::default();
        let wanted: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        let removed: Vec<String> = state
            .running
            .keys()
            .filter(|n| !wanted.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in removed {
            if let Some(r) = state.running.remove(&name) {
                self.stop_one(&name, r, &mut state.ports).await;
                self.metrics.forget(&name);
                summary.stopped.push(name);
            }
        }
        let mut first_error = None;
        for app in &config.apps {
            let module = resolve(base, &app.module);
            let bytes = match std::fs::read(&module) {
                Ok(b) => b,
                Err(source) => {
                    first_error.get_or_insert(AppsError::ReadModule {
                        app: app.name.clone(),
                        module: module.display().to_string(),
                        source,
                    });
                    continue;
                }
            };
            let fingerprint = Fingerprint {
                config: app.clone(),
                module: module.clone(),
                module_sha256: sha256(&bytes),
                listen_host,
            };
            if state
                .running
                .get(&app.name)
                .is_some_and(|r| r.fingerprint == fingerprint)
            {
                continue;
            }
            match self
                .start_one(app, config, fingerprint, &bytes, &mut state)
                .await
            {
                Ok(restarted) => {
                    if restarted {
                        summary.restarted.push(app.name.clone());
                    } else {
                        summary.started.push(app.name.clone());
                    }
                }
                Err(e) => {
                    tracing::error!(app = %app.name, "app not (re)started: {e}");
                    self.obs
                        .readiness
                        .set_warning(format!("app/{}", app.name), e.to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    /// Module files of the running apps, for a watcher to reload on change.
    pub async fn module_files(&self) -> Vec<PathBuf> {
        let state = self.state.lock().await;
        state
            .running
            .values()
            .map(|r| r.fingerprint.module.clone())
            .collect()
    }

    /// Names of the running apps.
    pub async fn names(&self) -> Vec<String> {
        self.state.lock().await.running.keys().cloned().collect()
    }

    /// Stops every app.
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        let running = std::mem::take(&mut state.running);
        for (name, r) in running {
            self.stop_one(&name, r, &mut state.ports).await;
        }
    }

    async fn stop_one(&self, name: &str, running: Running, ports: &mut Ports) {
        self.obs.apps.remove(name);
        self.obs.readiness.remove(&format!("app/{name}"));
        self.obs.readiness.clear_warning(&format!("app/{name}"));
        if let Some(p) = running.port {
            ports.release(p);
        }
        #[cfg(feature = "wasmer")]
        if let Handle::LongRunning(s) = running.handle {
            s.stop().await;
        }
        self.metrics.set_up(name, false);
    }

    #[cfg(not(feature = "wasmer"))]
    async fn start_one(
        &self,
        app: &AppConfig,
        _config: &AppsConfig,
        _fingerprint: Fingerprint,
        _bytes: &[u8],
        _state: &mut State,
    ) -> Result<bool, AppsError> {
        Err(AppsError::NoWasmer(app.name.clone()))
    }

    /// Builds and starts `app`, replacing a running one of that name. `Ok(true)` for a restart.
    #[cfg(feature = "wasmer")]
    async fn start_one(
        &self,
        app: &AppConfig,
        config: &AppsConfig,
        fingerprint: Fingerprint,
        bytes: &[u8],
        state: &mut State,
    ) -> Result<bool, AppsError> {
        use std::sync::Arc;

        use fiso_config::apps::Execution;

        let setup = |message: String| AppsError::Setup {
            app: app.name.clone(),
            message,
        };
        let shared = engine::shared().map_err(setup)?;
        let compiled = {
            let hash = fingerprint.module_sha256;
            let bytes = bytes.to_vec();
            tokio::task::spawn_blocking(move || shared.compile(hash, &bytes))
                .await
                .map_err(|e| setup(format!("compilation failed: {e}")))?
                .map_err(|message| AppsError::Module {
                    app: app.name.clone(),
                    module: fingerprint.module.display().to_string(),
                    message,
                })?
        };
        let preopens: Vec<(PathBuf, String)> = app
            .preopens
            .0
            .iter()
            .map(|p| (PathBuf::from(&p.host_path), p.guest_path.clone()))
            .collect();
        let fs = shared
            .preopen_fs(&preopens)
            .map_err(|e| setup(format!("preopens: {e}")))?;

        // The old instance stops before the new one binds its port.
        let previous = state.running.remove(&app.name);
        let restarted = previous.is_some();
        let mut kept_port = None;
        if let Some(prev) = previous {
            kept_port = prev
                .port
                .filter(|_| prev.fingerprint.config.port == app.port);
            if kept_port.is_none() {
                if let Some(p) = prev.port {
                    state.ports.release(p);
                }
            }
            #[cfg(feature = "wasmer")]
            if let Handle::LongRunning(s) = prev.handle {
                s.stop().await;
            }
        }

        let mut env = Vec::new();
        let port = if app.execution == Execution::LongRunning {
            let port = match (app.port, kept_port) {
                (0, Some(p)) => p,
                (0, None) => state
                    .ports
                    .allocate(config.default_port_range, fingerprint.listen_host)
                    .ok_or(AppsError::NoPort {
                        app: app.name.clone(),
                        min: config.default_port_range.min,
                        max: config.default_port_range.max,
                    })?,
                (p, _) => {
                    state.ports.reserve(p);
                    p
                }
            };
            env.push(("PORT".to_owned(), port.to_string()));
            Some(port)
        } else {
            None
        };
        env.push(("FISO_APP_NAME".to_owned(), app.name.clone()));
        env.extend(
            app.env
                .iter()
                .filter(|(k, _)| *k != "PORT" && *k != "FISO_APP_NAME")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let guest = Arc::new(engine::Guest {
            app: app.name.clone(),
            compiled,
            wasi: shared.wasi_runtime(fingerprint.listen_host),
            memory_limit: app.memory_limit_bytes(),
            env,
            preopens: preopens.into_iter().map(|(_, g)| g).collect(),
            fs,
            io: shared.io(),
        });
        self.metrics.declare(&app.name);
        self.obs
            .readiness
            .clear_warning(&format!("app/{}", app.name));
        let handle = match app.execution {
            Execution::LongRunning => {
                let port = port.expect("a long-running app has a port");
                let supervisor = long_running::Supervisor::start(
                    guest,
                    long_running::Settings {
                        name: app.name.clone(),
                        addr: std::net::SocketAddr::new(
                            connect_host(fingerprint.listen_host),
                            port,
                        ),
                        timeout: app.timeout(),
                        health_check: app.health_check.clone(),
                        health_check_interval: app.health_check_interval(),
                    },
                    self.obs.readiness.clone(),
                    self.metrics.clone(),
                );
                self.obs.apps.insert(supervisor.app.clone());
                Handle::LongRunning(supervisor)
            }
            Execution::Pooled | Execution::PerRequest => {
                let slots = match (app.execution, app.pool_size) {
                    (Execution::PerRequest, None) => pooled::PER_REQUEST_MAX,
                    _ => app.pool_size() as usize,
                };
                let warm = (app.execution == Execution::Pooled).then(|| {
                    warm::WarmPool::start(
                        &app.name,
                        guest.clone(),
                        slots,
                        pooled::STDOUT_LIMIT,
                        self.metrics.clone(),
                    )
                });
                self.obs.apps.insert(Arc::new(pooled::PooledApp {
                    name: app.name.clone(),
                    execution: app.execution.as_str(),
                    guest,
                    timeout: app.timeout(),
                    slots: Arc::new(tokio::sync::Semaphore::new(slots)),
                    warm,
                    metrics: self.metrics.clone(),
                }));
                self.obs.readiness.set_ready(format!("app/{}", app.name));
                self.metrics.set_up(&app.name, true);
                Handle::Pooled
            }
        };
        tracing::info!(
            app = %app.name,
            execution = app.execution.as_str(),
            port = ?port,
            module = %fingerprint.module.display(),
            "app {}", if restarted { "reloaded" } else { "loaded" }
        );
        state.running.insert(
            app.name.clone(),
            Running {
                fingerprint,
                port,
                handle,
            },
        );
        Ok(restarted)
    }
}

/// Where Fiso connects to reach an app listening on `host`: the host itself, or loopback for
/// "any address".
#[cfg(feature = "wasmer")]
fn connect_host(host: IpAddr) -> IpAddr {
    match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        h => h,
    }
}

fn refuse_without_wasmer(config: &AppsConfig) -> Result<(), AppsError> {
    refuse_unless(AVAILABLE, config)
}

/// The "no wasmer" refusal, apart from the build's feature so that every build tests it.
fn refuse_unless(available: bool, config: &AppsConfig) -> Result<(), AppsError> {
    if !available && !config.apps.is_empty() {
        let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        return Err(AppsError::NoWasmer(names.join("`, `")));
    }
    Ok(())
}

fn resolve(base: &Path, module: &str) -> PathBuf {
    let p = Path::new(module);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_wasmer_apps_are_refused_with_their_names() {
        let config: AppsConfig = fiso_config::parse::parse(
            "apps.yaml",
            "apps:\n  - {name: api, module: api.wasm}\n  - {name: fn, module: fn.wasm}\n",
        )
        .unwrap();
        let err = refuse_unless(false, &config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this build has no wasmer: apps (`api`, `fn`) need the Wasmer build of fiso: the fiso-wasmer image, or cargo build -p fiso --features wasmer"
        );
        assert!(refuse_unless(false, &AppsConfig::default()).is_ok());
        assert!(refuse_unless(true, &config).is_ok());
    }

    #[cfg(not(feature = "wasmer"))]
    #[tokio::test]
    async fn a_build_without_wasmer_refuses_apps_loudly() {
        let config: AppsConfig =
            fiso_config::parse::parse("apps.yaml", "apps:\n  - {name: api, module: api.wasm}\n")
                .unwrap();
        let err = Apps::start(&config, Path::new("."), &Observability::default())
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, AppsError::NoWasmer(_)));
        assert!(
            err.to_string().starts_with(
                "this build has no wasmer: apps (`api`) need the Wasmer build of fiso"
            ),
            "{err}"
        );
        let empty = AppsConfig::default();
        assert!(
            Apps::start(&empty, Path::new("."), &Observability::default())
                .await
                .is_ok()
        );
    }
}
