//! The Wasmer/WASIX apps of `fiso wasmer`, `fiso run` and `fiso dev`: where their config comes
//! from, starting them, and reloading them when that config or a module file changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fiso_apps::Apps;
use fiso_config::apps::{AioConfig, AppsConfig};
use fiso_config::validate::{check_apps, SourceFile};
use fiso_config::{Diagnostic, Diagnostics};
use fiso_runtime::watch::{is_yaml, watch_dir};
use fiso_runtime::Observability;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Metrics / readiness component of apps config reloads.
const COMPONENT: &str = "apps";
/// Quiet time after a change before the apps config and modules are read again.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where the apps config is read from.
#[derive(Debug, Clone)]
pub enum AppsSource {
    /// One apps file (`fiso wasmer --config`, `fiso run --apps-config`).
    File(PathBuf),
    /// Every `*.yaml` of a directory (`fiso dev` with `fiso/apps/`).
    Dir(PathBuf),
    /// The `wasmer:` section of an all-in-one file.
    Aio(PathBuf),
}

impl AppsSource {
    /// The directory watched for config changes, and the base of relative module paths.
    fn dir(&self) -> PathBuf {
        match self {
            AppsSource::Dir(d) => d.clone(),
            AppsSource::File(f) | AppsSource::Aio(f) => f
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned(),
        }
    }

    /// Reads and validates the apps config (warnings are logged, errors fail).
    pub fn load(&self) -> Result<AppsConfig> {
        let (config, diags) = self.check()?;
        for w in diags.warnings() {
            tracing::warn!("{w}");
        }
        if diags.has_errors() {
            bail!("invalid apps config:\n{diags}");
        }
        Ok(config)
    }

    /// Parses and validates without failing on findings.
    pub fn check(&self) -> Result<(AppsConfig, Diagnostics)> {
        match self {
            AppsSource::File(path) => {
                let text = read(path)?;
                let (mut loaded, diags) = check_apps(&[SourceFile {
                    path: path.display().to_string(),
                    text,
                }]);
                Ok((loaded.pop().map(|l| l.config).unwrap_or_default(), diags))
            }
            AppsSource::Dir(dir) => {
                let mut files = Vec::new();
                let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                    .with_context(|| format!("reading {}", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(is_yaml)
                    })
                    .collect();
                names.sort();
                for path in names {
                    files.push(SourceFile {
                        path: path.display().to_string(),
                        text: read(&path)?,
                    });
                }
                let (loaded, diags) = check_apps(&files);
                let mut merged: Option<AppsConfig> = None;
                for l in loaded {
                    match &mut merged {
                        None => merged = Some(l.config),
                        Some(m) => m.apps.extend(l.config.apps),
                    }
                }
                Ok((merged.unwrap_or_default(), diags))
            }
            AppsSource::Aio(path) => {
                let text = read(path)?;
                let file = path.display().to_string();
                let aio: AioConfig = match fiso_config::parse::parse(&file, &text) {
                    Ok(a) => a,
                    Err(d) => return Ok((AppsConfig::default(), d)),
                };
                let config = aio.wasmer.unwrap_or_default();
                let mut diags = Diagnostics::default();
                diags.extend(
                    fiso_config::validate::validate_apps(&config)
                        .into_iter()
                        .map(|d: Diagnostic| {
                            let mut d = d.under("wasmer");
                            d.file = Some(file.clone());
                            d
                        }),
                );
                Ok((config, diags))
            }
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Running apps and the task that reloads them.
pub struct RunningApps {
    apps: std::sync::Arc<Apps>,
    stop: CancellationToken,
    watcher: JoinHandle<()>,
}

impl RunningApps {
    /// Loads `source`, starts its apps and watches the config and the modules. Fails when the
    /// config is invalid or an app cannot start (a build without wasmer included).
    pub async fn start(source: AppsSource, obs: &Observability) -> Result<Self> {
        let config = source.load()?;
        let base = source.dir();
        let apps = std::sync::Arc::new(Apps::start(&config, &base, obs).await?);
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch_and_reload(
            source,
            apps.clone(),
            obs.clone(),
            stop.clone(),
        ));
        Ok(RunningApps {
            apps,
            stop,
            watcher,
        })
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.watcher.await;
        self.apps.shutdown().await;
    }
}

/// Reloads the apps whenever the config's directory or a module's directory changes.
async fn watch_and_reload(
    source: AppsSource,
    apps: std::sync::Arc<Apps>,
    obs: Observability,
    stop: CancellationToken,
) {
    let base = source.dir();
    loop {
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        dirs.insert(base.clone());
        for module in apps.module_files().await {
            if let Some(parent) = module.parent() {
                dirs.insert(parent.to_owned());
            }
        }
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watch_stop = CancellationToken::new();
        for dir in &dirs {
            match watch_dir(dir, DEBOUNCE) {
                Ok(mut w) => {
                    let (tx, watch_stop) = (tx.clone(), watch_stop.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                () = watch_stop.cancelled() => return,
                                changed = w.changed() => {
                                    if changed.is_none() || tx.send(()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch for app changes: {e}"),
            }
        }
        drop(tx);
        let changed = tokio::select! {
            () = stop.cancelled() => false,
            got = rx.recv() => got.is_some(),
        };
        watch_stop.cancel();
        if !changed {
            return;
        }
        let reloads = obs.metrics.config_reload();
        match source.load() {
            Ok(config) => match apps.reload(&config, &base).await {
                Ok(summary) => {
                    reloads.success(COMPONENT);
                    obs.readiness.clear_warning(COMPONENT);
                    if summary != Default::default() {
                        tracing::info!(
                            started = ?summary.started,
                            restarted = ?summary.restarted,
                            stopped = ?summary.stopped,
                            "apps reloaded"
                        );
                    }
                }
                Err(e) => {
                    reloads.failure(COMPONENT);
                    tracing::error!("apps reload failed: {e}");
                    obs.readiness.set_warning(COMPONENT, e.to_string());
                }
            },
            Err(e) => {
                reloads.failure(COMPONENT);
                let e = fiso_runtime::error_text::chain(e.as_ref());
                tracing::error!("apps config not reloaded, the running apps are kept: {e}");
                obs.readiness.set_warning(COMPONENT, e);
            }
        }
    }
}
