//! One running version of a flow: its compiled transform + envelope, its sink and its metrics.
//! A reload builds a new instance and swaps it in; requests in flight finish on the old one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fiso_config::common::ByteSize;
use fiso_config::flow::{CommitPolicy, FlowConfig, SinkSpec, SourceSpec, DEFAULT_MAX_BODY_SIZE};

use crate::interceptor::{ChainOutcome, InterceptorBuildError, InterceptorChain};
use crate::kafka::dlq::{DeadLetter, DlqWriter};
use crate::kafka::sink::{KafkaDelivery, KafkaDeliveryError, KafkaSink, KafkaSinkBuildError};
use crate::metrics::{EventStatus, FlowMetrics, Phase};
use crate::retry::RetryPolicy;
use crate::sink::http::{DeliveryContext, DeliveryError, SinkResponse};
use crate::sink::{Sink, SinkError};
use crate::{CompiledFlow, FlowError, InputEvent, Scope};
use cloudevents::Event;

/// Why a flow could not be built from its (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Compile(Vec<FlowError>),
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("dead-letter queue: {0}")]
    DeadLetter(KafkaSinkBuildError),
    #[error("kafka transactions: {0}")]
    Transactions(&'static str),
    #[error(transparent)]
    Interceptors(#[from] InterceptorBuildError),
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

/// A gRPC sink's acknowledgement as the answer an HTTP caller gets: `200` with its JSON.
fn grpc_ack_response(
    ack: &crate::event::protobuf::proto::fiso::v1::PublishResponse,
) -> SinkResponse {
    let outcome = crate::event::protobuf::proto::fiso::v1::Outcome::try_from(ack.outcome)
        .map(|o| o.as_str_name())
        .unwrap_or("OUTCOME_UNSPECIFIED");
    let mut body = serde_json::json!({"id": ack.id, "outcome": outcome});
    if !ack.dead_letter_topic.is_empty() {
        body["deadLetterTopic"] = serde_json::json!(ack.dead_letter_topic);
    }
    SinkResponse {
        status: axum::http::StatusCode::OK,
        content_type: Some(axum::http::HeaderValue::from_static("application/json")),
        body: body.to_string().into(),
        truncated: false,
    }
}

/// What the interceptors made of an event.
enum Intercepted {
    /// The event to deliver and the headers the interceptors want sent with it.
    Continue {
        event: Box<Event>,
        sink_headers: Vec<(String, String)>,
    },
    Rejected {
        status: u16,
        reason: String,
        module: String,
    },
    Failed(FlowError),
}

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// The sink accepted the event; its answer.
    Delivered(SinkResponse),
    /// The Kafka sink's broker acknowledged the record.
    Published { topic: String, at: KafkaDelivery },
    /// The Temporal sink started (or signalled) the workflow, or found it already started.
    Started { workflow_id: String, run_id: String },
    /// The sink did not accept it, the dead-letter queue did.
    DeadLettered {
        error: DeliveryError,
        topic: String,
        at: KafkaDelivery,
    },
    /// Refused before delivery (bad input, transform, envelope, interceptor failure).
    Invalid(FlowError),
    /// An interceptor refused the event with an HTTP-style status (400..=599) and a reason.
    Rejected {
        status: u16,
        reason: String,
        module: String,
    },
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
    /// WASM interceptors run on the CloudEvent before delivery.
    interceptors: InterceptorChain,
    /// Where events the sink refused go, when the flow has a `deadLetterTopic`.
    dlq: Option<DlqWriter>,
    metrics: FlowMetrics,
    /// Set when a reload removes this flow: a flow of another name may take over its routes.
    retiring: AtomicBool,
    /// Whether evaluating an event's CEL may take long (loops, see
    /// [`CompiledFlow::is_heavy`]): such flows evaluate off the async workers.
    heavy: bool,
}

/// Runs `f`, which may take long (up to its CEL budget), without holding up the other tasks of
/// the async worker it is called on, nor competing with them for the CPU: on the multi-threaded
/// runtime the worker hands its queue to another thread for the duration, and `f` runs on a
/// thread of its own at a lower priority (nice 10), so other flows and the health server keep
/// being served while events burn their budget on every core.
fn off_the_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| in_the_background(f))
        }
        _ => f(),
    }
}

/// `f` on a fresh thread with the CEL stack and a lowered priority; the thread ends with `f`,
/// so no thread of the runtime is ever left deprioritised (an unprivileged process could not
/// raise it back).
fn in_the_background<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut job = Some(f);
    let ran = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("fiso-cel".to_owned())
            .stack_size(fiso_config::cel_check::EVAL_STACK_SIZE)
            .spawn_scoped(scope, || {
                // On Linux the nice value is per thread: `0` is the calling thread. Failing to
                // lower it only loses the preference.
                // SAFETY: setpriority has no memory-safety preconditions.
                #[cfg(target_os = "linux")]
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                }
                job.take().map(|f| f())
            });
        match spawned {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread for a CEL evaluation; evaluating on the worker");
                None
            }
        }
    });
    // Out of threads, the job was not taken: evaluate it here rather than fail the event.
    ran.unwrap_or_else(|| {
        job.take()
            .map(|f| f())
            .expect("a job that did not run is still here")
    })
}

impl FlowInstance {
    pub fn build(
        config: &FlowConfig,
        version: &str,
        metrics: FlowMetrics,
    ) -> Result<Arc<Self>, BuildError> {
        Self::build_in(config, version, metrics, None)
    }

    /// [`Self::build`] for a flow file in `dir`: relative interceptor module paths resolve
    /// there.
    pub fn build_in(
        config: &FlowConfig,
        version: &str,
        metrics: FlowMetrics,
        dir: Option<&std::path::Path>,
    ) -> Result<Arc<Self>, BuildError> {
        let commit_policy = config
            .error_handling
            .as_ref()
            .and_then(|e| e.commit_policy)
            .unwrap_or_default();
        let transactional_id = match (commit_policy, &config.source, &config.sink) {
            (CommitPolicy::KafkaTransaction, SourceSpec::Kafka(_), SinkSpec::Kafka(_)) => {
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
            (CommitPolicy::KafkaTransaction, ..) => {
                return Err(BuildError::Transactions(
                    "`commitPolicy: kafka_transaction` needs a Kafka source and a Kafka sink",
                ))
            }
            _ => None,
        };
        let interceptors = InterceptorChain::build(&config.interceptors, dir)?;
        let compiled = CompiledFlow::compile(config).map_err(BuildError::Compile)?;
        let sink = Sink::build(
            &config.sink,
            RetryPolicy::from_config(config.error_handling.as_ref()),
            config.kafka.as_ref(),
            transactional_id.as_deref(),
            compiled.budget(),
        )?;
        let dlq = match &config.source {
            // A Kafka source dead-letters to `fiso-dlq-<flow>` unless told otherwise; with
            // `commitPolicy: sink` a failed event stops its partition instead.
            SourceSpec::Kafka(k) if commit_policy != CommitPolicy::Sink => Some(
                DlqWriter::for_kafka_source(config, compiled.name(), &k.cluster)
                    .map_err(BuildError::DeadLetter)?,
            ),
            SourceSpec::Kafka(_) => None,
            _ => DlqWriter::for_http_source(config, compiled.name())
                .map_err(BuildError::DeadLetter)?,
        };
        Ok(Arc::new(FlowInstance {
            heavy: compiled.is_heavy() || sink.is_heavy(),
            name: compiled.name().to_owned(),
            version: version.to_owned(),
            config: config.clone(),
            compiled,
            sink,
            interceptors,
            dlq,
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
        let mut key = None;
        let mut temporal_params = Vec::new();
        let budget = self.compiled.budget();
        let evaluate = || {
            input.and_then(|mut event| {
                if let Some(tp) = &ctx.traceparent {
                    event.set_extension("traceparent", tp.clone())?;
                }
                if let Sink::Kafka(s) = &self.sink {
                    key = s.key(&Scope::with_budget(&event, budget))?;
                }
                if let Sink::Temporal(s) = &self.sink {
                    temporal_params = s.params(&Scope::with_budget(&event, budget))?;
                }
                self.compiled.process(event)
            })
        };
        let processed = if self.heavy {
            off_the_workers(evaluate)
        } else {
            evaluate()
        };
        // Only when interceptors ask for headers does the delivery need its own context.
        let mut with_headers = None;
        let processed = match processed {
            Ok(p) => match self.intercept(p.into_event(), ctx).await {
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
                    Ok(*event)
                }
                Intercepted::Rejected {
                    status,
                    reason,
                    module,
                } => {
                    self.metrics.interceptor_rejected(&self.name);
                    self.metrics.event(&self.name, EventStatus::Invalid);
                    tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, status, module = %module, reason = %reason, "event rejected by an interceptor");
                    return Outcome::Rejected {
                        status,
                        reason,
                        module,
                    };
                }
                Intercepted::Failed(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let ctx = with_headers.as_ref().unwrap_or(ctx);
        // The workflow id is rendered from the CloudEvent as sent; a missing field refuses it.
        let mut workflow_id = String::new();
        let processed = processed.and_then(|event| {
            if let Sink::Temporal(s) = &self.sink {
                workflow_id = s.workflow_id(&event)?;
            }
            Ok(event)
        });
        self.metrics
            .observe(&self.name, Phase::Transform, started.elapsed());
        let event = match processed {
            Ok(event) => event,
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
            Sink::Http(s) => s.deliver(&event, ctx).await.map(Outcome::Delivered),
            Sink::Kafka(s) => s
                .deliver(&event, key, ctx)
                .await
                .map(|at| Outcome::Published {
                    topic: s.topic().to_owned(),
                    at,
                })
                .map_err(DeliveryError::from),
            Sink::Grpc(s) => s
                .deliver(&event)
                .await
                .map(|ack| Outcome::Delivered(grpc_ack_response(&ack)))
                .map_err(DeliveryError::from),
            Sink::Temporal(s) => s
                .deliver(&event, workflow_id, temporal_params, ctx)
                .await
                .map(|d| Outcome::Started {
                    workflow_id: d.workflow_id,
                    run_id: d.run_id,
                })
                .map_err(DeliveryError::from),
        };
        self.metrics
            .observe(&self.name, Phase::Sink, sink_started.elapsed());
        self.metrics
            .observe(&self.name, Phase::Total, started.elapsed());
        match result {
            Ok(outcome) => {
                self.metrics.event(&self.name, EventStatus::Success);
                outcome
            }
            Err(e) => {
                self.metrics.sink_error(&self.name);
                self.metrics.event(&self.name, EventStatus::Failed);
                tracing::warn!(flow = %self.name, correlation_id = %ctx.correlation_id, attempts = e.attempts(), error = %e, "SINK_DELIVERY_FAILED");
                match &self.dlq {
                    Some(dlq) => self.dead_letter(dlq, e, ctx).await,
                    None => Outcome::Failed(e),
                }
            }
        }
    }

    /// Runs the flow's interceptors on `event`; headers they return go with the delivery.
    async fn intercept(&self, event: Event, ctx: &DeliveryContext) -> Intercepted {
        if self.interceptors.is_empty() {
            return Intercepted::Continue {
                event: Box::new(event),
                sink_headers: Vec::new(),
            };
        }
        let failed = |message: String| Intercepted::Failed(FlowError::Interceptor(message));
        let mut input = match serde_json::to_value(&event) {
            Ok(v) => v,
            Err(e) => return failed(format!("the event cannot be given to an interceptor: {e}")),
        };
        let headers: serde_json::Map<String, serde_json::Value> = ctx
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        input["headers"] = serde_json::Value::Object(headers);
        match self.interceptors.apply(input).await {
            Ok(ChainOutcome::Rejected {
                status,
                reason,
                module,
                failed_open,
            }) => {
                self.metrics
                    .interceptor_failed_open(&self.name, failed_open);
                Intercepted::Rejected {
                    status,
                    reason,
                    module,
                }
            }
            Ok(ChainOutcome::Continue {
                mut event,
                failed_open,
            }) => {
                self.metrics
                    .interceptor_failed_open(&self.name, failed_open);
                let headers = event
                    .as_object_mut()
                    .and_then(|o| o.remove("headers"))
                    .and_then(|h| match h {
                        serde_json::Value::Object(h) => Some(h),
                        _ => None,
                    })
                    .unwrap_or_default();
                let sink_headers = headers
                    .into_iter()
                    .filter(|(k, v)| {
                        Some(v.as_str().unwrap_or_default())
                            != ctx
                                .headers
                                .iter()
                                .find(|(n, _)| n == k)
                                .map(|(_, v)| v.as_str())
                    })
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect();
                match serde_json::from_value::<Event>(event) {
                    Ok(e) => Intercepted::Continue {
                        event: Box::new(e),
                        sink_headers,
                    },
                    Err(e) => failed(format!(
                        "an interceptor returned an invalid CloudEvent: {e}"
                    )),
                }
            }
            Err(e) => failed(e.to_string()),
        }
    }

    /// Writes a failed event to the DLQ; the original failure stands if that fails too.
    async fn dead_letter(
        &self,
        dlq: &DlqWriter,
        error: DeliveryError,
        ctx: &DeliveryContext,
    ) -> Outcome {
        let response = error.sink_response();
        let origin = ctx.origin.as_ref();
        let letter = DeadLetter {
            key: origin.and_then(|o| o.key.clone()),
            value: ctx.body.to_vec(),
            original_topic: origin.map(|o| o.topic.clone()),
            original_partition: origin.map(|o| o.partition),
            original_offset: origin.map(|o| o.offset),
            error_code: "SINK_DELIVERY_FAILED".into(),
            error_message: error.to_string(),
            retry_count: error.attempts(),
            failed_at: chrono::Utc::now(),
            flow_name: self.name.clone(),
            correlation_id: ctx.correlation_id.clone(),
            http_status: response.map(|r| r.status.as_u16()),
            response_body: response.map(|r| r.body.to_vec()),
        };
        match dlq.write(&letter).await {
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
        let origin = ctx.origin.as_ref();
        let letter = DeadLetter {
            key: origin.and_then(|o| o.key.clone()),
            value: ctx.body.to_vec(),
            original_topic: origin.map(|o| o.topic.clone()),
            original_partition: origin.map(|o| o.partition),
            original_offset: origin.map(|o| o.offset),
            error_code: error.code().into(),
            error_message: error.to_string(),
            retry_count: 0,
            failed_at: chrono::Utc::now(),
            flow_name: self.name.clone(),
            correlation_id: ctx.correlation_id.clone(),
            ..Default::default()
        };
        match dlq.write(&letter).await {
            Ok(at) => {
                self.metrics.dead_lettered(&self.name);
                tracing::info!(flow = %self.name, correlation_id = %ctx.correlation_id, code = error.code(), topic = dlq.topic(), partition = at.partition, offset = at.offset, "event dead-lettered");
                Ok(Some(at))
            }
            Err(e) => {
                tracing::error!(flow = %self.name, correlation_id = %ctx.correlation_id, error = %e, "DLQ write failed");
                Err(e)
            }
        }
    }

    /// Whether events go through interceptors (which are the only readers of source headers).
    pub fn has_interceptors(&self) -> bool {
        !self.interceptors.is_empty()
    }

    /// The Kafka sink, when the flow has one.
    pub fn kafka_sink(&self) -> Option<&KafkaSink> {
        match &self.sink {
            Sink::Kafka(k) => Some(k),
            _ => None,
        }
    }

    /// The Temporal sink, when the flow has one.
    pub fn temporal_sink(&self) -> Option<&crate::sink::temporal::TemporalSink> {
        match &self.sink {
            Sink::Temporal(t) => Some(t),
            _ => None,
        }
    }

    pub fn metrics(&self) -> &FlowMetrics {
        &self.metrics
    }
}
