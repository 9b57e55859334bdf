//! Every flow metric, registered once per process (flows are labels, not families).
//!
//! Names and labels follow the upstream table: `fiso_flow_events_total{flow,status}`,
//! `fiso_flow_event_duration_seconds{flow,phase}`, `fiso_flow_transform_errors_total{flow,error_type}`,
//! `fiso_flow_sink_delivery_errors_total{flow}`; plus `fiso_flow_up{flow}` and
//! `fiso_flow_restarts_total{flow}` for supervision; `fiso_flow_dlq_total{flow}`;
//! `fiso_flow_consumer_lag{flow,partition}` for Kafka sources.

use std::time::Duration;

use fiso_runtime::metrics::MetricsError;
use fiso_runtime::metrics::{LatencyHistogram, PerCoreCounter};
use fiso_runtime::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    flow: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    flow: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    flow: String,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorTypeLabels {
    flow: String,
    error_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    flow: String,
    partition: String,
}

type HistogramFamily<L> = Family<L, LatencyHistogram, fn() -> LatencyHistogram>;

fn duration_histogram() -> LatencyHistogram {
    // 0.25 ms .. ~16 s
    LatencyHistogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// Outcome of one event, the `status` label of `fiso_flow_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// Delivered to the sink.
    Success,
    /// Refused before delivery: bad input, transform or envelope failure.
    Invalid,
    /// The sink did not accept it.
    Failed,
}

impl EventStatus {
    fn label(self) -> &'static str {
        match self {
            EventStatus::Success => "success",
            EventStatus::Invalid => "invalid",
            EventStatus::Failed => "failed",
        }
    }
}

/// Processing phases timed by `fiso_flow_event_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Transform,
    Sink,
    Total,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Transform => "transform",
            Phase::Sink => "sink",
            Phase::Total => "total",
        }
    }
}

/// Handles to the flow metric families; cheap to clone.
/// One flow's events and per-phase durations, without a label lookup or an allocation per
/// event.
#[derive(Debug, Clone)]
pub struct EventMetrics {
    statuses: [PerCoreCounter; 3],
    phases: [LatencyHistogram; 3],
}

impl EventMetrics {
    pub fn event(&self, status: EventStatus) {
        self.statuses[status as usize].inc();
    }

    pub fn observe(&self, phase: Phase, took: Duration) {
        self.phases[phase as usize].observe(took.as_secs_f64());
    }
}

#[derive(Debug, Clone)]
pub struct FlowMetrics {
    events: Family<StatusLabels, PerCoreCounter>,
    duration: HistogramFamily<PhaseLabels>,
    transform_errors: Family<ErrorTypeLabels, Counter>,
    sink_errors: Family<FlowLabel, Counter>,
    up: Family<FlowLabel, Gauge>,
    restarts: Family<FlowLabel, Counter>,
    dlq: Family<FlowLabel, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    interceptor_rejections: Family<FlowLabel, Counter>,
    interceptor_fail_open: Family<FlowLabel, Counter>,
}

impl FlowMetrics {
    pub fn register(registry: &MetricsRegistry) -> Result<Self, MetricsError> {
        let m = FlowMetrics {
            events: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            transform_errors: Family::default(),
            sink_errors: Family::default(),
            up: Family::default(),
            restarts: Family::default(),
            dlq: Family::default(),
            consumer_lag: Family::default(),
            interceptor_rejections: Family::default(),
            interceptor_fail_open: Family::default(),
        };
        registry.register(
            "fiso_flow_events_total",
            "Events processed, by outcome",
            m.events.clone(),
        )?;
        registry.register(
            "fiso_flow_event_duration_seconds",
            "Time spent per event, by phase (transform, sink, total)",
            m.duration.clone(),
        )?;
        registry.register(
            "fiso_flow_transform_errors_total",
            "Events refused by the transform or the CloudEvents envelope, by error code",
            m.transform_errors.clone(),
        )?;
        registry.register(
            "fiso_flow_sink_delivery_errors_total",
            "Events the sink did not accept after retries",
            m.sink_errors.clone(),
        )?;
        registry.register(
            "fiso_flow_up",
            "1 while the flow runs, 0 while it is failed or restarting",
            m.up.clone(),
        )?;
        registry.register(
            "fiso_flow_restarts_total",
            "Restarts of a failed flow by its supervisor",
            m.restarts.clone(),
        )?;
        registry.register(
            "fiso_flow_dlq_total",
            "Events written to the dead-letter queue",
            m.dlq.clone(),
        )?;
        registry.register(
            "fiso_flow_interceptor_rejections_total",
            "Events an interceptor rejected (answered with its status; never retried or dead-lettered)",
            m.interceptor_rejections.clone(),
        )?;
        registry.register(
            "fiso_flow_interceptor_fail_open_total",
            "Interceptor failures passed over because of `failOpen: true` (the event went on unchanged)",
            m.interceptor_fail_open.clone(),
        )?;
        registry.register(
            "fiso_flow_consumer_lag",
            "Kafka source: records of a partition not processed yet (high watermark - committed offset, or - the first offset read while the group has committed none)",
            m.consumer_lag.clone(),
        )?;
        Ok(m)
    }

    pub fn consumer_lag(&self, flow: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&PartitionLabels {
                flow: flow.to_owned(),
                partition: partition.to_string(),
            })
            .set(lag.max(0));
    }

    /// A partition revoked from `flow`'s consumer no longer reports a lag.
    pub fn forget_lag(&self, flow: &str, partition: i32) {
        self.consumer_lag.remove(&PartitionLabels {
            flow: flow.to_owned(),
            partition: partition.to_string(),
        });
    }

    pub fn interceptor_rejected(&self, flow: &str) {
        self.interceptor_rejections
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .inc();
    }

    pub fn interceptor_failed_open(&self, flow: &str, times: u32) {
        if times > 0 {
            self.interceptor_fail_open
                .get_or_create(&FlowLabel {
                    flow: flow.to_owned(),
                })
                .inc_by(u64::from(times));
        }
    }

    pub fn dead_lettered(&self, flow: &str) {
        self.dlq
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .inc();
    }

    pub fn event(&self, flow: &str, status: EventStatus) {
        self.events
            .get_or_create(&StatusLabels {
                flow: flow.to_owned(),
                status: status.label(),
            })
            .inc();
    }

    pub fn observe(&self, flow: &str, phase: Phase, took: Duration) {
        self.duration
            .get_or_create(&PhaseLabels {
                flow: flow.to_owned(),
                phase: phase.label(),
            })
            .observe(took.as_secs_f64());
    }

    /// The per-event series of `flow`, resolved once (the families are never pruned, so the
    /// handles stay the ones `/metrics` shows). The flow's other counters are created too, at 0,
    /// so that `increase()` alerts and dashboards see a flow before its first DLQ write, restart
    /// or rejection.
    pub fn for_events(&self, flow: &str) -> EventMetrics {
        let label = FlowLabel {
            flow: flow.to_owned(),
        };
        for family in [
            &self.dlq,
            &self.restarts,
            &self.sink_errors,
            &self.interceptor_rejections,
            &self.interceptor_fail_open,
        ] {
            let _ = family.get_or_create(&label);
        }
        let counter = |status: EventStatus| {
            self.events
                .get_or_create(&StatusLabels {
                    flow: flow.to_owned(),
                    status: status.label(),
                })
                .clone()
        };
        let histogram = |phase: Phase| {
            self.duration
                .get_or_create(&PhaseLabels {
                    flow: flow.to_owned(),
                    phase: phase.label(),
                })
                .clone()
        };
        EventMetrics {
            statuses: [
                EventStatus::Success,
                EventStatus::Invalid,
                EventStatus::Failed,
            ]
            .map(counter),
            phases: [Phase::Transform, Phase::Sink, Phase::Total].map(histogram),
        }
    }

    pub fn transform_error(&self, flow: &str, code: &'static str) {
        self.transform_errors
            .get_or_create(&ErrorTypeLabels {
                flow: flow.to_owned(),
                error_type: code,
            })
            .inc();
    }

    pub fn sink_error(&self, flow: &str) {
        self.sink_errors
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .inc();
    }

    pub fn set_up(&self, flow: &str, up: bool) {
        self.up
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .set(i64::from(up));
    }

    pub fn restarted(&self, flow: &str) {
        self.restarts
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .inc();
    }

    /// A removed flow no longer reports as down.
    pub fn forget(&self, flow: &str) {
        self.up.remove(&FlowLabel {
            flow: flow.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flows_counters_exist_at_zero_from_its_start() {
        let registry = MetricsRegistry::new();
        let metrics = FlowMetrics::register(&registry).unwrap();
        let events = metrics.for_events("orders");
        events.event(EventStatus::Success);
        let text = registry.encode();
        for line in [
            "fiso_flow_events_total{flow=\"orders\",status=\"success\"} 1\n",
            "fiso_flow_events_total{flow=\"orders\",status=\"failed\"} 0\n",
            "fiso_flow_event_duration_seconds_count{flow=\"orders\",phase=\"sink\"} 0\n",
            "fiso_flow_dlq_total{flow=\"orders\"} 0\n",
            "fiso_flow_restarts_total{flow=\"orders\"} 0\n",
            "fiso_flow_sink_delivery_errors_total{flow=\"orders\"} 0\n",
            "fiso_flow_interceptor_rejections_total{flow=\"orders\"} 0\n",
            "fiso_flow_interceptor_fail_open_total{flow=\"orders\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }

        metrics.dead_lettered("orders");
        metrics.consumer_lag("orders", 3, 7);
        let text = registry.encode();
        assert!(
            text.contains("fiso_flow_dlq_total{flow=\"orders\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fiso_flow_consumer_lag{flow=\"orders\",partition=\"3\"} 7\n"),
            "{text}"
        );
    }
}
