//! Webhook metrics: `fiso_webhook_admissions_total{result}`,
//! `fiso_webhook_admission_duration_seconds{result}` (result: `injected`, `skipped`, `denied`,
//! `invalid`) and `fiso_webhook_certificate_reloads_total{result}` (`success`, `failure`).
//!
//! The handles work unregistered (tests, or a binary that does not export them);
//! [`WebhookMetrics::register`] makes them part of the operator's `/metrics`.

use std::time::Duration;

use fiso_runtime::metrics::{MetricsError, ReloadResult};
use fiso_runtime::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::admission::Outcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily = Family<ResultLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~8 s: local decisions take well under a millisecond, LinkTarget reads a few.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 15))
}

#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    admissions: Family<ResultLabel, Counter>,
    duration: HistogramFamily,
    cert_reloads: Family<ResultLabel, Counter>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        let metrics = WebhookMetrics {
            admissions: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            cert_reloads: Family::default(),
        };
        // Every series exists from start-up, so `increase()` alerts fire on the first one.
        for outcome in [
            Outcome::Injected,
            Outcome::Skipped,
            Outcome::Denied,
            Outcome::Invalid,
        ] {
            let label = ResultLabel {
                result: outcome.as_str(),
            };
            let _ = metrics.admissions.get_or_create(&label);
            let _ = metrics.duration.get_or_create(&label);
        }
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = metrics.cert_reloads.get_or_create(&ResultLabel {
                result: result.as_str(),
            });
        }
        metrics
    }
}

impl WebhookMetrics {
    /// New handles, registered in `registry` (once per process).
    pub fn register(registry: &MetricsRegistry) -> Result<Self, MetricsError> {
        let metrics = Self::default();
        registry.register(
            "fiso_webhook_admissions_total",
            "Pod admission reviews answered by the sidecar-injection webhook, by result",
            metrics.admissions.clone(),
        )?;
        registry.register(
            "fiso_webhook_admission_duration_seconds",
            "Time to answer an admission review, by result",
            metrics.duration.clone(),
        )?;
        registry.register(
            "fiso_webhook_certificate_reloads_total",
            "Serving certificate (re)loads, by result",
            metrics.cert_reloads.clone(),
        )?;
        Ok(metrics)
    }

    pub fn admission(&self, outcome: Outcome, elapsed: Duration) {
        let label = ResultLabel {
            result: outcome.as_str(),
        };
        self.admissions.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
    }

    pub fn cert_reload(&self, result: ReloadResult) {
        self.cert_reloads
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    /// Admissions counted so far with `outcome` (for tests and diagnostics).
    pub fn admissions(&self, outcome: Outcome) -> u64 {
        self.admissions
            .get_or_create(&ResultLabel {
                result: outcome.as_str(),
            })
            .get()
    }

    /// Certificate (re)loads counted so far with `result`.
    pub fn cert_reloads(&self, result: ReloadResult) -> u64 {
        self.cert_reloads
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_are_exported() {
        let registry = MetricsRegistry::new();
        let metrics = WebhookMetrics::register(&registry).unwrap();
        metrics.admission(Outcome::Injected, Duration::from_millis(3));
        metrics.cert_reload(ReloadResult::Success);
        let text = registry.encode();
        assert!(
            text.contains("fiso_webhook_admissions_total{result=\"injected\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fiso_webhook_admissions_total{result=\"invalid\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("fiso_webhook_admission_duration_seconds_count{result=\"injected\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fiso_webhook_certificate_reloads_total{result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(
            WebhookMetrics::register(&registry).is_err(),
            "registering twice is refused"
        );
    }
}
