//! One running version of a flow: its compiled transform + envelope, its sink and its metrics.
//! A reload builds a new instance and swaps it in; requests in flight finish on the old one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fiso_config::common::ByteSize;
use fiso_config::flow::{FlowConfig, SourceSpec, DEFAULT_MAX_BODY_SIZE};

use crate::metrics::{EventStatus, FlowMetrics, Phase};
use crate::retry::RetryPolicy;
use crate::sink::http::{DeliveryContext, DeliveryError, SinkResponse};
use crate::sink::{Sink, SinkError};
use crate::{CompiledFlow, FlowError, InputEvent};

/// Why a flow could not be built from its (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Compile(Vec<FlowError>),
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("`source.type: {0}` is not available in this build of fiso (supported: http)")]
    SourceUnavailable(&'static str),
    #[error("interceptors are not available in this build of fiso; remove `interceptors:` from the flow")]
    InterceptorsUnavailable,
}

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// The sink accepted the event; its answer.
    Delivered(SinkResponse),
    /// Refused before delivery (bad input, transform, envelope): a caller error.
    Invalid(FlowError),
    /// The sink did not accept it.
    Failed(DeliveryError),
}

/// A flow ready to process events; shared by every request routed to it.
#[derive(Debug)]
pub struct FlowInstance {
    pub name: String,
    /// Hash of the config file it was built from (identifies the version on `/config`).
    pub version: String,
    pub config: FlowConfig,
    compiled: CompiledFlow,
    sink: Sink,
    metrics: FlowMetrics,
    /// Set when a reload removes this flow: a flow of another name may take over its routes.
    retiring: AtomicBool,
}

impl FlowInstance {
    pub fn build(
        config: &FlowConfig,
        version: &str,
        metrics: FlowMetrics,
    ) -> Result<Arc<Self>, BuildError> {
        if let SourceSpec::Kafka(_) | SourceSpec::Grpc(_) = config.source {
            return Err(BuildError::SourceUnavailable(config.source.kind()));
        }
        if !config.interceptors.is_empty() {
            return Err(BuildError::InterceptorsUnavailable);
        }
        let compiled = CompiledFlow::compile(config).map_err(BuildError::Compile)?;
        let sink = Sink::build(
            &config.sink,
            RetryPolicy::from_config(config.error_handling.as_ref()),
        )?;
        Ok(Arc::new(FlowInstance {
            name: compiled.name().to_owned(),
            version: version.to_owned(),
            config: config.clone(),
            compiled,
            sink,
            metrics,
            retiring: AtomicBool::new(false),
        }))
    }

    /// Marks the instance as going away, so that its paths can be handed to another flow.
    pub fn retire(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    pub fn compiled(&self) -> &CompiledFlow {
        &self.compiled
    }

    /// Largest accepted HTTP body for an HTTP source.
    pub fn max_body_size(&self) -> usize {
        let size = match &self.config.source {
            SourceSpec::Http(c) => c.max_body_size.unwrap_or(DEFAULT_MAX_BODY_SIZE),
            _ => DEFAULT_MAX_BODY_SIZE,
        };
        usize::try_from(ByteSize::bytes(size)).unwrap_or(usize::MAX)
    }

    /// transform → CloudEvent → sink, recording metrics for every outcome.
    pub async fn handle(
        &self,
        input: Result<InputEvent, FlowError>,
        ctx: &DeliveryContext,
    ) -> Outcome {
        let started = Instant::now();
        let processed = input.and_then(|mut event| {
            if let Some(tp) = &ctx.traceparent {
                event.set_extension("traceparent", tp.clone())?;
            }
            self.compiled.process(event)
        });
        self.metrics
            .observe(&self.name, Phase::Transform, started.elapsed());
        let processed = match processed {
            Ok(p) => p,
            Err(e) => {
                self.metrics.transform_error(&self.name, e.code());
                self.metrics.event(&self.name, EventStatus::Invalid);
                self.metrics
                    .observe(&self.name, Phase::Total, started.elapsed());
                tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, code = e.code(), error = %e, "event refused");
                return Outcome::Invalid(e);
            }
        };
        let sink_started = Instant::now();
        let result = match &self.sink {
            Sink::Http(s) => s.deliver(processed.event(), ctx).await,
        };
        self.metrics
            .observe(&self.name, Phase::Sink, sink_started.elapsed());
        self.metrics
            .observe(&self.name, Phase::Total, started.elapsed());
        match result {
            Ok(resp) => {
                self.metrics.event(&self.name, EventStatus::Success);
                Outcome::Delivered(resp)
            }
            Err(e) => {
                self.metrics.sink_error(&self.name);
                self.metrics.event(&self.name, EventStatus::Failed);
                tracing::warn!(flow = %self.name, correlation_id = %ctx.correlation_id, attempts = e.attempts(), error = %e, "SINK_DELIVERY_FAILED");
                Outcome::Failed(e)
            }
        }
    }
}
