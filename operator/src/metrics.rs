//! Every metric the operator exports, registered once on the process registry:
//!
//! * `fiso_operator_reconcile_total{kind,result}`: reconciles by outcome (`success`, `error`),
//! * `fiso_operator_reconcile_duration_seconds{kind}`: how long each took,
//! * `fiso_operator_reconcile_errors_total{kind,error}`: failures by [`ErrorCode`],
//! * `fiso_operator_leader`: 1 while this replica runs the controllers (always 1 without
//!   leader election), so "exactly one leader" is a simple `sum()` alert.
//!
//! `kind` is `FlowDefinition`, `LinkTarget` or `ConfigMap` (the renderer). Every series
//! is created at zero when registered, so rates and alerts work before the first failure.

use std::time::Instant;

use fiso_runtime::metrics::{MetricsError, MetricsRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::error::{Error, ErrorCode};

/// What a reconcile acted on: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    FlowDefinition,
    LinkTarget,
    WasmApp,
    /// The renderer, which reconciles one ConfigMap per selection.
    ConfigMap,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::FlowDefinition,
        Kind::LinkTarget,
        Kind::WasmApp,
        Kind::ConfigMap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FlowDefinition => "FlowDefinition",
            Kind::LinkTarget => "LinkTarget",
            Kind::WasmApp => "WasmApp",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    error: &'static str,
}

/// Reconciles are API round trips: milliseconds normally, seconds when the server struggles.
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Handles to the operator's metric families (cheap to clone, shared by every controller).
#[derive(Debug, Clone)]
pub struct Metrics {
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    /// Families that are not registered anywhere: for tests and embedders without `/metrics`.
    fn default() -> Self {
        let this = Self {
            reconciles: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS.iter().copied())
            }),
            errors: Family::default(),
            leader: Gauge::default(),
        };
        // Touch every series so it is exposed (at 0) from the first scrape.
        for kind in Kind::ALL {
            for result in ["success", "error"] {
                let _ = this.reconciles.get_or_create(&ResultLabels {
                    kind: kind.as_str(),
                    result,
                });
            }
            let _ = this.durations.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
            for code in ErrorCode::RECONCILE {
                let _ = this.errors.get_or_create(&ErrorLabels {
                    kind: kind.as_str(),
                    error: code.as_str(),
                });
            }
        }
        this
    }
}

impl Metrics {
    /// Creates the families and registers them under their exposed names.
    pub fn register(registry: &MetricsRegistry) -> Result<Self, MetricsError> {
        let this = Self::default();
        registry.register(
            "fiso_operator_reconcile_total",
            "Reconciles by kind and result",
            this.reconciles.clone(),
        )?;
        registry.register(
            "fiso_operator_reconcile_duration_seconds",
            "Reconcile duration by kind",
            this.durations.clone(),
        )?;
        registry.register(
            "fiso_operator_reconcile_errors_total",
            "Failed reconciles by kind and error code",
            this.errors.clone(),
        )?;
        registry.register(
            "fiso_operator_leader",
            "1 while this replica runs the controllers",
            this.leader.clone(),
        )?;
        Ok(this)
    }

    /// Starts timing a reconcile; finish it with [`ReconcileTimer::success`] or
    /// [`ReconcileTimer::error`]. Dropping it unfinished (a cancelled reconcile) records nothing.
    pub fn start(&self, kind: Kind) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            kind,
            started: Instant::now(),
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    fn finish(&self, kind: Kind, started: Instant, error: Option<&Error>) {
        self.durations
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles
            .get_or_create(&ResultLabels {
                kind: kind.as_str(),
                result,
            })
            .inc();
        if let Some(e) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: kind.as_str(),
                    error: e.code().as_str(),
                })
                .inc();
        }
    }
}

/// One reconcile being measured.
#[must_use = "finish the timer with success() or error()"]
pub struct ReconcileTimer {
    metrics: Metrics,
    kind: Kind,
    started: Instant,
}

impl ReconcileTimer {
    pub fn success(self) {
        self.metrics.finish(self.kind, self.started, None);
    }

    pub fn error(self, error: &Error) {
        self.metrics.finish(self.kind, self.started, Some(error));
    }

    /// Records the outcome of `result` and passes it through.
    pub fn finish<T>(self, result: Result<T, Error>) -> Result<T, Error> {
        match &result {
            Ok(_) => self.success(),
            Err(e) => self.error(e),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_from_startup_and_counts() {
        let registry = MetricsRegistry::new();
        let m = Metrics::register(&registry).unwrap();
        let text = registry.encode();
        for line in [
            "fiso_operator_reconcile_total{kind=\"FlowDefinition\",result=\"success\"} 0\n",
            "fiso_operator_reconcile_total{kind=\"ConfigMap\",result=\"error\"} 0\n",
            "fiso_operator_reconcile_duration_seconds_count{kind=\"LinkTarget\"} 0\n",
            "fiso_operator_reconcile_errors_total{kind=\"LinkTarget\",error=\"KUBE_FORBIDDEN\"} 0\n",
            "fiso_operator_leader 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }

        m.start(Kind::FlowDefinition).success();
        let err = Error::Render {
            what: "x".into(),
            message: "y".into(),
        };
        m.start(Kind::LinkTarget).error(&err);
        m.set_leader(true);
        let text = registry.encode();
        for line in [
            "fiso_operator_reconcile_total{kind=\"FlowDefinition\",result=\"success\"} 1\n",
            "fiso_operator_reconcile_total{kind=\"LinkTarget\",result=\"error\"} 1\n",
            "fiso_operator_reconcile_duration_seconds_count{kind=\"FlowDefinition\"} 1\n",
            "fiso_operator_reconcile_errors_total{kind=\"LinkTarget\",error=\"RENDER_FAILED\"} 1\n",
            "fiso_operator_leader 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
