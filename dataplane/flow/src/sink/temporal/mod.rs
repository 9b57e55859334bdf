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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use fiso_config::common::TlsConfig;
use fiso_config::flow::{TemporalMode, TemporalSinkConfig};
use fiso_runtime::Readiness;
use serde_json::Value as Json;
use temporalio_client::danger::ServerCertVerifier;
use temporalio_client::errors::ClientConnectError;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::request_extensions::NoRetryOnMatching;
use temporalio_client::tonic::{Code, Status};
use temporalio_client::{
    ClientTlsOptions, Connection, ConnectionOptions, RetryOptions, TlsOptions, Url,
};
use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads, WorkflowType};
use temporalio_common::protos::temporal::api::enums::v1::TaskQueueKind;
use temporalio_common::protos::temporal::api::errordetails::v1::WorkflowExecutionAlreadyStartedFailure;
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    SignalWithStartWorkflowExecutionRequest, StartWorkflowExecutionRequest,
};
use temporalio_common::protos::utilities::decode_status_detail;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::event::json;
use crate::retry::{with_retries, Attempt, RetryError, RetryPolicy};
use crate::sink::http::DeliveryContext;
use crate::{FlowError, Scope};

mod tls;
mod workflow_id;

use tls::{api_key, tls_options};
pub use workflow_id::WorkflowIdTemplate;

/// Payload metadata `encoding` of every argument: JSON that any SDK's default converter reads.
pub const JSON_PLAIN: &str = "json/plain";
/// Time allowed for establishing the TCP / TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one start / signal-with-start call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff of [`TemporalSink::keep_connected`].
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Errors building a Temporal sink from config (no connection is made at build time).
#[derive(Debug, thiserror::Error)]
pub enum TemporalBuildError {
    #[error("sink.config.hostPort: `{0}` is not a valid host:port")]
    HostPort(String),
    #[error("sink.config.workflowIdExpr: {0}")]
    WorkflowId(String),
    #[error("sink.config.params[{index}].expr: {message}")]
    Param { index: usize, message: String },
    #[error("sink.config.tls.{field}: {message}")]
    Tls {
        field: &'static str,
        message: String,
    },
    #[error("sink.config.auth: {0}")]
    Auth(String),
}

/// Where an event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalDelivery {
    pub workflow_id: String,
    pub run_id: String,
    /// False when the workflow already existed (a redelivered event, or a signal to a running
    /// workflow).
    pub started: bool,
}

/// What kind of failure ended a delivery; decides the HTTP source's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalFailure {
    /// Temporal could not be reached, or asked to back off (`UNAVAILABLE`, connection errors,
    /// `RESOURCE_EXHAUSTED`).
    Unavailable,
    /// A call ran out of time (`DEADLINE_EXCEEDED`).
    Timeout,
    /// Temporal refused the call (`NOT_FOUND` namespace, `INVALID_ARGUMENT`, ...): not retried.
    Rejected,
    /// The request could not be built (the event does not serialize as JSON, ...).
    Request,
}

/// Temporal did not take the event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Temporal {operation} of workflow `{workflow_id}` failed after {attempts} attempt(s): {message}")]
pub struct TemporalDeliveryError {
    pub operation: &'static str,
    pub workflow_id: String,
    pub attempts: u32,
    pub kind: TemporalFailure,
    pub message: String,
}

/// A configured Temporal sink; cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct TemporalSink {
    inner: Arc<Inner>,
}

struct Inner {
    host_port: String,
    target: Url,
    namespace: String,
    task_queue: String,
    workflow_type: String,
    mode: TemporalMode,
    signal_name: String,
    workflow_id: Option<WorkflowIdTemplate>,
    params: Vec<CompiledExpr>,
    tls: Option<TlsOptions>,
    /// Never logged nor put in errors.
    api_key: Option<String>,
    identity: String,
    policy: RetryPolicy,
    connection: OnceCell<Connection>,
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
            .field("tls", &i.tls.is_some())
            .field("api_key", &i.api_key.as_ref().map(|_| "<redacted>"))
            .field("connected", &i.connection.initialized())
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
        let api_key = cfg.auth.as_ref().map(api_key).transpose()?;
        let identity = match std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")) {
            Ok(host) if !host.is_empty() => format!("fiso-flow@{host}"),
            _ => "fiso-flow".to_owned(),
        };
        Ok(TemporalSink {
            inner: Arc::new(Inner {
                host_port: cfg.host_port.clone(),
                target,
                namespace: cfg.namespace.clone(),
                task_queue: cfg.task_queue.clone(),
                workflow_type: cfg.workflow_type.clone(),
                mode: cfg.mode.unwrap_or_default(),
                signal_name: cfg.signal_name.clone().unwrap_or_default(),
                workflow_id,
                params,
                tls,
                api_key,
                identity,
                policy,
                connection: OnceCell::new(),
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
    pub(crate) fn is_heavy(&self) -> bool {
        self.inner.params.iter().any(CompiledExpr::is_heavy)
    }

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
    pub fn workflow_id(&self, event: &Event) -> Result<String, FlowError> {
        let refused = |message: String| FlowError::Transform {
            field: "sink.config.workflowIdExpr".into(),
            message,
        };
        match &self.inner.workflow_id {
            Some(template) => {
                let envelope = serde_json::to_value(event).map_err(|e| refused(e.to_string()))?;
                template.render(&envelope).map_err(refused)
            }
            None => {
                use cloudevents::event::AttributesReader;
                Ok(format!("{}-{}", self.inner.workflow_type, event.id()))
            }
        }
    }

    /// Starts workflow `workflow_id` (or signals it, with signal-with-start) with `params` as
    /// arguments, or the CloudEvent itself when the sink has no `params`. Retries per the
    /// flow's policy; an already started workflow is success.
    pub async fn deliver(
        &self,
        event: &Event,
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
        let result = with_retries(&inner.policy, |n| {
            let (workflow_id, payloads, request_id) =
                (workflow_id.clone(), payloads.clone(), request_id.clone());
            async move {
                if n > 0 {
                    tracing::debug!(host_port = %inner.host_port, workflow_id = %workflow_id, attempt = n + 1, "retrying Temporal delivery");
                }
                let connection = match self.connection().await {
                    Ok(c) => c,
                    Err(e) => return classify_connect(&e),
                };
                let call = match inner.mode {
                    TemporalMode::Start => {
                        self.start(connection, workflow_id, payloads, request_id)
                            .await
                    }
                    TemporalMode::Signal => {
                        self.signal_with_start(connection, workflow_id, payloads, request_id)
                            .await
                    }
                };
                classify_call(call)
            }
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

    async fn start(
        &self,
        connection: Connection,
        workflow_id: String,
        input: Payloads,
        request_id: String,
    ) -> Result<(String, bool), Status> {
        let inner = &self.inner;
        let request = StartWorkflowExecutionRequest {
            namespace: inner.namespace.clone(),
            workflow_id,
            workflow_type: Some(WorkflowType {
                name: inner.workflow_type.clone(),
            }),
            task_queue: Some(task_queue(&inner.task_queue)),
            input: Some(input),
            identity: inner.identity.clone(),
            request_id,
            ..Default::default()
        };
        let mut service = connection;
        service
            .start_workflow_execution(call(request))
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.run_id, r.started)
            })
    }

    async fn signal_with_start(
        &self,
        connection: Connection,
        workflow_id: String,
        signal_input: Payloads,
        request_id: String,
    ) -> Result<(String, bool), Status> {
        let inner = &self.inner;
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
            signal_input: Some(signal_input),
            ..Default::default()
        };
        let mut service = connection;
        service
            .signal_with_start_workflow_execution(call(request))
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.run_id, r.started)
            })
    }

    /// The shared connection, made on first use; a failed attempt is retried by the next caller.
    async fn connection(&self) -> Result<Connection, ClientConnectError> {
        let inner = &self.inner;
        inner
            .connection
            .get_or_try_init(|| async {
                let options = ConnectionOptions::new(inner.target.clone())
                    .identity(inner.identity.clone())
                    .maybe_tls_options(inner.tls.clone())
                    .maybe_api_key(inner.api_key.clone())
                    .connect_timeout(CONNECT_TIMEOUT)
                    // The flow's retry policy decides; connect fails fast.
                    .retry_options(RetryOptions::builder().max_retries(1).build())
                    .build();
                let connection = Connection::connect(options).await?;
                tracing::info!(host_port = %inner.host_port, namespace = %inner.namespace, "connected to Temporal");
                Ok(connection)
            })
            .await
            .cloned()
    }

    /// Connects in the background, retrying with backoff, and reports readiness component
    /// `component` not ready (with the reason) until the connection is up, then ready. Ends
    /// when connected or when `cancel` fires (a reload or stop of the flow).
    pub async fn keep_connected(
        self,
        readiness: Readiness,
        component: String,
        cancel: CancellationToken,
    ) {
        let mut backoff = RECONNECT_INITIAL;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.connection() => r,
            };
            if cancel.is_cancelled() {
                return;
            }
            match result {
                Ok(_) => {
                    readiness.set_ready(component);
                    return;
                }
                Err(e) => {
                    let reason = format!(
                        "Temporal at {} is not reachable: {}",
                        self.inner.host_port,
                        connect_message(&e)
                    );
                    tracing::warn!(component = %component, retry_in = ?backoff, "{reason}");
                    readiness.set_not_ready(component.clone(), reason);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }
}

/// The readiness component of a flow's Temporal connection (`flow/<name>/sink`): kept apart
/// from the flow's own component, which the supervisor owns.
pub fn readiness_component(flow: &str) -> String {
    format!("{}/sink", crate::supervisor::component(flow))
}

fn task_queue(name: &str) -> TaskQueue {
    TaskQueue {
        name: name.to_owned(),
        kind: TaskQueueKind::Normal as i32,
        ..Default::default()
    }
}

/// A request with the client's own retries off (the flow's policy retries) and a deadline.
fn call<T>(message: T) -> temporalio_client::tonic::Request<T> {
    let mut request = temporalio_client::tonic::Request::new(message);
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

type Failure = (TemporalFailure, String);

fn classify_connect<T>(e: &ClientConnectError) -> Attempt<T, Failure> {
    let failure = (TemporalFailure::Unavailable, connect_message(e));
    match e {
        ClientConnectError::InvalidUri(_)
        | ClientConnectError::InvalidHeaders(_)
        | ClientConnectError::InvalidConfig(_) => {
            Attempt::Permanent((TemporalFailure::Rejected, failure.1))
        }
        ClientConnectError::SystemInfoCallError(s) => classify_status(s),
        _ => Attempt::Retryable(failure, None),
    }
}

fn classify_call(result: Result<(String, bool), Status>) -> Attempt<(String, bool), Failure> {
    match result {
        Ok(r) => Attempt::Success(r),
        // The workflow id is taken by a running execution: this event (or a redelivery of it)
        // already started it.
        Err(s) if s.code() == Code::AlreadyExists => {
            let run_id =
                decode_status_detail::<WorkflowExecutionAlreadyStartedFailure>(s.details())
                    .map(|d| d.run_id)
                    .unwrap_or_default();
            Attempt::Success((run_id, false))
        }
        Err(s) => classify_status(&s),
    }
}

fn classify_status<T>(s: &Status) -> Attempt<T, Failure> {
    let message = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        Code::Unavailable | Code::ResourceExhausted => {
            Attempt::Retryable((TemporalFailure::Unavailable, message), None)
        }
        Code::DeadlineExceeded => Attempt::Retryable((TemporalFailure::Timeout, message), None),
        _ => Attempt::Permanent((TemporalFailure::Rejected, message)),
    }
}

/// The connect error with its sources (tonic's transport errors say little on their own).
fn connect_message(e: &ClientConnectError) -> String {
    match e {
        ClientConnectError::SystemInfoCallError(s) => format!("{:?}: {}", s.code(), s.message()),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(inner) = source {
                let next = inner.to_string();
                if !text.contains(&next) {
                    text.push_str(": ");
                    text.push_str(&next);
                }
                source = inner.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InputEvent;
    use fiso_config::flow::TemporalParam;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn envelope() -> Json {
        json!({
            "specversion": "1.0",
            "id": "evt-1",
            "source": "orders",
            "type": "order.created",
            "data": {
                "orderId": "A-17",
                "customerId": 42,
                "amount": 1e21,
                "ratio": 0.5,
                "vip": true,
                "gone": null,
                "blank": "",
                "items": [{"sku": "x"}],
            },
        })
    }

    fn render(expr: &str) -> Result<String, String> {
        WorkflowIdTemplate::parse(expr)?.render(&envelope())
    }

    #[test]
    fn workflow_id_placeholders_resolve_against_the_envelope() {
        assert_eq!(render("{{.id}}").unwrap(), "evt-1");
        assert_eq!(render("{{.type}}").unwrap(), "order.created");
        assert_eq!(render("{{.data.orderId}}").unwrap(), "A-17");
        assert_eq!(
            render("order-{{.data.customerId}}-{{ .data.orderId }}").unwrap(),
            "order-42-A-17"
        );
        assert_eq!(render("{{.data.items.0.sku}}").unwrap(), "x");
        assert_eq!(render("static").unwrap(), "static");
    }

    #[test]
    fn workflow_id_scalars_render_plainly() {
        assert_eq!(
            render("{{.data.amount}}").unwrap(),
            "1000000000000000000000"
        );
        assert_eq!(render("{{.data.ratio}}").unwrap(), "0.5");
        assert_eq!(render("{{.data.vip}}").unwrap(), "true");
    }

    #[test]
    fn workflow_id_missing_or_unusable_fields_are_errors() {
        for (expr, why) in [
            ("order-{{.data.missing}}", "no such field"),
            ("{{.data.orderId.deeper}}", "no such field"),
            ("{{.data.gone}}", "null"),
            ("{{.data.blank}}", "empty"),
            ("{{.data}}", "not a string"),
            ("{{.data.items}}", "not a string"),
        ] {
            let e = render(expr).unwrap_err();
            assert!(e.contains(why), "{expr}: {e}");
        }
    }

    #[test]
    fn workflow_id_syntax_matches_validation() {
        for bad in [
            "",
            "  ",
            "{{.a",
            "{{data.id}}",
            "{{.}}",
            "{{.a..b}}",
            "x}}",
            "{{.a b}}",
        ] {
            assert!(WorkflowIdTemplate::parse(bad).is_err(), "{bad:?}");
        }
        assert!(WorkflowIdTemplate::parse("a-{{.data.order_id}}-{{.x-y}}").is_ok());
    }

    fn config(extra: &str) -> TemporalSinkConfig {
        serde_yaml_ng::from_str(&format!(
            "hostPort: 127.0.0.1:7233\ntaskQueue: q\nworkflowType: ProcessOrder\n{extra}"
        ))
        .unwrap()
    }

    fn cloud_event(id: &str) -> Event {
        use cloudevents::{EventBuilder, EventBuilderV10};
        EventBuilderV10::new()
            .id(id)
            .source("orders")
            .ty("order.created")
            .data("application/json", json!({"orderId": "A-17"}))
            .build()
            .unwrap()
    }

    #[test]
    fn default_workflow_id_is_type_and_event_id() {
        let sink = TemporalSink::new(&config(""), RetryPolicy::default(), Budget::DEFAULT).unwrap();
        assert_eq!(
            sink.workflow_id(&cloud_event("orders-0-17")).unwrap(),
            "ProcessOrder-orders-0-17"
        );
        let sink = TemporalSink::new(
            &config("workflowIdExpr: 'order-{{.data.orderId}}'"),
            RetryPolicy::default(),
            Budget::DEFAULT,
        )
        .unwrap();
        assert_eq!(sink.workflow_id(&cloud_event("e")).unwrap(), "order-A-17");
        let sink = TemporalSink::new(
            &config("workflowIdExpr: '{{.data.nope}}'"),
            RetryPolicy::default(),
            Budget::DEFAULT,
        )
        .unwrap();
        let e = sink.workflow_id(&cloud_event("e")).unwrap_err();
        assert_eq!(e.code(), "TRANSFORM_FAILED");
    }

    fn input(json: Json) -> InputEvent {
        let defaults = crate::FlowDefaults::new("f");
        InputEvent::from_json(json, defaults.event()).unwrap()
    }

    #[test]
    fn params_keep_their_json_types() {
        let mut cfg = config("");
        cfg.params = [
            "data.name",
            "data.count",
            "data.amount",
            "data.ok",
            "data.nothing",
            "[data.count, data.name]",
            "data.order",
            "data.count + 1",
            "id",
        ]
        .into_iter()
        .map(|e| TemporalParam { expr: e.into() })
        .collect();
        let sink = TemporalSink::new(&cfg, RetryPolicy::default(), Budget::DEFAULT).unwrap();
        let input = input(json!({
            "specversion": "1.0", "id": "evt-9", "source": "s", "type": "t",
            "data": {"name": "n", "count": 3, "amount": 99.5, "ok": true, "nothing": null,
                     "order": {"id": "o-1", "lines": [1, 2]}},
        }));
        let params = sink.params(&Scope::new(&input)).unwrap();
        assert_eq!(
            params,
            vec![
                json!("n"),
                json!(3),
                json!(99.5),
                json!(true),
                json!(null),
                json!([3, "n"]),
                json!({"id": "o-1", "lines": [1, 2]}),
                json!(4),
                json!("evt-9"),
            ]
        );
        assert!(params[1].is_i64() && params[2].is_f64() && params[7].is_i64());
        let payload = json_payload(&params[6]).unwrap();
        assert_eq!(payload.metadata["encoding"], b"json/plain");
        assert_eq!(payload.data, br#"{"id":"o-1","lines":[1,2]}"#);
    }

    #[test]
    fn a_failing_param_names_its_index() {
        let mut cfg = config("");
        cfg.params = vec![
            TemporalParam {
                expr: "data.a".into(),
            },
            TemporalParam {
                expr: "data.missing".into(),
            },
        ];
        let sink = TemporalSink::new(&cfg, RetryPolicy::default(), Budget::DEFAULT).unwrap();
        let input = input(json!({"a": 1}));
        let e = sink.params(&Scope::new(&input)).unwrap_err();
        assert!(e.to_string().contains("sink.config.params[1].expr"), "{e}");
    }

    #[test]
    fn build_errors_name_the_field_and_hide_the_key() {
        let e = TemporalSink::new(
            &config("params: [{expr: 'data.'}]"),
            RetryPolicy::default(),
            Budget::DEFAULT,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("sink.config.params[0].expr"),
            "{e}"
        );
        let mut cfg = config("");
        cfg.host_port = "no port".into();
        assert!(matches!(
            TemporalSink::new(&cfg, RetryPolicy::default(), Budget::DEFAULT),
            Err(TemporalBuildError::HostPort(_))
        ));
        let dir = std::env::temp_dir().join(format!("fiso-temporal-key-{}", std::process::id()));
        std::fs::write(&dir, "s3cr3t-key\n").unwrap();
        let sink = TemporalSink::new(
            &config(&format!("auth: {{apiKeyFile: {}}}", dir.display())),
            RetryPolicy::default(),
            Budget::DEFAULT,
        )
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(sink.inner.api_key.as_deref(), Some("s3cr3t-key"));
        assert!(!format!("{sink:?}").contains("s3cr3t"));
    }

    #[test]
    fn tls_options_build_from_config() {
        let sink = TemporalSink::new(
            &config("tls: {enabled: true, skipVerify: true}"),
            RetryPolicy::default(),
            Budget::DEFAULT,
        )
        .unwrap();
        let tls = sink.inner.tls.as_ref().expect("TLS on");
        assert!(tls.server_cert_verifier.is_some());
        assert_eq!(sink.inner.target.scheme(), "https");
        let e = TemporalSink::new(
            &config("tls: {enabled: true, caFile: /nonexistent/ca.pem}"),
            RetryPolicy::default(),
            Budget::DEFAULT,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("sink.config.tls.caFile"), "{e}");
        let plain = TemporalSink::new(
            &config("tls: {enabled: false}"),
            RetryPolicy::default(),
            Budget::DEFAULT,
        );
        assert_eq!(plain.unwrap().inner.target.scheme(), "http");
    }

    #[test]
    fn status_codes_are_classified_like_http() {
        let kind = |code| match classify_call(Err(Status::new(code, "x"))) {
            Attempt::Retryable((k, _), _) => ("retry", k),
            Attempt::Permanent((k, _)) => ("final", k),
            Attempt::Success(_) => ("ok", TemporalFailure::Request),
        };
        assert_eq!(
            kind(Code::Unavailable),
            ("retry", TemporalFailure::Unavailable)
        );
        assert_eq!(
            kind(Code::ResourceExhausted),
            ("retry", TemporalFailure::Unavailable)
        );
        assert_eq!(
            kind(Code::DeadlineExceeded),
            ("retry", TemporalFailure::Timeout)
        );
        assert_eq!(kind(Code::NotFound), ("final", TemporalFailure::Rejected));
        assert_eq!(
            kind(Code::InvalidArgument),
            ("final", TemporalFailure::Rejected)
        );
        assert_eq!(kind(Code::AlreadyExists).0, "ok");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_then_reported_unavailable() {
        // A port nothing listens on: bind, read it, release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = config("");
        cfg.host_port = format!("127.0.0.1:{port}");
        let policy = RetryPolicy {
            max_retries: 2,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let sink = TemporalSink::new(&cfg, policy, Budget::DEFAULT).unwrap();
        let e = sink
            .deliver(
                &cloud_event("e-1"),
                "wf-1".into(),
                Vec::new(),
                &DeliveryContext::default(),
            )
            .await
            .unwrap_err();
        assert_eq!((e.attempts, e.kind), (3, TemporalFailure::Unavailable));
        assert_eq!(e.workflow_id, "wf-1");
        let readiness = Readiness::new();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sink.clone().keep_connected(
            readiness.clone(),
            "flow/x/sink".into(),
            cancel.clone(),
        ));
        while readiness.state("flow/x/sink").is_none() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            readiness.state("flow/x/sink"),
            Some(fiso_runtime::health::ComponentState::NotReady { .. })
        ));
        cancel.cancel();
        task.await.unwrap();
    }
}
