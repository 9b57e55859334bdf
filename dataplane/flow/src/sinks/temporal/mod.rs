//! Temporal sink: one workflow execution per event (`mode: start`), or a signal to one
//! (`mode: signal`, signal-with-start so the workflow is created when it does not exist), over
//! the official Rust client (`temporalio-client`, raw WorkflowService calls).
//!
//! * Arguments are `json/plain` payloads, so Java / Kotlin / TypeScript / Go workers deserialize
//!   them into typed classes: without `params` the single argument is the CloudEvent (structured
//!   JSON: `specversion`, `id`, `source`, `type`, ..., `data`); with `params` each CEL result is
//!   one positional argument (string, int, float, bool, null, array, object). In signal mode
//!   the arguments are the signal's; a workflow created by signal-with-start gets none.
//! * The workflow id comes from `workflowIdExpr` (`order-{{.data.orderId}}`, resolved against the
//!   CloudEvent as sent; a missing field refuses the event) or defaults to
//!   `<workflowType>-<event id>`, stable across redelivery, so Temporal's workflow-id
//!   de-duplication absorbs a redelivered event: "workflow already started" is success.
//! * The connection is made lazily and retried: an unreachable Temporal does not stop the flow
//!   from starting; [`TemporalSink::keep_connected`] reports it unready until it connects.
//! * Failures are classified like the HTTP sink's: `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//!   `RESOURCE_EXHAUSTED` and connection errors are retried per the flow's policy, anything else
//!   is final. The client's own retries are turned off so the flow's policy alone decides.
//! * Traces: each attempt is a client span named as Temporal's OpenTelemetry interceptors name
//!   a start (`StartWorkflow:<type>`), whose W3C context the workflow header `_tracer-data`
//!   carries, so a worker with those interceptors continues the trace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::CloudEvent;
use fiso_config::flow::{TemporalMode, TemporalSinkConfig};
use fiso_runtime::otel::TraceHeaders;
use fiso_runtime::Readiness;
use serde_json::Value as Json;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::request_extensions::NoRetryOnMatching;
use temporalio_client::tonic::{Code, Status};
use temporalio_client::{Connection, Url};
use temporalio_common::protos::temporal::api::common::v1::{
    Header, Payload, Payloads, WorkflowType,
};
use temporalio_common::protos::temporal::api::enums::v1::TaskQueueKind;
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    SignalWithStartWorkflowExecutionRequest, StartWorkflowExecutionRequest,
};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Instrument;

use super::{rpc_trace, Sink};
use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::event::json;
use crate::pipeline::delivery::{DeliveryContext, DeliveryError, DeliveryErrorKind, Receipt};
use crate::retry::{with_retries, Attempt, RetryError, RetryPolicy};
use crate::{FlowError, InputEvent, Scope};

mod classify;
mod connection;
mod error;
mod oidc;
#[cfg(test)]
mod tests;
mod tls;
mod workflow_id;

use classify::{classify_call, classify_connect, classify_token};
use connection::Connector;
pub use error::{TemporalBuildError, TemporalDelivery, TemporalDeliveryError, TemporalFailure};
use oidc::TokenSource;
use tls::{api_key, tls_options};
pub use workflow_id::WorkflowIdTemplate;

/// Payload metadata `encoding` of every argument: JSON that any SDK's default converter reads.
pub const JSON_PLAIN: &str = "json/plain";
/// Time allowed for one start / signal-with-start call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured Temporal sink; cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct TemporalSink {
    inner: Arc<Inner>,
}

struct Inner {
    host_port: String,
    namespace: String,
    task_queue: String,
    workflow_type: String,
    mode: TemporalMode,
    signal_name: String,
    workflow_id: Option<WorkflowIdTemplate>,
    params: Vec<CompiledExpr>,
    identity: String,
    policy: RetryPolicy,
    connector: Connector,
}

impl std::fmt::Debug for TemporalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("TemporalSink")
            .field("host_port", &i.host_port)
            .field("namespace", &i.namespace)
            .field("task_queue", &i.task_queue)
            .field("workflow_type", &i.workflow_type)
            .field("mode", &i.mode)
            .field("tls", &i.connector.tls.is_some())
            .field(
                "api_key",
                &i.connector.api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("oidc", &i.connector.oidc)
            .field("connected", &i.connector.connection.initialized())
            .finish_non_exhaustive()
    }
}

impl TemporalSink {
    /// Builds the sink: compiles `workflowIdExpr` and `params`, reads TLS files and the API key.
    /// Does not connect.
    pub fn new(
        cfg: &TemporalSinkConfig,
        policy: RetryPolicy,
        budget: Budget,
    ) -> Result<Self, TemporalBuildError> {
        let tls = match &cfg.tls {
            Some(t) if t.enabled => Some(tls_options(t)?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let target = Url::parse(&format!("{scheme}://{}", cfg.host_port))
            .ok()
            .filter(|u| u.host_str().is_some() && u.port().is_some() && u.path() == "/")
            .ok_or_else(|| TemporalBuildError::HostPort(cfg.host_port.clone()))?;
        let workflow_id = cfg
            .workflow_id_expr
            .as_deref()
            .map(WorkflowIdTemplate::parse)
            .transpose()
            .map_err(TemporalBuildError::WorkflowId)?;
        let params = cfg
            .params
            .iter()
            .enumerate()
            .map(|(index, p)| {
                CompiledExpr::compile_with(&p.expr, budget)
                    .map_err(|message| TemporalBuildError::Param { index, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (api_key, oidc) = match &cfg.auth {
            Some(auth) => match &auth.oidc {
                Some(o) => (None, Some(TokenSource::new(o)?)),
                None => (Some(api_key(auth)?), None),
            },
            None => (None, None),
        };
        let identity = match std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")) {
            Ok(host) if !host.is_empty() => format!("fiso-flow@{host}"),
            _ => "fiso-flow".to_owned(),
        };
        Ok(TemporalSink {
            inner: Arc::new(Inner {
                connector: Connector {
                    host_port: cfg.host_port.clone(),
                    target,
                    namespace: cfg.namespace.clone(),
                    identity: identity.clone(),
                    tls,
                    api_key,
                    oidc,
                    connection: OnceCell::new(),
                },
                host_port: cfg.host_port.clone(),
                namespace: cfg.namespace.clone(),
                task_queue: cfg.task_queue.clone(),
                workflow_type: cfg.workflow_type.clone(),
                mode: cfg.mode.unwrap_or_default(),
                signal_name: cfg.signal_name.clone().unwrap_or_default(),
                workflow_id,
                params,
                identity,
                policy,
            }),
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    pub fn host_port(&self) -> &str {
        &self.inner.host_port
    }

    /// The positional arguments from `params` over the input event's scope (the same scope as
    /// `transform.fields`); empty when no `params` are configured.
    pub fn params(&self, scope: &Scope<'_>) -> Result<Vec<Json>, FlowError> {
        self.inner
            .params
            .iter()
            .enumerate()
            .map(|(i, expr)| {
                scope.eval(expr).map_err(|e| FlowError::Transform {
                    field: format!("sink.config.params[{i}].expr"),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// The workflow id of `event` (the CloudEvent as it will be sent): `workflowIdExpr`
    /// rendered against it, else `<workflowType>-<event id>`.
    pub fn workflow_id(&self, event: &CloudEvent) -> Result<String, FlowError> {
        let refused = |message: String| FlowError::Transform {
            field: "sink.config.workflowIdExpr".into(),
            message,
        };
        match &self.inner.workflow_id {
            Some(template) => {
                let envelope = serde_json::to_value(event).map_err(|e| refused(e.to_string()))?;
                template.render(&envelope).map_err(refused)
            }
            None => Ok(format!("{}-{}", self.inner.workflow_type, event.id())),
        }
    }

    /// Starts workflow `workflow_id` (or signals it, with signal-with-start) with `params` as
    /// arguments, or the CloudEvent itself when the sink has no `params`. Retries per the
    /// flow's policy; an already started workflow is success.
    pub async fn send(
        &self,
        event: &CloudEvent,
        workflow_id: String,
        params: Vec<Json>,
        ctx: &DeliveryContext,
    ) -> Result<TemporalDelivery, TemporalDeliveryError> {
        let inner = &self.inner;
        let operation = match inner.mode {
            TemporalMode::Start => "start",
            TemporalMode::Signal => "signal-with-start",
        };
        let fail = |attempts, kind, message: String| TemporalDeliveryError {
            operation,
            workflow_id: workflow_id.clone(),
            attempts,
            kind,
            message,
        };
        let payloads = if inner.params.is_empty() {
            vec![json_payload(event)]
        } else {
            params.iter().map(json_payload).collect()
        }
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(0, TemporalFailure::Request, e.to_string()))?;
        let payloads = Payloads { payloads };
        // One request id for every attempt: a retry of a call that did reach Temporal is
        // recognised as the same request.
        let request_id = uuid::Uuid::new_v4().to_string();
        // With traces off the caller's context is forwarded as it came, as the HTTP sink does.
        let caller = ctx.traceparent.as_ref().map(|_| TraceHeaders {
            traceparent: ctx.traceparent.clone(),
            tracestate: ctx.tracestate.clone(),
        });
        let result = with_retries(&inner.policy, |n| {
            let (workflow_id, payloads, request_id) =
                (workflow_id.clone(), payloads.clone(), request_id.clone());
            let span = self.attempt_span(n, &workflow_id);
            // The workflow continues the trace from this attempt (Temporal's OpenTelemetry
            // interceptors read the `_tracer-data` header).
            let header = tracer_data(fiso_runtime::otel::headers_of(&span).as_ref().or(caller.as_ref()));
            let traced = span.clone();
            async move {
                if n > 0 {
                    tracing::debug!(host_port = %inner.host_port, workflow_id = %workflow_id, attempt = n + 1, "retrying Temporal delivery");
                }
                let connection = match inner.connector.connection().await {
                    Ok(c) => c,
                    Err(e) => {
                        rpc_trace::failed(&traced, "connection");
                        return classify_connect(&e);
                    }
                };
                let token = match inner.connector.token().await {
                    Ok(t) => t,
                    Err(e) => {
                        rpc_trace::failed(&traced, "token");
                        return classify_token(&e);
                    }
                };
                let call = |token: Option<String>| {
                    self.call(
                        connection.clone(),
                        Call {
                            workflow_id: workflow_id.clone(),
                            payloads: payloads.clone(),
                            request_id: request_id.clone(),
                            header: header.clone(),
                        },
                        token,
                    )
                };
                let mut result = call(token.clone()).await;
                // A token Temporal refuses (revoked, or kept for want of `expires_in`) is
                // replaced once, at once.
                if let (Some(source), Some(stale), Err(status)) =
                    (&inner.connector.oidc, &token, &result)
                {
                    if status.code() == Code::Unauthenticated {
                        tracing::info!(host_port = %inner.host_port, "Temporal refused the access token; fetching a new one");
                        source.invalidate(stale).await;
                        let fresh = match source.token().await {
                            Ok(t) => t,
                            Err(e) => {
                                rpc_trace::failed(&traced, "token");
                                return classify_token(&e);
                            }
                        };
                        result = call(Some(fresh)).await;
                    }
                }
                record_call(&traced, &result);
                let attempt = classify_call(result);
                if !traced.is_disabled() && !matches!(attempt, Attempt::Success(_)) {
                    traced.record("otel.status_code", "ERROR");
                }
                attempt
            }
            .instrument(span)
        })
        .await;
        match result {
            Ok((run_id, started)) => {
                tracing::debug!(correlation_id = %ctx.correlation_id, workflow_id = %workflow_id, run_id = %run_id, started, operation, "Temporal accepted the event");
                Ok(TemporalDelivery {
                    workflow_id,
                    run_id,
                    started,
                })
            }
            Err(RetryError::Permanent((kind, message))) => Err(fail(1, kind, message)),
            Err(RetryError::Exhausted {
                attempts,
                last: (kind, message),
            }) => Err(fail(attempts, kind, message)),
        }
    }

    /// The client span of attempt `n` (0-based): named and attributed as Temporal's own
    /// OpenTelemetry interceptors name a workflow start (`StartWorkflow:<type>`,
    /// `temporalWorkflowID`), with the RPC semantic conventions of the gRPC call under it.
    /// Never the workflow's input.
    fn attempt_span(&self, n: u32, workflow_id: &str) -> tracing::Span {
        if !fiso_runtime::otel::enabled() {
            return tracing::Span::none();
        }
        let inner = &self.inner;
        let (operation, method) = match inner.mode {
            TemporalMode::Start => ("StartWorkflow", "StartWorkflowExecution"),
            TemporalMode::Signal => (
                "SignalWithStartWorkflow",
                "SignalWithStartWorkflowExecution",
            ),
        };
        let target = &inner.connector.target;
        let span = tracing::info_span!(
            "deliver",
            otel.name = format!("{operation}:{}", inner.workflow_type),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = "temporal.api.workflowservice.v1.WorkflowService",
            rpc.method = method,
            server.address = target.host_str().unwrap_or_default(),
            server.port = target.port(),
            temporalWorkflowID = workflow_id,
            temporal.namespace = %inner.namespace,
            temporal.task_queue = %inner.task_queue,
            temporal.workflow.type = %inner.workflow_type,
            fiso.delivery.resend_count = (n > 0).then_some(n),
            rpc.grpc.status_code = Empty,
            error.type = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        fiso_runtime::otel::record_ids(&span);
        span
    }

    /// One start or signal-with-start call, per the sink's mode.
    async fn call(
        &self,
        connection: Connection,
        call: Call,
        token: Option<String>,
    ) -> Result<(String, bool), Status> {
        let inner = &self.inner;
        let Call {
            workflow_id,
            payloads,
            request_id,
            header,
        } = call;
        let mut service = connection;
        match inner.mode {
            TemporalMode::Start => {
                let request = StartWorkflowExecutionRequest {
                    namespace: inner.namespace.clone(),
                    workflow_id,
                    workflow_type: Some(WorkflowType {
                        name: inner.workflow_type.clone(),
                    }),
                    task_queue: Some(task_queue(&inner.task_queue)),
                    input: Some(payloads),
                    identity: inner.identity.clone(),
                    request_id,
                    header,
                    ..Default::default()
                };
                service
                    .start_workflow_execution(request_of(request, token.as_deref()))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.run_id, r.started)
                    })
            }
            TemporalMode::Signal => {
                let request = SignalWithStartWorkflowExecutionRequest {
                    namespace: inner.namespace.clone(),
                    workflow_id,
                    workflow_type: Some(WorkflowType {
                        name: inner.workflow_type.clone(),
                    }),
                    task_queue: Some(task_queue(&inner.task_queue)),
                    identity: inner.identity.clone(),
                    request_id,
                    signal_name: inner.signal_name.clone(),
                    signal_input: Some(payloads),
                    header,
                    ..Default::default()
                };
                service
                    .signal_with_start_workflow_execution(request_of(request, token.as_deref()))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.run_id, r.started)
                    })
            }
        }
    }
}

/// What one start or signal-with-start call sends besides the sink's settings.
struct Call {
    workflow_id: String,
    payloads: Payloads,
    request_id: String,
    /// The `_tracer-data` header, when there is a context to pass on.
    header: Option<Header>,
}

/// The header field Temporal's OpenTelemetry interceptors (Go, Java, TypeScript, Python)
/// carry the W3C context in, as a `json/plain` payload of the propagator's carrier.
pub const TRACER_DATA: &str = "_tracer-data";

/// The workflow header with `trace` under [`TRACER_DATA`]; `None` without a context.
fn tracer_data(trace: Option<&TraceHeaders>) -> Option<Header> {
    let trace = trace?;
    let mut carrier = std::collections::BTreeMap::new();
    carrier.insert("traceparent", trace.traceparent.as_deref()?);
    if let Some(state) = trace.tracestate.as_deref() {
        carrier.insert("tracestate", state);
    }
    let payload = json_payload(&carrier).ok()?;
    Some(Header {
        fields: HashMap::from([(TRACER_DATA.to_owned(), payload)]),
    })
}

/// The call's gRPC status on the attempt's span (`ALREADY_EXISTS` is a de-duplicated start,
/// not a failure).
fn record_call(span: &tracing::Span, result: &Result<(String, bool), Status>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(_) => rpc_trace::record_code(span, Code::Ok as i32),
        Err(status) => {
            let code = status.code() as i32;
            rpc_trace::record_code(span, code);
            if status.code() != Code::AlreadyExists {
                span.record("error.type", rpc_trace::code_name(code));
            }
        }
    }
}

impl TemporalSink {
    /// Connects the sink's shared connection in the background, reporting readiness component
    /// `component` not ready until it is up (see `connection.rs`).
    pub async fn keep_connected(
        self,
        readiness: Readiness,
        component: String,
        cancel: CancellationToken,
    ) {
        self.inner
            .connector
            .keep_connected(readiness, component, cancel)
            .await
    }
}

/// What a Temporal delivery needs besides the CloudEvent.
#[derive(Debug, Default)]
pub struct TemporalPrepared {
    /// The `params` arguments, rendered from the input event.
    pub params: Vec<Json>,
    /// The workflow id, rendered from the CloudEvent as sent.
    pub workflow_id: String,
}

impl Sink for TemporalSink {
    type Prepared = TemporalPrepared;

    fn is_heavy(&self) -> bool {
        self.inner.params.iter().any(CompiledExpr::is_heavy)
    }

    fn prepare(&self, input: &InputEvent, budget: Budget) -> Result<TemporalPrepared, FlowError> {
        let params = if self.inner.params.is_empty() {
            Vec::new()
        } else {
            self.params(&Scope::with_budget(input, budget))?
        };
        Ok(TemporalPrepared {
            params,
            workflow_id: String::new(),
        })
    }

    /// The workflow id is rendered from the CloudEvent as sent; a missing field refuses it.
    fn seal(&self, event: &CloudEvent, prepared: &mut TemporalPrepared) -> Result<(), FlowError> {
        prepared.workflow_id = self.workflow_id(event)?;
        Ok(())
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        prepared: TemporalPrepared,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let d = self
            .send(event, prepared.workflow_id, prepared.params, ctx)
            .await?;
        Ok(Receipt::Started {
            workflow_id: d.workflow_id,
            run_id: d.run_id,
        })
    }

    fn connection_watch(
        &self,
        readiness: Readiness,
        component: String,
        cancel: CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static + use<>> {
        Some(self.clone().keep_connected(readiness, component, cancel))
    }
}

impl From<TemporalDeliveryError> for DeliveryError {
    fn from(e: TemporalDeliveryError) -> Self {
        let kind = match e.kind {
            TemporalFailure::Unavailable => DeliveryErrorKind::Unavailable,
            TemporalFailure::Timeout => DeliveryErrorKind::Timeout,
            TemporalFailure::Rejected => DeliveryErrorKind::Rejected,
            TemporalFailure::Request => DeliveryErrorKind::Other,
        };
        DeliveryError::new(kind, e.attempts, e.to_string())
    }
}

fn task_queue(name: &str) -> TaskQueue {
    TaskQueue {
        name: name.to_owned(),
        kind: TaskQueueKind::Normal as i32,
        ..Default::default()
    }
}

/// A request with the client's own retries off (the flow's policy retries), a deadline, and
/// the `auth.oidc` bearer token when there is one.
fn request_of<T>(message: T, token: Option<&str>) -> temporalio_client::tonic::Request<T> {
    let mut request = temporalio_client::tonic::Request::new(message);
    if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request.set_timeout(CALL_TIMEOUT);
    request.extensions_mut().insert(NoRetryOnMatching {
        predicate: |_| true,
    });
    request
}

/// `value` as a `json/plain` payload (numbers without exponent).
fn json_payload<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Payload> {
    Ok(Payload {
        metadata: HashMap::from([("encoding".to_owned(), JSON_PLAIN.as_bytes().to_vec())]),
        data: json::to_vec_plain(value)?,
        ..Default::default()
    })
}
