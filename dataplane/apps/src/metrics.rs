//! Every metric of the apps runtime, labelled by app name.

use fiso_runtime::metrics::{MetricsError, MetricsRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub app: String,
    /// `ok` or `failed`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub app: String,
    /// The HTTP status answered, or the error code (`APP_TIMEOUT`, ...) when there was none.
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub app: String,
    /// `warm` (instantiated ahead by the pool) or `cold` (instantiated for the request).
    pub instance: &'static str,
}

#[derive(Debug, Clone)]
pub struct AppMetrics {
    up: Family<AppLabel, Gauge>,
    restarts: Family<AppLabel, Counter>,
    health_checks: Family<ResultLabels, Counter>,
    requests: Family<StatusLabels, Counter>,
    memory: Family<AppLabel, Gauge>,
    warm: Family<AppLabel, Gauge>,
    runs: Family<RunLabels, Counter>,
}

impl AppMetrics {
    /// Registers the families once per process.
    pub fn register(registry: &MetricsRegistry) -> Result<Self, MetricsError> {
        let m = AppMetrics {
            up: Family::default(),
            restarts: Family::default(),
            health_checks: Family::default(),
            requests: Family::default(),
            memory: Family::default(),
            warm: Family::default(),
            runs: Family::default(),
        };
        registry.register(
            "fiso_app_up",
            "1 while the app takes requests (long-running: running and healthy), else 0",
            m.up.clone(),
        )?;
        registry.register(
            "fiso_app_restarts_total",
            "Restarts of a long-running app after it exited, trapped or hit its memory limit",
            m.restarts.clone(),
        )?;
        registry.register(
            "fiso_app_health_check_total",
            "Health checks of a long-running app, by result (ok, failed)",
            m.health_checks.clone(),
        )?;
        registry.register(
            "fiso_app_requests_total",
            "Requests sent to an app through Fiso, by HTTP status or error code",
            m.requests.clone(),
        )?;
        registry.register(
            "fiso_app_memory_bytes",
            "Linear memory of the app's running instance (the latest run of a pooled app)",
            m.memory.clone(),
        )?;
        registry.register(
            "fiso_app_warm_instances",
            "Instances of a pooled app instantiated ahead and waiting for a request",
            m.warm.clone(),
        )?;
        registry.register(
            "fiso_app_runs_total",
            "Runs of a pooled or perRequest app, by instance (warm: prepared ahead, cold: \
             instantiated for the request)",
            m.runs.clone(),
        )?;
        Ok(m)
    }

    fn label(app: &str) -> AppLabel {
        AppLabel {
            app: app.to_owned(),
        }
    }

    pub fn set_up(&self, app: &str, up: bool) {
        self.up.get_or_create(&Self::label(app)).set(i64::from(up));
    }
    pub fn restart(&self, app: &str) {
        self.restarts.get_or_create(&Self::label(app)).inc();
    }
    pub fn health_check(&self, app: &str, ok: bool) {
        self.health_checks
            .get_or_create(&ResultLabels {
                app: app.to_owned(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
    pub fn request(&self, app: &str, status: &str) {
        self.requests
            .get_or_create(&StatusLabels {
                app: app.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }
    pub fn set_memory(&self, app: &str, bytes: u64) {
        self.memory
            .get_or_create(&Self::label(app))
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    pub fn set_warm(&self, app: &str, instances: usize) {
        self.warm
            .get_or_create(&Self::label(app))
            .set(i64::try_from(instances).unwrap_or(i64::MAX));
    }
    pub fn run(&self, app: &str, warm: bool) {
        self.runs
            .get_or_create(&RunLabels {
                app: app.to_owned(),
                instance: if warm { "warm" } else { "cold" },
            })
            .inc();
    }
    /// Makes every family show the app (at 0) as soon as it is declared.
    pub fn declare(&self, app: &str) {
        self.set_up(app, false);
        let _ = self.restarts.get_or_create(&Self::label(app));
        let _ = self.memory.get_or_create(&Self::label(app));
    }
    /// Drops the series of an app removed from the config.
    pub fn forget(&self, app: &str) {
        let l = Self::label(app);
        self.up.remove(&l);
        self.restarts.remove(&l);
        self.memory.remove(&l);
        self.warm.remove(&l);
        for instance in ["warm", "cold"] {
            self.runs.remove(&RunLabels {
                app: app.to_owned(),
                instance,
            });
        }
        for result in ["ok", "failed"] {
            self.health_checks.remove(&ResultLabels {
                app: app.to_owned(),
                result,
            });
        }
    }
}
