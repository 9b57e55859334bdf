//! One Prometheus registry per process, shared by every crate that exports metrics.
//!
//! Crates keep their own handles (counters and families are `Arc`-backed) and register each
//! family once at startup under its exact exposed name, e.g. `fiso_flow_events_total`. The
//! registry checks the name so that what a crate passes is what Prometheus scrapes — the
//! OpenMetrics encoder otherwise appends `_total` to counters behind your back.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

mod per_core;
pub use per_core::{PerCoreCounter, PerCoreHistogram};

/// The exemplar of a latency observation: the trace it was part of (OpenMetrics exemplars,
/// which Prometheus stores with `--enable-feature=exemplar-storage` and Grafana links to the
/// trace).
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

/// A latency histogram that carries exemplars with the trace id when traces are exported, and
/// is the per-core histogram otherwise (exemplars take a lock of their own per observation,
/// which the data path pays only when tracing is on). Chosen when the histogram is created:
/// create after logging is set up.
#[derive(Debug, Clone)]
pub enum LatencyHistogram {
    Plain(PerCoreHistogram),
    Traced(prometheus_client::metrics::exemplar::HistogramWithExemplars<TraceExemplar>),
}

impl LatencyHistogram {
    pub fn new(buckets: impl Iterator<Item = f64>) -> Self {
        if crate::otel::enabled() {
            Self::Traced(prometheus_client::metrics::exemplar::HistogramWithExemplars::new(buckets))
        } else {
            Self::Plain(PerCoreHistogram::new(buckets))
        }
    }

    /// Observes `seconds`; the exemplar is the current span's trace, when sampled.
    pub fn observe(&self, seconds: f64) {
        match self {
            Self::Plain(h) => h.observe(seconds),
            Self::Traced(h) => h.observe(
                seconds,
                crate::otel::current_trace_id().map(|trace_id| TraceExemplar { trace_id }),
                None,
            ),
        }
    }

    /// Observes `seconds` with `span`'s trace as the exemplar (outside the span).
    pub fn observe_in(&self, seconds: f64, span: &tracing::Span) {
        match self {
            Self::Plain(h) => h.observe(seconds),
            Self::Traced(h) => h.observe(
                seconds,
                crate::otel::trace_id_of(span).map(|trace_id| TraceExemplar { trace_id }),
                None,
            ),
        }
    }
}

impl prometheus_client::metrics::TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for LatencyHistogram {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match self {
            Self::Plain(h) => h.encode(encoder),
            Self::Traced(h) => h.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What `/metrics` answers with; Prometheus negotiates OpenMetrics natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family this project exports starts with this.
pub const PREFIX: &str = "fiso_";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metric name `{name}` is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("metric `{name}` is already registered")]
    Duplicate { name: String },
}

#[derive(Clone, Default)]
pub struct MetricsRegistry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    families: Mutex<Families>,
    config_reload: OnceLock<ConfigReloadMetrics>,
}

#[derive(Default)]
struct Families {
    registry: Registry,
    names: HashSet<String>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("families", &self.lock().names.len())
            .finish()
    }
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a metric family under its exposed `name`: `fiso_` prefix, and counters end
    /// in `_total`. Registering a name twice is an error rather than a duplicated family in
    /// the scrape, which Prometheus would reject whole; register once per process, not per
    /// (re)built flow — flow names belong in labels.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl Metric,
    ) -> Result<(), MetricsError> {
        let invalid = |reason| MetricsError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if !name.starts_with(PREFIX) {
            return Err(invalid("it must start with `fiso_`"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid("use lowercase letters, digits and `_` only"));
        }
        // The encoder appends the type suffix itself.
        let base = match metric.metric_type() {
            MetricType::Counter => name
                .strip_suffix("_total")
                .ok_or_else(|| invalid("a counter's name must end in `_total`"))?,
            MetricType::Info => name
                .strip_suffix("_info")
                .ok_or_else(|| invalid("an info metric's name must end in `_info`"))?,
            _ => name,
        };
        let mut families = self.lock();
        if !families.names.insert(name.to_owned()) {
            return Err(MetricsError::Duplicate {
                name: name.to_owned(),
            });
        }
        // The encoder appends the final full stop.
        families
            .registry
            .register(base, help.trim_end_matches('.'), metric);
        Ok(())
    }

    /// The whole registry in OpenMetrics text format, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.lock().registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// `fiso_config_reload_total` and `fiso_config_last_reload_successful`, registered on
    /// first use so that flow and link can both report through one registry.
    pub fn config_reload(&self) -> &ConfigReloadMetrics {
        self.inner.config_reload.get_or_init(|| {
            ConfigReloadMetrics::register(self)
                .expect("config reload metrics are registered only here")
        })
    }

    fn lock(&self) -> MutexGuard<'_, Families> {
        // A panic elsewhere while registering leaves the registry usable.
        self.inner
            .families
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    component: String,
    result: ReloadResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

/// Outcome of loading a config directory, labelled by `component` (`flow`, `link`) because
/// `fiso run` serves both from one registry.
#[derive(Debug, Clone)]
pub struct ConfigReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    last_successful: Family<ComponentLabels, Gauge>,
}

impl ConfigReloadMetrics {
    fn register(registry: &MetricsRegistry) -> Result<Self, MetricsError> {
        let this = Self {
            reloads: Family::default(),
            last_successful: Family::default(),
        };
        registry.register(
            "fiso_config_reload_total",
            "Config loads and reloads by result",
            this.reloads.clone(),
        )?;
        registry.register(
            "fiso_config_last_reload_successful",
            "1 if the last config (re)load succeeded, 0 if the last good config is still in use",
            this.last_successful.clone(),
        )?;
        Ok(this)
    }

    /// Record the initial load too, so the series exist (at 0 for failures) from startup and
    /// `increase()` alerts work on the first failure.
    pub fn record(&self, component: &str, result: ReloadResult) {
        for r in [ReloadResult::Success, ReloadResult::Failure] {
            let counter = self.reloads.get_or_create(&ReloadLabels {
                component: component.to_owned(),
                result: r,
            });
            if r == result {
                counter.inc();
            }
        }
        self.last_successful
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .set(i64::from(result == ReloadResult::Success));
    }

    pub fn success(&self, component: &str) {
        self.record(component, ReloadResult::Success);
    }

    pub fn failure(&self, component: &str) {
        self.record(component, ReloadResult::Failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn exposed_names_are_the_registered_names() {
        let registry = MetricsRegistry::new();
        let events: Family<Vec<(String, String)>, Counter> = Family::default();
        registry
            .register(
                "fiso_flow_events_total",
                "Total events processed.",
                events.clone(),
            )
            .unwrap();
        let duration = Histogram::new([0.01, 0.1, 1.0]);
        registry
            .register(
                "fiso_flow_event_duration_seconds",
                "Processing duration",
                duration.clone(),
            )
            .unwrap();
        events
            .get_or_create(&vec![
                ("flow".into(), "orders".into()),
                ("status".into(), "success".into()),
            ])
            .inc();
        duration.observe(0.05);

        let text = registry.encode();
        assert!(text.contains("# TYPE fiso_flow_events counter"), "{text}");
        assert!(text.contains("# HELP fiso_flow_events Total events processed.\n"));
        assert!(text.contains("fiso_flow_events_total{flow=\"orders\",status=\"success\"} 1\n"));
        assert!(text.contains("fiso_flow_event_duration_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("fiso_flow_event_duration_seconds_count 1\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn rejects_bad_and_duplicate_names() {
        let registry = MetricsRegistry::new();
        let bad = |name: &str| registry.register(name, "h", Counter::<u64>::default());
        assert!(matches!(
            bad("flow_events_total"),
            Err(MetricsError::InvalidName { .. })
        ));
        assert!(matches!(
            bad("fiso_flow_events"),
            Err(MetricsError::InvalidName { .. })
        ));
        assert!(matches!(
            bad("fiso_flow-events_total"),
            Err(MetricsError::InvalidName { .. })
        ));
        bad("fiso_flow_dlq_total").unwrap();
        assert!(matches!(
            bad("fiso_flow_dlq_total"),
            Err(MetricsError::Duplicate { .. })
        ));
        let gauge: Gauge = Gauge::default();
        registry
            .register("fiso_link_circuit_state", "h", gauge)
            .unwrap();
    }

    #[test]
    fn reload_metrics_expose_both_results_and_the_state() {
        let registry = MetricsRegistry::new();
        registry.config_reload().success("flow");
        registry.config_reload().failure("flow");
        registry.config_reload().success("link");

        let text = registry.encode();
        for line in [
            "fiso_config_reload_total{component=\"flow\",result=\"success\"} 1\n",
            "fiso_config_reload_total{component=\"flow\",result=\"failure\"} 1\n",
            "fiso_config_reload_total{component=\"link\",result=\"success\"} 1\n",
            "fiso_config_reload_total{component=\"link\",result=\"failure\"} 0\n",
            "fiso_config_last_reload_successful{component=\"flow\"} 0\n",
            "fiso_config_last_reload_successful{component=\"link\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE fiso_config_reload counter").count(), 1);
    }
}
