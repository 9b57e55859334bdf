//! gRPC sink: delivers CloudEvents (Protobuf format) to a `fiso.v1.EventService` at `address`
//! over one long-lived `PublishStream` per sink, opened on first use and again after it broke;
//! each event waits for the acknowledgement carrying its id. UNAVAILABLE, DEADLINE_EXCEEDED,
//! RESOURCE_EXHAUSTED and connection failures are retried per the flow's policy; other codes
//! are final. TLS with rustls: system roots plus `caFile`, a client certificate for mutual TLS.
//! With traces exported, each attempt is a client span whose context the event carries in its
//! `traceparent` / `tracestate` extensions (the stream's metadata is shared by every event).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::CloudEvent;
use fiso_config::flow::GrpcSinkConfig;
use fiso_runtime::http_client;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tracing::field::Empty;
use tracing::Instrument;

use super::{rpc_trace, Sink};
use crate::cel::budget::Budget;
use crate::event::protobuf::proto::fiso::v1::event_service_client::EventServiceClient;
use crate::event::protobuf::proto::fiso::v1::{Outcome as AckOutcome, PublishResponse};
use crate::event::protobuf::proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use crate::event::protobuf::proto::io::cloudevents::v1::cloud_event::CloudEventAttributeValue;
use crate::event::protobuf::proto::io::cloudevents::v1::CloudEvent as ProtoEvent;
use crate::event::protobuf::to_proto;
use crate::pipeline::delivery::{
    DeliveryContext, DeliveryError, DeliveryErrorKind, Receipt, SinkResponse,
};
use crate::retry::{with_retries, Attempt, RetryError, RetryPolicy};
use crate::{FlowError, InputEvent};

/// Per-attempt wait for the acknowledgement when the sink sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Events queued for the stream before senders wait.
const STREAM_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GrpcSinkBuildError {
    #[error("sink.config.address `{address}`: {message}")]
    Address { address: String, message: String },
    #[error("sink.config.tls: {0}")]
    Tls(String),
}

/// Delivery to the gRPC sink failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("gRPC sink {address}: {code:?} after {attempts} attempt(s): {message}")]
pub struct GrpcDeliveryError {
    pub address: String,
    pub code: Code,
    pub attempts: u32,
    pub message: String,
}

/// A configured gRPC sink; cheap to clone (the stream is shared).
#[derive(Clone)]
pub struct GrpcSink {
    address: Arc<str>,
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    policy: RetryPolicy,
    stream: Arc<tokio::sync::Mutex<Option<EventStream>>>,
}

impl std::fmt::Debug for GrpcSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcSink")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

type Waiters = Arc<Mutex<HashMap<String, VecDeque<oneshot::Sender<PublishResponse>>>>>;

/// An open `PublishStream`: events go in through `events`; the reader task hands every
/// acknowledgement to the oldest waiter for its id.
struct EventStream {
    events: mpsc::Sender<ProtoEvent>,
    waiters: Waiters,
    /// Cancelled when the reader saw the stream end.
    ended: CancellationToken,
}

impl EventStream {
    fn is_open(&self) -> bool {
        !self.ended.is_cancelled() && !self.events.is_closed()
    }
}

fn lock(
    w: &Waiters,
) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<oneshot::Sender<PublishResponse>>>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl GrpcSink {
    pub fn new(cfg: &GrpcSinkConfig, policy: RetryPolicy) -> Result<Self, GrpcSinkBuildError> {
        let tls = cfg.tls.as_ref().filter(|t| t.enabled);
        let uri = if cfg.address.contains("://") {
            cfg.address.clone()
        } else if tls.is_some() {
            format!("https://{}", cfg.address)
        } else {
            format!("http://{}", cfg.address)
        };
        let bad_address = |message: String| GrpcSinkBuildError::Address {
            address: cfg.address.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(|e| bad_address(e.to_string()))?;
        endpoint = endpoint
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            if tls.skip_verify {
                return Err(GrpcSinkBuildError::Tls(
                    "skipVerify is not supported for gRPC sinks; trust the server's CA with caFile"
                        .into(),
                ));
            }
            let host = endpoint
                .uri()
                .host()
                .ok_or_else(|| bad_address("no host".into()))?
                .to_owned();
            let read = |path: &str| {
                std::fs::read(path)
                    .map_err(|e| GrpcSinkBuildError::Tls(format!("reading {path}: {e}")))
            };
            let mut config = ClientTlsConfig::new().with_native_roots().domain_name(host);
            if let Some(ca) = &tls.ca_file {
                config = config.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(GrpcSinkBuildError::Tls(
                        "certFile and keyFile go together".into(),
                    ))
                }
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| GrpcSinkBuildError::Tls(e.to_string()))?;
        }
        Ok(GrpcSink {
            address: cfg.address.as_str().into(),
            endpoint: Arc::new(endpoint),
            timeout: cfg.timeout.unwrap_or(DEFAULT_TIMEOUT),
            policy,
            stream: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Sends `event` and waits for its acknowledgement, retrying per the flow's policy.
    pub async fn send(&self, event: &CloudEvent) -> Result<PublishResponse, GrpcDeliveryError> {
        let failed = |code: Code, attempts: u32, message: String| GrpcDeliveryError {
            address: self.address.to_string(),
            code,
            attempts,
            message,
        };
        let ce = to_proto(event).map_err(|m| failed(Code::InvalidArgument, 0, m))?;
        let result = with_retries(&self.policy, |n| {
            let mut ce = ce.clone();
            let span = self.attempt_span(n);
            // The receiver continues the trace from this attempt. The stream, and so its
            // metadata, is shared by every event: the context travels in the event itself
            // (the CloudEvents distributed-tracing extension), replacing the flow span's.
            if let Some(trace) = fiso_runtime::otel::headers_of(&span) {
                set_trace_attributes(&mut ce, &trace);
            }
            let traced = span.clone();
            async move {
                if n > 0 {
                    tracing::debug!(address = %self.address, attempt = n + 1, "retrying gRPC delivery");
                }
                let attempt = match self.attempt(ce).await {
                    Ok(ack) if ack.code == Code::Ok as i32 => Attempt::Success(ack),
                    Ok(ack) => {
                        let code = Code::from(ack.code);
                        if retryable(code) {
                            Attempt::Retryable((code, ack.message), None)
                        } else {
                            Attempt::Permanent((code, ack.message))
                        }
                    }
                    Err((code, message)) => Attempt::Retryable((code, message), None),
                };
                record_attempt(&traced, &attempt);
                attempt
            }
            .instrument(span)
        })
        .await;
        result.map_err(|e| match e {
            RetryError::Permanent((code, message)) => failed(code, 1, message),
            RetryError::Exhausted {
                attempts,
                last: (code, message),
            } => failed(code, attempts, message),
        })
    }

    /// The client span of attempt `n` (0-based), per the RPC semantic conventions: the
    /// event's round trip on the `PublishStream` call, from its send to its acknowledgement.
    fn attempt_span(&self, n: u32) -> tracing::Span {
        if !fiso_runtime::otel::enabled() {
            return tracing::Span::none();
        }
        let (host, port) = http_client::host_and_port(self.endpoint.uri());
        let span = tracing::info_span!(
            "deliver",
            otel.name = "fiso.v1.EventService/PublishStream",
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = "fiso.v1.EventService",
            rpc.method = "PublishStream",
            server.address = host,
            server.port = port,
            fiso.delivery.resend_count = (n > 0).then_some(n),
            rpc.grpc.status_code = Empty,
            error.type = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        fiso_runtime::otel::record_ids(&span);
        span
    }

    /// One send on the stream (opened if needed) and the wait for its acknowledgement.
    async fn attempt(&self, ce: ProtoEvent) -> Result<PublishResponse, (Code, String)> {
        let (events, waiters) = self.open().await?;
        let (tx, rx) = oneshot::channel();
        let id = ce.id.clone();
        lock(&waiters).entry(id.clone()).or_default().push_back(tx);
        if events.send(ce).await.is_err() {
            return Err((Code::Unavailable, "the event stream closed".into()));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err((
                Code::Unavailable,
                "the event stream broke before the acknowledgement".into(),
            )),
            Err(_) => Err((
                Code::DeadlineExceeded,
                format!("no acknowledgement within {:?}", self.timeout),
            )),
        }
    }

    /// The open stream, opening one when there is none (or it broke).
    async fn open(&self) -> Result<(mpsc::Sender<ProtoEvent>, Waiters), (Code, String)> {
        let mut slot = self.stream.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| s.is_open()) {
            return Ok((s.events.clone(), Arc::clone(&s.waiters)));
        }
        let channel: Channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| (Code::Unavailable, format!("connecting: {e}")))?;
        let (events, queue) = mpsc::channel(STREAM_QUEUE);
        let mut client = EventServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut acks = client
            .publish_stream(ReceiverStream::new(queue))
            .await
            .map_err(|s| (s.code(), s.message().to_owned()))?
            .into_inner();
        let waiting: Waiters = Arc::default();
        let reader_waiters = Arc::clone(&waiting);
        let address = Arc::clone(&self.address);
        let ended = CancellationToken::new();
        let end = ended.clone();
        tokio::spawn(async move {
            loop {
                match acks.message().await {
                    Ok(Some(ack)) => {
                        let waiter = lock(&reader_waiters)
                            .get_mut(&ack.id)
                            .and_then(VecDeque::pop_front);
                        match waiter {
                            Some(w) => {
                                let _ = w.send(ack);
                            }
                            None => {
                                tracing::warn!(%address, id = %ack.id, "acknowledgement for an event nobody waits for")
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(%address, code = ?status.code(), message = status.message(), "gRPC event stream failed");
                        break;
                    }
                }
            }
            // Everyone still waiting learns the stream broke (their sender is dropped), and
            // the next delivery opens a new one.
            end.cancel();
            lock(&reader_waiters).clear();
        });
        *slot = Some(EventStream {
            events: events.clone(),
            waiters: Arc::clone(&waiting),
            ended,
        });
        Ok((events, waiting))
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Sink for GrpcSink {
    type Prepared = ();

    fn prepare(&self, _input: &InputEvent, _budget: Budget) -> Result<(), FlowError> {
        Ok(())
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        (): (),
        _ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let ack = self.send(event).await?;
        Ok(Receipt::Response(ack_response(&ack)))
    }
}

impl From<GrpcDeliveryError> for DeliveryError {
    fn from(e: GrpcDeliveryError) -> Self {
        let kind = match e.code {
            Code::Unavailable => DeliveryErrorKind::Unavailable,
            Code::DeadlineExceeded => DeliveryErrorKind::Timeout,
            code if !retryable(code) => DeliveryErrorKind::Rejected,
            _ => DeliveryErrorKind::Other,
        };
        DeliveryError::new(kind, e.attempts, e.to_string())
    }
}

/// The acknowledgement as the answer an HTTP caller gets: `200` with its JSON.
fn ack_response(ack: &PublishResponse) -> SinkResponse {
    let outcome = AckOutcome::try_from(ack.outcome)
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

/// `traceparent` / `tracestate` of the next hop as the event's extension attributes.
fn set_trace_attributes(ce: &mut ProtoEvent, trace: &fiso_runtime::otel::TraceHeaders) {
    for (name, value) in [
        ("traceparent", &trace.traceparent),
        ("tracestate", &trace.tracestate),
    ] {
        match value {
            Some(v) => {
                ce.attributes.insert(
                    name.to_owned(),
                    CloudEventAttributeValue {
                        attr: Some(Attr::CeString(v.clone())),
                    },
                );
            }
            None => {
                ce.attributes.remove(name);
            }
        }
    }
}

/// The acknowledgement's status (or the failure's) on the attempt's span.
fn record_attempt(span: &tracing::Span, attempt: &Attempt<PublishResponse, (Code, String)>) {
    if span.is_disabled() {
        return;
    }
    match attempt {
        Attempt::Success(ack) => rpc_trace::record_code(span, ack.code),
        Attempt::Retryable((code, _), _) | Attempt::Permanent((code, _)) => {
            rpc_trace::record_code(span, *code as i32);
            rpc_trace::failed(span, rpc_trace::code_name(*code as i32));
        }
    }
}

/// Codes worth another attempt.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_for_the_sources() {
        for (code, kind) in [
            (Code::Unavailable, DeliveryErrorKind::Unavailable),
            (Code::DeadlineExceeded, DeliveryErrorKind::Timeout),
            (Code::ResourceExhausted, DeliveryErrorKind::Other),
            (Code::InvalidArgument, DeliveryErrorKind::Rejected),
            (Code::PermissionDenied, DeliveryErrorKind::Rejected),
        ] {
            let e = DeliveryError::from(GrpcDeliveryError {
                address: "127.0.0.1:9".into(),
                code,
                attempts: 2,
                message: "m".into(),
            });
            assert_eq!(
                (e.kind, e.attempts(), e.refusal().is_none()),
                (kind, 2, true)
            );
        }
    }

    #[test]
    fn acknowledgements_are_answered_as_json() {
        let ack = PublishResponse {
            id: "e-1".into(),
            outcome: AckOutcome::DeadLettered as i32,
            code: 0,
            message: String::new(),
            dead_letter_topic: "dlq".into(),
        };
        let r = ack_response(&ack);
        assert_eq!(r.status, axum::http::StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "e-1", "outcome": "OUTCOME_DEAD_LETTERED", "deadLetterTopic": "dlq"})
        );
    }
}
