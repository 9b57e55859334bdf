//! Every metric Fiso-Link emits (names and labels per the upstream README's Link table).
//!
//! Label values are shared (`Arc<str>` target names, static method and mode names, numeric
//! statuses) so that recording a request allocates nothing: the label set is built for every
//! request, and the families clone it only the first time they see it.

use std::sync::{Arc, OnceLock};

use fiso_runtime::metrics::MetricsError;
use fiso_runtime::metrics::{LatencyHistogram, PerCoreCounter};
use fiso_runtime::MetricsRegistry;
use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    target: Arc<str>,
    method: &'static str,
    status: u16,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    target: Arc<str>,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    target: Arc<str>,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    target: Arc<str>,
    attempt: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    target: Arc<str>,
    status: &'static str,
}

/// The method as a label value: the standard methods by name, any other (an extension method
/// the app chose) as `_OTHER`, as OpenTelemetry's HTTP conventions do, so a caller cannot mint
/// series.
const OTHER_METHOD: &str = "_OTHER";

const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// The label values of [`METHODS`], then [`OTHER_METHOD`].
const METHOD_LABELS: [&str; 10] = [
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "HEAD",
    "OPTIONS",
    "CONNECT",
    "TRACE",
    OTHER_METHOD,
];

/// The index of `method`'s label in [`METHOD_LABELS`].
fn method_index(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len())
}

fn method_label(method: &Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// Circuit breaker states as `fiso_link_circuit_state` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl CircuitState {
    /// The state's name as a span attribute (`fiso.link.circuit_state`) gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }
}

/// The link's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct LinkMetrics {
    requests: Family<RequestLabels, PerCoreCounter>,
    duration: Family<DurationLabels, LatencyHistogram, fn() -> LatencyHistogram>,
    circuit: Family<TargetLabel, Gauge>,
    retries: Family<RetryLabels, Counter>,
    rate_limited: Family<TargetLabel, Counter>,
    auth_refresh: Family<StatusLabels, Counter>,
    interceptor_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    interceptor_rejections: Family<PhaseLabels, Counter>,
    interceptor_fail_open: Family<PhaseLabels, Counter>,
    interceptor_errors: Family<PhaseLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn latency_histogram() -> LatencyHistogram {
    LatencyHistogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl LinkMetrics {
    /// Metrics that are not exported anywhere (tests of single layers).
    pub fn unregistered() -> Self {
        LinkMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            circuit: Family::default(),
            retries: Family::default(),
            rate_limited: Family::default(),
            auth_refresh: Family::default(),
            interceptor_duration: Family::new_with_constructor(duration_histogram),
            interceptor_rejections: Family::default(),
            interceptor_fail_open: Family::default(),
            interceptor_errors: Family::default(),
        }
    }

    pub fn register(registry: &MetricsRegistry) -> Result<Self, MetricsError> {
        let m = Self::unregistered();
        registry.register(
            "fiso_link_requests_total",
            "Requests proxied or published, by final status",
            m.requests.clone(),
        )?;
        registry.register(
            "fiso_link_request_duration_seconds",
            "Time until the response headers (all attempts included)",
            m.duration.clone(),
        )?;
        registry.register(
            "fiso_link_circuit_state",
            "Circuit breaker state (0=closed, 1=half-open, 2=open)",
            m.circuit.clone(),
        )?;
        registry.register(
            "fiso_link_retries_total",
            "Retries per target, by attempt number (2 = first retry)",
            m.retries.clone(),
        )?;
        registry.register(
            "fiso_link_rate_limited_total",
            "Requests refused by the rate limit",
            m.rate_limited.clone(),
        )?;
        registry.register(
            "fiso_link_auth_refresh_total",
            "Background refreshes of target credentials",
            m.auth_refresh.clone(),
        )?;
        registry.register(
            "fiso_link_interceptor_duration_seconds",
            "Time a WASM interceptor module ran on one request or answer, by phase",
            m.interceptor_duration.clone(),
        )?;
        registry.register(
            "fiso_link_interceptor_rejections_total",
            "Requests or answers an interceptor rejected (the app got the module's status)",
            m.interceptor_rejections.clone(),
        )?;
        registry.register(
            "fiso_link_interceptor_fail_open_total",
            "Interceptor failures passed over because of `failOpen: true` (the message went on unchanged)",
            m.interceptor_fail_open.clone(),
        )?;
        registry.register(
            "fiso_link_interceptor_errors_total",
            "Interceptor failures answered with 502 INTERCEPTOR_FAILED",
            m.interceptor_errors.clone(),
        )?;
        Ok(m)
    }

    pub fn request(
        &self,
        target: &Arc<str>,
        method: &Method,
        status: u16,
        mode: &'static str,
        seconds: f64,
        span: &tracing::Span,
    ) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                target: Arc::clone(target),
                method,
                status,
                mode,
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                target: Arc::clone(target),
                method,
            })
            .observe_in(seconds, span);
    }

    /// `target`'s request series, for [`RequestSeries::record`].
    pub fn for_target(&self, target: &Arc<str>, mode: &'static str) -> RequestSeries {
        RequestSeries {
            metrics: self.clone(),
            target: Arc::clone(target),
            mode,
            methods: Default::default(),
        }
    }

    pub fn circuit(&self, target: &Arc<str>, state: CircuitState) {
        self.circuit
            .get_or_create(&TargetLabel {
                target: Arc::clone(target),
            })
            .set(state as i64);
    }

    pub fn retry(&self, target: &Arc<str>, attempt: u32) {
        self.retries
            .get_or_create(&RetryLabels {
                target: Arc::clone(target),
                attempt,
            })
            .inc();
    }

    pub fn rate_limited(&self, target: &Arc<str>) {
        self.rate_limited
            .get_or_create(&TargetLabel {
                target: Arc::clone(target),
            })
            .inc();
    }

    /// A rate-limited target's counter exists (at 0) from the target's start, so that
    /// `increase()` sees its first refusal.
    pub fn rate_limit_started(&self, target: &Arc<str>) {
        let _ = self.rate_limited.get_or_create(&TargetLabel {
            target: Arc::clone(target),
        });
    }

    /// A target with credentials has both refresh outcomes (at 0) from its start, so that
    /// alerts on failures see the first one.
    pub fn auth_started(&self, target: &Arc<str>) {
        for status in ["success", "failure"] {
            let _ = self.auth_refresh.get_or_create(&StatusLabels {
                target: Arc::clone(target),
                status,
            });
        }
    }

    /// `status` is `success` or `failure` (what [`crate::auth`] reports).
    pub fn auth_refresh(&self, target: &Arc<str>, status: &'static str) {
        self.auth_refresh
            .get_or_create(&StatusLabels {
                target: Arc::clone(target),
                status,
            })
            .inc();
    }

    fn phase(target: &Arc<str>, phase: &'static str) -> PhaseLabels {
        PhaseLabels {
            target: Arc::clone(target),
            phase,
        }
    }

    /// One run of an interceptor module (whatever its outcome).
    pub fn interceptor_call(&self, target: &Arc<str>, phase: &'static str, seconds: f64) {
        self.interceptor_duration
            .get_or_create(&Self::phase(target, phase))
            .observe(seconds);
    }

    pub fn interceptor_rejected(&self, target: &Arc<str>, phase: &'static str) {
        self.interceptor_rejections
            .get_or_create(&Self::phase(target, phase))
            .inc();
    }

    pub fn interceptor_failed_open(&self, target: &Arc<str>, phase: &'static str) {
        self.interceptor_fail_open
            .get_or_create(&Self::phase(target, phase))
            .inc();
    }

    pub fn interceptor_error(&self, target: &Arc<str>, phase: &'static str) {
        self.interceptor_errors
            .get_or_create(&Self::phase(target, phase))
            .inc();
    }

    /// `(rejections, fail-open, errors)` of `target`'s `phase` interceptors (for tests).
    pub fn interceptor_counts(&self, target: &str, phase: &'static str) -> (u64, u64, u64) {
        let labels = Self::phase(&target.into(), phase);
        (
            self.interceptor_rejections.get_or_create(&labels).get(),
            self.interceptor_fail_open.get_or_create(&labels).get(),
            self.interceptor_errors.get_or_create(&labels).get(),
        )
    }

    /// Current value of `fiso_link_circuit_state{target}` (for tests).
    pub fn circuit_state(&self, target: &str) -> i64 {
        self.circuit
            .get_or_create(&TargetLabel {
                target: target.into(),
            })
            .get()
    }

    /// Current value of `fiso_link_rate_limited_total{target}` (for tests).
    pub fn rate_limited_count(&self, target: &str) -> u64 {
        self.rate_limited
            .get_or_create(&TargetLabel {
                target: target.into(),
            })
            .get()
    }
}

/// The statuses a [`RequestSeries`] keeps a counter for: 100 to 599, in classes of 100 made on
/// first use (a target answers a few of them; 500 slots per method and core would be 8 KiB).
const STATUSES: std::ops::Range<u16> = 100..600;
const CLASS: u16 = 100;
const CLASSES: usize = ((STATUSES.end - STATUSES.start) / CLASS) as usize;

/// One target's `fiso_link_requests_total` and `fiso_link_request_duration_seconds` series,
/// looked up once per method and status rather than on every request (where building the
/// labels and reading the families' locks cost more than counting).
#[derive(Debug)]
pub struct RequestSeries {
    metrics: LinkMetrics,
    target: Arc<str>,
    mode: &'static str,
    methods: [OnceLock<MethodSeries>; METHOD_LABELS.len()],
}

#[derive(Debug)]
struct MethodSeries {
    duration: LatencyHistogram,
    /// A counter per status of [`STATUSES`], taken from the family on first use.
    statuses: [OnceLock<Box<[OnceLock<PerCoreCounter>]>>; CLASSES],
}

impl MethodSeries {
    /// The slot of `status`'s counter, if it is one of [`STATUSES`].
    fn counter(&self, status: u16) -> Option<&OnceLock<PerCoreCounter>> {
        let offset = status.checked_sub(STATUSES.start)?;
        let class = self.statuses.get(usize::from(offset / CLASS))?;
        let slots = class.get_or_init(|| (0..CLASS).map(|_| OnceLock::new()).collect());
        slots.get(usize::from(offset % CLASS))
    }
}

impl RequestSeries {
    /// The same series, resolved apart from these (for another copy of the target, `target`
    /// being the copy's name).
    pub fn copy_for(&self, target: &Arc<str>) -> RequestSeries {
        self.metrics.for_target(target, self.mode)
    }

    /// Counts one answered request, as [`LinkMetrics::request`] does.
    pub fn record(&self, method: &Method, status: u16, seconds: f64, span: &tracing::Span) {
        let m = method_index(method);
        let method = METHOD_LABELS[m];
        let series = self.methods[m].get_or_init(|| MethodSeries {
            duration: self
                .metrics
                .duration
                .get_or_create(&DurationLabels {
                    target: Arc::clone(&self.target),
                    method,
                })
                .clone(),
            statuses: Default::default(),
        });
        let labels = || RequestLabels {
            target: Arc::clone(&self.target),
            method,
            status,
            mode: self.mode,
        };
        match series.counter(status) {
            Some(counter) => counter
                .get_or_init(|| self.metrics.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.metrics.requests.get_or_create(&labels()).inc(),
        }
        series.duration.observe_in(seconds, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_has(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn configured_concerns_are_exposed_at_zero_from_the_start() {
        let registry = MetricsRegistry::new();
        let metrics = LinkMetrics::register(&registry).unwrap();
        let crm: Arc<str> = "crm".into();
        metrics.rate_limit_started(&crm);
        metrics.auth_started(&crm);
        let text = registry.encode();
        assert_has(
            &text,
            &[
                "fiso_link_rate_limited_total{target=\"crm\"} 0\n",
                "fiso_link_auth_refresh_total{target=\"crm\",status=\"success\"} 0\n",
                "fiso_link_auth_refresh_total{target=\"crm\",status=\"failure\"} 0\n",
            ],
        );

        metrics.auth_refresh(&crm, "failure");
        metrics.rate_limited(&crm);
        metrics.request(
            &crm,
            &Method::GET,
            503,
            "http",
            0.01,
            &tracing::Span::none(),
        );
        let text = registry.encode();
        assert_has(
            &text,
            &[
                "fiso_link_auth_refresh_total{target=\"crm\",status=\"failure\"} 1\n",
                "fiso_link_rate_limited_total{target=\"crm\"} 1\n",
                "fiso_link_requests_total{target=\"crm\",method=\"GET\",status=\"503\",mode=\"http\"} 1\n",
                "fiso_link_request_duration_seconds_count{target=\"crm\",method=\"GET\"} 1\n",
            ],
        );
    }

    #[test]
    fn a_target_s_series_count_what_a_lookup_per_request_counts() {
        let answers = [
            (Method::GET, 200),
            (Method::GET, 200),
            (Method::POST, 503),
            (Method::from_bytes(b"PROPFIND").unwrap(), 207),
            (Method::DELETE, 100),
            (Method::DELETE, 599),
            (Method::PUT, 600),
            (Method::PUT, 999),
        ];
        let (by_lookup, by_series) = (MetricsRegistry::new(), MetricsRegistry::new());
        let lookup = LinkMetrics::register(&by_lookup).unwrap();
        let series = LinkMetrics::register(&by_series)
            .unwrap()
            .for_target(&"crm".into(), "kafka");
        for (method, status) in &answers {
            lookup.request(
                &"crm".into(),
                method,
                *status,
                "kafka",
                0.01,
                &tracing::Span::none(),
            );
            series.record(method, *status, 0.01, &tracing::Span::none());
        }
        let text = by_series.encode();
        // Series of a family come in no set order.
        let sorted = |text: &str| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&text), sorted(&by_lookup.encode()));
        assert_has(
            &text,
            &[
                "fiso_link_requests_total{target=\"crm\",method=\"GET\",status=\"200\",mode=\"kafka\"} 2\n",
                "fiso_link_requests_total{target=\"crm\",method=\"_OTHER\",status=\"207\",mode=\"kafka\"} 1\n",
                "fiso_link_requests_total{target=\"crm\",method=\"PUT\",status=\"999\",mode=\"kafka\"} 1\n",
                "fiso_link_request_duration_seconds_count{target=\"crm\",method=\"DELETE\"} 2\n",
            ],
        );
    }

    #[test]
    fn extension_methods_share_one_label_value() {
        let registry = MetricsRegistry::new();
        let metrics = LinkMetrics::register(&registry).unwrap();
        let crm: Arc<str> = "crm".into();
        for method in ["PROPFIND", "MADE-UP-1", "MADE-UP-2"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            metrics.request(&crm, &method, 200, "http", 0.01, &tracing::Span::none());
        }
        metrics.request(
            &crm,
            &Method::DELETE,
            200,
            "http",
            0.01,
            &tracing::Span::none(),
        );
        let text = registry.encode();
        let series = |m: &str| {
            format!("fiso_link_requests_total{{target=\"crm\",method=\"{m}\",status=\"200\",mode=\"http\"}}")
        };
        assert!(
            text.contains(&format!("{} 3\n", series("_OTHER"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1\n", series("DELETE"))),
            "{text}"
        );
        assert!(
            !text.contains("PROPFIND") && !text.contains("MADE-UP"),
            "{text}"
        );
    }
}
