//! One running version of a flow: an event in, an [`Outcome`] out. [`Pipeline::handle`] runs
//! transform → CloudEvent → interceptors → sink, dead-letters what the sink would not take and
//! records metrics for every outcome. A reload builds a new pipeline and swaps it in; requests
//! in flight finish on the old one.
//!
//! The pipeline is generic over its sink ([`Sink`], by default the [`AnySink`] a config builds)
//! and its dead-letter queue ([`DeadLetterQueue`], by default the Kafka DLQ), so its decisions
//! are unit-tested without a broker (`pipeline/tests.rs`).

pub mod dead_letter;
pub mod delivery;
mod intercept;
mod offload;
#[cfg(test)]
mod tests;
mod trace;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fiso_config::flow::{CommitPolicy, FlowConfig};
use fiso_runtime::{outline, Readiness};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::interceptor::{InterceptorBuildError, InterceptorChain};
use crate::kafka::client::{KafkaBuildError, KafkaDelivery, KafkaDeliveryError};
use crate::kafka::dlq::DlqWriter;
use crate::kafka::txn::TransactionalProducer;
use crate::metrics::{EventMetrics, EventStatus, FlowMetrics, Phase};
use crate::retry::RetryPolicy;
use crate::sinks::{AnySink, Sink, SinkBuildError};
use crate::{CompiledFlow, FlowError, InputEvent, ProcessedEvent};

/// A task source's current pipeline: a Kafka source takes it per record, so a reload that
/// leaves the consumer's settings alone swaps it under the running consumer.
pub type LivePipeline = Arc<arc_swap::ArcSwap<Pipeline>>;
use dead_letter::{letter, DeadLetterQueue, Failure};
use delivery::{DeliveryContext, DeliveryError, Outcome};
use intercept::{intercept, Intercepted};
use offload::off_the_workers;

/// Why a flow could not be built from its (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Compile(Vec<FlowError>),
    #[error("sink: {0}")]
    Sink(#[from] SinkBuildError),
    #[error("dead-letter queue: {0}")]
    DeadLetter(KafkaBuildError),
    #[error("kafka transactions: {0}")]
    Transactions(&'static str),
    #[error(transparent)]
    Interceptors(#[from] InterceptorBuildError),
}

/// What a pipeline is built with besides its config.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    /// Hash of the config file it was built from (identifies the version on `/config`).
    pub version: &'a str,
    pub metrics: FlowMetrics,
    /// The directory of the flow file: relative interceptor module paths resolve there.
    pub dir: Option<&'a Path>,
    /// The cluster the source consumes, when the source is Kafka: dead letters go there unless
    /// the config names another, and `kafka_transaction` commits the source's offsets.
    pub kafka_source: Option<&'a str>,
    /// The apps of this process, for `wasmer-app` interceptors.
    pub apps: &'a fiso_runtime::apps::AppDirectory,
}

/// The producer's `transactional.id`: `errorHandling.transactionalId` suffixed with the
/// instance (`POD_NAME`, else `HOSTNAME`), so replicas of one flow do not fence each other while
/// a restarted instance fences its own predecessor.
fn instance_transactional_id(prefix: &str) -> String {
    let instance = ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    match instance {
        Some(instance) => format!("{prefix}-{instance}"),
        None => prefix.to_owned(),
    }
}

const NEEDS_KAFKA_ENDS: &str =
    "`commitPolicy: kafka_transaction` needs a Kafka source and a Kafka sink";

/// A flow ready to process events; shared by every request routed to it.
#[derive(Debug)]
pub struct Pipeline<S = AnySink, D = DlqWriter> {
    pub name: String,
    /// Hash of the config file it was built from (identifies the version on `/config`).
    pub version: String,
    pub config: FlowConfig,
    compiled: CompiledFlow,
    sink: S,
    /// WASM interceptors run on the CloudEvent before delivery.
    interceptors: InterceptorChain,
    /// Where events the sink refused go, when the flow has a dead-letter queue.
    dlq: Option<D>,
    metrics: FlowMetrics,
    /// This flow's per-event series, resolved when the pipeline is built.
    events: EventMetrics,
    /// Set when a reload removes this flow: a flow of another name may take over its routes.
    retiring: AtomicBool,
    /// Whether evaluating an event's CEL may take long (loops, see
    /// [`CompiledFlow::is_heavy`]): such flows evaluate off the async workers.
    heavy: bool,
}

impl Pipeline {
    /// Builds the flow of `config`: its interceptors, transform and envelope, sink and
    /// dead-letter queue.
    pub fn build(config: &FlowConfig, parts: Parts<'_>) -> Result<Arc<Self>, BuildError> {
        let commit_policy = config
            .error_handling
            .as_ref()
            .and_then(|e| e.commit_policy)
            .unwrap_or_default();
        let transactional_id = match commit_policy {
            CommitPolicy::KafkaTransaction if parts.kafka_source.is_none() => {
                return Err(BuildError::Transactions(NEEDS_KAFKA_ENDS))
            }
            CommitPolicy::KafkaTransaction => {
                let id = config
                    .error_handling
                    .as_ref()
                    .and_then(|e| e.transactional_id.as_deref())
                    .filter(|id| !id.is_empty())
                    .ok_or(BuildError::Transactions(
                        "no `errorHandling.transactionalId`",
                    ))?;
                Some(instance_transactional_id(id))
            }
            _ => None,
        };
        let interceptors = InterceptorChain::build(&config.interceptors, parts.dir, parts.apps)?;
        let compiled = CompiledFlow::compile(config).map_err(BuildError::Compile)?;
        let sink = crate::sinks::build(
            &config.sink,
            RetryPolicy::from_config(config.error_handling.as_ref()),
            config.kafka.as_ref(),
            transactional_id.as_deref(),
            compiled.budget(),
        )?;
        if transactional_id.is_some() && sink.transactions().is_none() {
            return Err(BuildError::Transactions(NEEDS_KAFKA_ENDS));
        }
        let dlq = match parts.kafka_source {
            // A Kafka source dead-letters to `fiso-dlq-<flow>` unless told otherwise; with
            // `commitPolicy: sink` a failed event stops its partition instead.
            Some(cluster) if commit_policy != CommitPolicy::Sink => Some(
                DlqWriter::for_kafka_source(config, compiled.name(), cluster)
                    .map_err(BuildError::DeadLetter)?,
            ),
            Some(_) => None,
            None => DlqWriter::for_http_source(config, compiled.name())
                .map_err(BuildError::DeadLetter)?,
        };
        Ok(Arc::new(Pipeline::assemble(
            config,
            parts,
            compiled,
            sink,
            interceptors,
            dlq,
        )))
    }
}

impl<S: Sink, D: DeadLetterQueue> Pipeline<S, D> {
    /// A pipeline of built stages.
    pub fn assemble(
        config: &FlowConfig,
        parts: Parts<'_>,
        compiled: CompiledFlow,
        sink: S,
        interceptors: InterceptorChain,
        dlq: Option<D>,
    ) -> Self {
        let compiled_name = compiled.name();
        let events = parts.metrics.for_events(compiled_name);
        Pipeline {
            heavy: compiled.is_heavy() || sink.is_heavy(),
            name: compiled.name().to_owned(),
            version: parts.version.to_owned(),
            config: config.clone(),
            compiled,
            sink,
            interceptors,
            dlq,
            events,
            metrics: parts.metrics,
            retiring: AtomicBool::new(false),
        }
    }

    /// Marks the pipeline as going away, so that its paths can be handed to another flow.
    pub fn retire(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    pub fn compiled(&self) -> &CompiledFlow {
        &self.compiled
    }

    /// transform → CloudEvent → interceptors → sink, recording metrics for every outcome, in
    /// the event's `flow <name>` span when traces are exported.
    ///
    /// The event's whole future is boxed here, once: a source holds a pointer, so its own
    /// future (per event, or per connection) stays small, and the pipeline's is moved only into
    /// its box.
    pub fn handle<'a>(
        &'a self,
        input: Result<InputEvent, FlowError>,
        ctx: &'a DeliveryContext,
    ) -> outline::Boxed<'a, Outcome> {
        if !fiso_runtime::otel::enabled() {
            return outline::pinned(|| self.handle_in(input, ctx, tracing::Span::none()));
        }
        outline::pinned(|| self.handle_traced(input, ctx))
    }

    async fn handle_traced(
        &self,
        input: Result<InputEvent, FlowError>,
        ctx: &DeliveryContext,
    ) -> Outcome {
        let caller = trace::caller(ctx, input.as_ref().ok());
        let span = trace::flow_span(&self.name, &self.config.source, ctx, &caller);
        let outcome = self
            .handle_in(input, ctx, span.clone())
            .instrument(span.clone())
            .await;
        if let Some(code) = outcome.error_code() {
            trace::failed(&span, code);
        }
        outcome
    }

    async fn handle_in(
        &self,
        input: Result<InputEvent, FlowError>,
        ctx: &DeliveryContext,
        span: tracing::Span,
    ) -> Outcome {
        let started = Instant::now();
        let processed = self.evaluate(input, ctx, &span);
        // Only when interceptors ask for headers does the delivery need its own context.
        let mut with_headers = None;
        let processed = match processed {
            Ok((p, prepared)) if self.interceptors.is_empty() => Ok((p.into_event(), prepared)),
            Ok((p, prepared)) => {
                // Apart: the chain's future is KiBs, and this pipeline's future (and its poll's
                // stack frame) would otherwise be that large for every flow.
                let event = p.into_event();
                match outline::boxed(|| {
                    intercept(&self.interceptors, &self.metrics, &self.name, event, ctx)
                })
                .await
                {
                    Intercepted::Continue {
                        event,
                        sink_headers,
                    } => {
                        if !sink_headers.is_empty() {
                            with_headers = Some(DeliveryContext {
                                sink_headers,
                                ..ctx.clone()
                            });
                        }
                        Ok((*event, prepared))
                    }
                    Intercepted::Rejected {
                        status,
                        reason,
                        module,
                    } => {
                        self.metrics.interceptor_rejected(&self.name);
                        self.events.event(EventStatus::Invalid);
                        tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, status, module = %module, reason = %reason, "event rejected by an interceptor");
                        return Outcome::Rejected {
                            status,
                            reason,
                            module,
                        };
                    }
                    Intercepted::Failed(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let ctx = with_headers.as_ref().unwrap_or(ctx);
        let processed = processed.and_then(|(event, mut prepared)| {
            self.sink.seal(&event, &mut prepared)?;
            Ok((event, prepared))
        });
        // One clock reading per phase boundary: the transform's end is the sink's start.
        let sink_started = Instant::now();
        let transformed = sink_started - started;
        self.events.observe(Phase::Transform, transformed);
        let (event, prepared) = match processed {
            Ok(ready) => ready,
            Err(e) => {
                self.metrics.transform_error(&self.name, e.code());
                self.events.event(EventStatus::Invalid);
                self.events.observe(Phase::Total, transformed);
                tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, code = e.code(), error = %e, "event refused");
                return Outcome::Invalid(e);
            }
        };
        // Not boxed here: `AnySink` boxes its sink's future (a test sink's is small).
        let result = self.sink.deliver(&event, prepared, ctx).await;
        let sink_time = sink_started.elapsed();
        self.events.observe(Phase::Sink, sink_time);
        self.events.observe(Phase::Total, transformed + sink_time);
        match result {
            Ok(receipt) => {
                self.events.event(EventStatus::Success);
                Outcome::Delivered(receipt)
            }
            Err(e) => {
                self.metrics.sink_error(&self.name);
                self.events.event(EventStatus::Failed);
                tracing::warn!(flow = %self.name, correlation_id = %ctx.correlation_id, attempts = e.attempts(), error = %e, "SINK_DELIVERY_FAILED");
                match &self.dlq {
                    // Apart: off the hot path, and as large as a Kafka produce.
                    Some(dlq) => outline::boxed(|| self.dead_letter(dlq, e, ctx)).await,
                    None => Outcome::Failed(e),
                }
            }
        }
    }

    /// The transform and the envelope, with the sink's preparation: synchronous, and apart from
    /// [`Self::handle_in`] so that its future keeps none of it across the delivery.
    fn evaluate(
        &self,
        input: Result<InputEvent, FlowError>,
        ctx: &DeliveryContext,
        span: &tracing::Span,
    ) -> Result<(ProcessedEvent, S::Prepared), FlowError> {
        let budget = self.compiled.budget();
        let forwarded = trace::forwarded(span, ctx);
        let transform = trace::step("transform");
        let evaluate = || {
            let _in = transform.enter();
            input
                .and_then(|mut event| {
                    if let Some(tp) = forwarded.traceparent {
                        event.set_extension("traceparent", tp)?;
                        if let Some(ts) = forwarded.tracestate {
                            event.set_extension("tracestate", ts)?;
                        }
                    }
                    let prepared = self.sink.prepare(&event, budget)?;
                    let processed = self.compiled.process(event)?;
                    span.record("messaging.message.id", processed.event().id());
                    Ok((processed, prepared))
                })
                .inspect_err(|e| trace::failed(&transform, e.code()))
        };
        if self.heavy {
            off_the_workers(evaluate)
        } else {
            evaluate()
        }
    }

    /// Writes a failed event to the DLQ; the original failure stands if that fails too.
    async fn dead_letter(&self, dlq: &D, error: DeliveryError, ctx: &DeliveryContext) -> Outcome {
        let letter = letter(
            &self.name,
            ctx,
            Failure {
                code: "SINK_DELIVERY_FAILED",
                message: error.to_string(),
                attempts: error.attempts(),
                response: error.response.as_ref(),
            },
        );
        let span = trace::step("dlq write");
        match dlq.write(&letter).instrument(span.clone()).await {
            Ok(at) => {
                self.metrics.dead_lettered(&self.name);
                tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, topic = dlq.topic(), partition = at.partition, offset = at.offset, "event dead-lettered");
                Outcome::DeadLettered {
                    error,
                    topic: dlq.topic().to_owned(),
                    at,
                }
            }
            Err(dlq_error) => {
                trace::failed(&span, "DLQ_WRITE_FAILED");
                tracing::error!(flow = %self.name, correlation_id = %ctx.correlation_id, error = %dlq_error, "DLQ write failed");
                Outcome::Failed(error)
            }
        }
    }

    /// Writes an event refused before delivery (bad input, transform, envelope) to the DLQ: a
    /// Kafka source cannot answer its caller, and a poison record must not block its partition.
    /// `Ok(None)` when the flow has no DLQ.
    pub async fn dead_letter_refused(
        &self,
        error: &FlowError,
        ctx: &DeliveryContext,
    ) -> Result<Option<KafkaDelivery>, KafkaDeliveryError> {
        let Some(dlq) = &self.dlq else {
            return Ok(None);
        };
        let letter = letter(
            &self.name,
            ctx,
            Failure {
                code: error.code(),
                message: error.to_string(),
                attempts: 0,
                response: None,
            },
        );
        let span = trace::step("dlq write");
        match dlq.write(&letter).instrument(span.clone()).await {
            Ok(at) => {
                self.metrics.dead_lettered(&self.name);
                tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, code = error.code(), topic = dlq.topic(), partition = at.partition, offset = at.offset, "event dead-lettered");
                Ok(Some(at))
            }
            Err(e) => {
                trace::failed(&span, "DLQ_WRITE_FAILED");
                tracing::error!(flow = %self.name, correlation_id = %ctx.correlation_id, error = %e, "DLQ write failed");
                Err(e)
            }
        }
    }

    /// Whether an event may evaluate long (loops in its CEL, or a heavy sink); such events are
    /// evaluated off the async workers.
    pub fn is_heavy(&self) -> bool {
        self.heavy
    }

    /// Whether events go through interceptors (which are the only readers of source headers).
    pub fn has_interceptors(&self) -> bool {
        !self.interceptors.is_empty()
    }

    /// The producer whose transactions a Kafka source commits its offsets with, under
    /// `commitPolicy: kafka_transaction`.
    pub fn transactions(&self) -> Option<&Arc<TransactionalProducer>> {
        self.sink.transactions()
    }

    /// The task that connects the sink in the background, reporting readiness component
    /// `component` until it is up; `None` when the sink needs none.
    pub fn sink_connection_watch(
        &self,
        readiness: Readiness,
        component: String,
        cancel: CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static + use<S, D>> {
        self.sink.connection_watch(readiness, component, cancel)
    }

    pub fn metrics(&self) -> &FlowMetrics {
        &self.metrics
    }
}
