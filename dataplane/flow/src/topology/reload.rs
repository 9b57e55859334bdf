//! Hot reload of the flow directory: diff by content hash, rebuild only what changed, keep the
//! last good version of any file that became invalid (and say so in logs, metrics, `/readyz`
//! and `/config`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fiso_config::validate::{check_project, SourceFile};
use fiso_config::Diagnostic;
use fiso_runtime::apps::AppDirectory;
use fiso_runtime::reload::changes_in_words;
use fiso_runtime::watch::{is_yaml, snapshot, version_document, ConfigFile, Snapshot, Unreadable};
use fiso_runtime::{ConfigInfo, MetricsRegistry, Readiness};
use serde_json::json;

use super::supervisor::{component, Supervisor};
use crate::metrics::FlowMetrics;
use crate::pipeline::{Parts, Pipeline};
use crate::sources::{self, SourceOptions};

/// The last version of a file that validated.
#[derive(Debug, Clone)]
struct Good {
    hash: String,
    text: String,
}

/// What one reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub started: Vec<String>,
    pub replaced: Vec<String>,
    pub stopped: Vec<String>,
    /// File → why it was not (or only partly) applied.
    pub problems: BTreeMap<String, String>,
}

/// Reconciles the running flows with the files in the config directory.
pub struct FlowDirectory {
    dir: PathBuf,
    supervisor: Arc<Supervisor>,
    metrics: FlowMetrics,
    registry: MetricsRegistry,
    readiness: Readiness,
    config_info: ConfigInfo,
    apps: AppDirectory,
    sources: SourceOptions,
    last_good: Mutex<BTreeMap<String, Good>>,
    /// Files whose last reload reported a problem, to say when one is fixed.
    failing: Mutex<BTreeSet<String>>,
    first_load: std::sync::atomic::AtomicBool,
}

impl FlowDirectory {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: impl Into<PathBuf>,
        supervisor: Arc<Supervisor>,
        metrics: FlowMetrics,
        registry: MetricsRegistry,
        readiness: Readiness,
        config_info: ConfigInfo,
        apps: AppDirectory,
        sources: SourceOptions,
    ) -> Self {
        FlowDirectory {
            dir: dir.into(),
            supervisor,
            metrics,
            registry,
            readiness,
            config_info,
            apps,
            sources,
            last_good: Mutex::new(BTreeMap::new()),
            failing: Mutex::new(BTreeSet::new()),
            first_load: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory and brings the running flows in line with it. Never panics: a
    /// reload that fails for any reason is reported and counted like an invalid file, the
    /// running flows stay, and the next change is reloaded as usual.
    pub fn reload(&self) -> ReloadReport {
        match catch_unwind(AssertUnwindSafe(|| self.apply())) {
            Ok(report) => report,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".to_owned());
                let problem = format!("the reload failed ({message}); keeping the running flows");
                tracing::error!(dir = %self.dir.display(), error = %problem, "reload failed");
                self.registry.config_reload().failure("flow");
                self.readiness
                    .set_warning(format!("config/{}", self.dir.display()), problem.clone());
                let mut report = ReloadReport::default();
                report
                    .problems
                    .insert(self.dir.display().to_string(), problem);
                report
            }
        }
    }

    fn apply(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let Snapshot { files, unreadable } = match snapshot(&self.dir, is_yaml) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the flow directory; keeping the running flows");
                report
                    .problems
                    .insert(self.dir.display().to_string(), e.to_string());
                self.finish(&report, &[]);
                return report;
            }
        };
        let mut last_good = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
        let candidates = self.settle(&files, &unreadable, &last_good, &mut report);

        let (project, _) = check_project(
            &candidates
                .values()
                .map(|(_, s)| s.clone())
                .collect::<Vec<_>>(),
            None,
        );
        if self
            .first_load
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(count = project.flows.len(), dir = %self.dir.display(), "starting flows");
        }
        let running = self.supervisor.versions();
        let names: BTreeSet<String> = project.flows.iter().map(|f| f.name().to_owned()).collect();
        // Flows going away hand their paths over to flows started below (e.g. a renamed flow).
        for name in running.keys().filter(|n| !names.contains(*n)) {
            self.supervisor.retire(name);
        }
        for flow in &project.flows {
            let name = flow.name().to_owned();
            let (hash, _) = &candidates[&flow.file];
            // A short hash names the version in logs; consecutive versions of one file never
            // share 12 hex digits by chance in practice.
            let mut version = format!("{}@{}", flow.file, &hash[..hash.len().min(12)]);
            if !flow.config.interceptors.is_empty() {
                // A rewritten module is a new version of the flow too.
                version.push_str(&format!(
                    "+wasm:{}",
                    crate::interceptor::modules_fingerprint(
                        &flow.config.interceptors,
                        Some(&self.dir)
                    )
                ));
            }
            if running.get(&name) == Some(&version) {
                continue;
            }
            let source = sources::build(&flow.config.source, &self.sources);
            let parts = Parts {
                version: &version,
                metrics: self.metrics.clone(),
                dir: Some(&self.dir),
                kafka_source: source.kafka_cluster(),
                apps: &self.apps,
            };
            match Pipeline::build(&flow.config, parts) {
                Ok(pipeline) => {
                    if running.contains_key(&name) {
                        report.replaced.push(name.clone());
                    } else {
                        report.started.push(name.clone());
                    }
                    self.supervisor.start(pipeline, source);
                }
                Err(e) => {
                    tracing::error!(name = %name, file = %flow.file, error = %e, "flow stopped with error");
                    self.readiness
                        .set_not_ready(component(&name), e.to_string());
                    self.metrics.set_up(&name, false);
                    report.problems.insert(flow.file.clone(), e.to_string());
                }
            }
        }
        for name in running.keys() {
            if !names.contains(name) {
                self.supervisor.stop(name);
                report.stopped.push(name.clone());
            }
        }
        // Flows that failed to build and then vanished from the directory stop being reported.
        self.readiness
            .retain_prefixed("flow/", |n| names.contains(n) || running.contains_key(n));

        for f in &files {
            if let Some((hash, _)) = candidates.get(&f.name).filter(|(h, _)| *h == f.hash) {
                last_good.insert(
                    f.name.clone(),
                    Good {
                        hash: hash.clone(),
                        text: f.content.clone(),
                    },
                );
            }
        }
        last_good.retain(|name, _| {
            files.iter().any(|f| &f.name == name) || unreadable.iter().any(|u| &u.name == name)
        });
        drop(last_good);
        self.finish(&report, &files);
        report
    }

    /// The set of file versions to run: each file as it is now if the whole set validates with
    /// it, otherwise its last good version (or nothing, for a file that never was valid).
    /// A file that cannot be read (permission, symlink loop, not UTF-8, too large) is treated
    /// as an invalid one: its last good version, if any, and a problem of its own.
    fn settle(
        &self,
        files: &[ConfigFile],
        unreadable: &[Unreadable],
        last_good: &BTreeMap<String, Good>,
        report: &mut ReloadReport,
    ) -> BTreeMap<String, (String, SourceFile)> {
        let mut candidates: BTreeMap<String, (String, SourceFile)> = files
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    (
                        f.hash.clone(),
                        SourceFile {
                            path: f.name.clone(),
                            text: f.content.clone(),
                        },
                    ),
                )
            })
            .collect();
        for file in unreadable {
            let msg = file.error.to_string();
            if let Some(good) = last_good.get(&file.name) {
                tracing::error!(file = %file.name, error = %msg, "unreadable flow config; keeping the last good version");
                candidates.insert(
                    file.name.clone(),
                    (
                        good.hash.clone(),
                        SourceFile {
                            path: file.name.clone(),
                            text: good.text.clone(),
                        },
                    ),
                );
            } else {
                tracing::error!(file = %file.name, error = %msg, "unreadable flow config; not started");
            }
            report.problems.insert(file.name.clone(), msg);
        }
        // Each round removes or reverts at least one file, so this ends.
        for _ in 0..=files.len() {
            let sources: Vec<SourceFile> = candidates.values().map(|(_, s)| s.clone()).collect();
            let (_, diags) = check_project(&sources, None);
            // Every finding of a file, named as the user sees it (as `fiso validate` does).
            let bad: BTreeMap<String, String> = diags
                .errors()
                .filter_map(|d| {
                    let file = d.file.clone()?;
                    let shown = Diagnostic {
                        file: Some(self.shown(&file)),
                        ..d.clone()
                    };
                    Some((file, shown.to_string()))
                })
                .fold(BTreeMap::new(), |mut acc, (file, msg)| {
                    acc.entry(file)
                        .and_modify(|m: &mut String| m.push_str(&format!("\n{msg}")))
                        .or_insert(msg);
                    acc
                });
            if bad.is_empty() {
                break;
            }
            for (file, msg) in bad {
                let current_hash = candidates.get(&file).map(|(h, _)| h.clone());
                match last_good.get(&file) {
                    Some(good) if Some(&good.hash) != current_hash.as_ref() => {
                        tracing::error!(file = %file, error = %msg, "invalid flow config; keeping the last good version");
                        candidates.insert(
                            file.clone(),
                            (
                                good.hash.clone(),
                                SourceFile {
                                    path: file.clone(),
                                    text: good.text.clone(),
                                },
                            ),
                        );
                    }
                    _ => {
                        tracing::error!(file = %file, error = %msg, "invalid flow config; not started");
                        candidates.remove(&file);
                    }
                }
                report.problems.insert(file, msg);
            }
        }
        candidates
    }

    /// A file of the directory as the user named it: the configured directory joined with
    /// the file name.
    fn shown(&self, name: &str) -> String {
        let path = self.dir.join(name).display().to_string();
        match path.strip_prefix("./") {
            Some(rest) => rest.to_owned(),
            None => path,
        }
    }

    fn finish(&self, report: &ReloadReport, files: &[ConfigFile]) {
        let reload = self.registry.config_reload();
        if report.problems.is_empty() {
            reload.success("flow");
        } else {
            reload.failure("flow");
        }
        self.readiness
            .retain_warnings_prefixed("config/", |file| report.problems.contains_key(file));
        for (file, problem) in &report.problems {
            self.readiness
                .set_warning(format!("config/{file}"), problem.clone());
        }
        let mut doc = version_document(&self.dir, files, SystemTime::now());
        doc["problems"] = json!(report.problems);
        doc["flows"] = json!(self.supervisor.versions());
        self.config_info.set_section("flow", doc);
        let changes = changes_in_words(&[
            ("started", &report.started[..]),
            ("replaced", &report.replaced[..]),
            ("stopped", &report.stopped[..]),
        ]);
        if !changes.is_empty() {
            tracing::info!(
                started = ?report.started,
                replaced = ?report.replaced,
                stopped = ?report.stopped,
                "flows reloaded: {changes}"
            );
        }
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        for file in failing.iter() {
            if !report.problems.contains_key(file) && files.iter().any(|f| &f.name == file) {
                tracing::info!(file = %file, "flow config is valid again");
            }
        }
        *failing = report.problems.keys().cloned().collect();
    }
}
