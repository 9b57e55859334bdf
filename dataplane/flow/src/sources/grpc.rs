//! gRPC source: `fiso.v1.EventService` on the flow's `listenAddr`, with the standard health
//! service and server reflection (so `grpcurl` can call it without the `.proto`).
//!
//! `Publish` answers once the event was delivered or dead-lettered; otherwise with a status:
//! INVALID_ARGUMENT (bad input, transform or envelope failure), FAILED_PRECONDITION (the sink
//! refused the event), UNAVAILABLE (delivery failed), RESOURCE_EXHAUSTED (more than
//! [`MAX_IN_FLIGHT`] events in flight). `PublishStream` answers every event on the stream with a
//! `PublishResponse` carrying its id, outcome and that same code; a failed event does not end
//! the stream. Up to [`STREAM_WINDOW`] events of one stream are processed at once, answered in
//! order; HTTP/2 flow control holds the client back beyond that.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use fiso_config::common::ByteSize;
use fiso_config::flow::GrpcSourceConfig;
use fiso_runtime::addr::parse_listen_addr;
use fiso_runtime::server::DEFAULT_READ_HEADER_TIMEOUT;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

use super::grpc_incoming::incoming;
use super::request::{correlation_id, text_headers, traceparent, tracestate};
use crate::event::protobuf::proto::fiso::v1::event_service_server::{
    EventService, EventServiceServer,
};
use crate::event::protobuf::proto::fiso::v1::{Outcome as AckOutcome, PublishResponse};
use crate::event::protobuf::proto::io::cloudevents::v1::CloudEvent;
use crate::event::protobuf::{from_proto, proto, Incoming};
use crate::pipeline::delivery::{DeliveryContext, Outcome};
use crate::pipeline::Pipeline;
use crate::{Data, FlowError, InputEvent};

/// Events one gRPC source processes at once before `Publish` answers RESOURCE_EXHAUSTED.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Events of one stream processed at once.
pub const STREAM_WINDOW: usize = 32;
/// A connection that received nothing for this long is PINGed, and closed if the PING is not
/// answered within [`H2_KEEPALIVE_TIMEOUT`] (its calls are abandoned).
pub const H2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
pub const H2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default `maxMessageSize`.
pub const DEFAULT_MAX_MESSAGE_SIZE: ByteSize = ByteSize::mib(4);

#[derive(Debug, thiserror::Error)]
pub enum GrpcSourceError {
    #[error("grpc source: {0}")]
    Config(String),
    #[error(
        "grpc source cannot listen on {addr}: {source}{}",
        fiso_runtime::addr::bind_hint(source)
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc source server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A gRPC source: `fiso.v1.EventService` on its listen address.
#[derive(Debug, Clone)]
pub struct GrpcSource {
    cfg: GrpcSourceConfig,
}

impl GrpcSource {
    pub fn new(cfg: &GrpcSourceConfig) -> Self {
        GrpcSource { cfg: cfg.clone() }
    }

    /// Serves `flow`'s gRPC source until `cancel`; `ready` is called once it listens.
    pub async fn run(
        &self,
        flow: &Arc<Pipeline>,
        cancel: &CancellationToken,
        ready: impl FnOnce(),
    ) -> Result<(), GrpcSourceError> {
        serve(&self.cfg, flow, cancel, ready).await
    }
}

async fn serve(
    cfg: &GrpcSourceConfig,
    flow: &Arc<Pipeline>,
    cancel: &CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), GrpcSourceError> {
    let addr =
        parse_listen_addr(&cfg.listen_addr).map_err(|e| GrpcSourceError::Config(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| GrpcSourceError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| GrpcSourceError::Bind { addr, source })?;
    let max = usize::try_from(cfg.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE).0)
        .unwrap_or(usize::MAX);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EventServiceServer<Ingest>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GrpcSourceError::Config(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| GrpcSourceError::Config(e.to_string()))?;
    let ingest = Ingest {
        flow: Arc::clone(flow),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    let events = EventServiceServer::new(ingest)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    tracing::info!(addr = %local, listen_addr = %cfg.listen_addr, flow = %flow.name, "grpc source listening");
    ready();
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(H2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(H2_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(events)
        .serve_with_incoming_shutdown(
            incoming(listener, DEFAULT_READ_HEADER_TIMEOUT),
            cancel.cancelled(),
        )
        .await?;
    Ok(())
}

/// The `EventService` of one flow.
#[derive(Clone)]
struct Ingest {
    flow: Arc<Pipeline>,
    in_flight: Arc<Semaphore>,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<PublishResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Ingest {
    async fn publish(
        &self,
        request: Request<CloudEvent>,
    ) -> Result<Response<PublishResponse>, Status> {
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "flow {} has {MAX_IN_FLIGHT} events in flight; retry later",
                self.flow.name
            )));
        };
        let headers = request.metadata().clone().into_headers();
        let ack = self.one(request.into_inner(), &headers).await;
        if ack.code == Code::Ok as i32 {
            Ok(Response::new(ack))
        } else {
            Err(Status::new(Code::from(ack.code), ack.message))
        }
    }

    type PublishStreamStream = AckStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<CloudEvent>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let headers = Arc::new(request.metadata().clone().into_headers());
        let this = self.clone();
        let acks = request
            .into_inner()
            .map(move |received| {
                let (this, headers) = (this.clone(), Arc::clone(&headers));
                async move {
                    let ce = received?;
                    let _permit = this.in_flight.clone().acquire_owned().await;
                    Ok(this.one(ce, &headers).await)
                }
            })
            .buffered(STREAM_WINDOW);
        Ok(Response::new(Box::pin(acks)))
    }
}

impl Ingest {
    /// One event through the flow, and the answer for its sender.
    async fn one(&self, ce: CloudEvent, headers: &axum::http::HeaderMap) -> PublishResponse {
        let flow = &self.flow;
        let sent_id = ce.id.clone();
        let encoded = ce.encode_to_vec();
        let defaults = flow.compiled().defaults().event();
        let received_at = defaults.received_at;
        // The DLQ keeps what was sent: the event in the JSON format when it was readable.
        let as_json = |json: serde_json::Result<Vec<u8>>, encoded: Vec<u8>| {
            Bytes::from(json.unwrap_or(encoded))
        };
        let (input, body) = match from_proto(ce) {
            Ok(Incoming::Event(event)) => {
                let body = as_json(crate::event::json_format::to_vec(&event), encoded);
                (Ok(InputEvent::from_event(*event, received_at)), body)
            }
            Ok(Incoming::Payload(json)) => {
                let body = as_json(crate::event::json::to_vec_plain(&json), encoded);
                (
                    Ok(InputEvent::from_payload(Data::Json(json), defaults)),
                    body,
                )
            }
            Err(e) => (Err(FlowError::from(e)), Bytes::from(encoded)),
        };
        let id = input.as_ref().map(|e| e.id().to_owned()).unwrap_or(sent_id);
        let ctx = DeliveryContext {
            correlation_id: correlation_id(headers),
            traceparent: traceparent(headers),
            tracestate: tracestate(headers),
            body,
            origin: None,
            headers: if flow.has_interceptors() {
                text_headers(headers)
            } else {
                Vec::new()
            },
            sink_headers: Vec::new(),
        };
        let ack = |outcome: AckOutcome, code: Code, message: String| PublishResponse {
            id: id.clone(),
            outcome: outcome as i32,
            code: code as i32,
            message,
            dead_letter_topic: String::new(),
        };
        match flow.handle(input, &ctx).await {
            Outcome::Delivered(_) => ack(AckOutcome::Delivered, Code::Ok, String::new()),
            Outcome::DeadLettered { error, topic, .. } => PublishResponse {
                dead_letter_topic: topic,
                ..ack(AckOutcome::DeadLettered, Code::Ok, error.to_string())
            },
            Outcome::Invalid(e @ FlowError::Interceptor(_)) => ack(
                AckOutcome::Failed,
                Code::Internal,
                format!("{}: {e}", e.code()),
            ),
            Outcome::Invalid(e) => ack(
                AckOutcome::Rejected,
                Code::InvalidArgument,
                format!("{}: {e}", e.code()),
            ),
            Outcome::Rejected {
                status,
                reason,
                module,
            } => ack(
                AckOutcome::Rejected,
                rejection_code(status),
                format!("INTERCEPTOR_REJECTED ({module}, {status}): {reason}"),
            ),
            // The sink answered that it refuses the event.
            Outcome::Failed(e) if e.refusal().is_some() => ack(
                AckOutcome::Failed,
                Code::FailedPrecondition,
                format!("SINK_DELIVERY_FAILED: {e}"),
            ),
            Outcome::Failed(e) => ack(
                AckOutcome::Failed,
                Code::Unavailable,
                format!("SINK_DELIVERY_FAILED: {e}"),
            ),
        }
    }
}

/// The gRPC code closest to the HTTP status an interceptor rejected an event with.
fn rejection_code(status: u16) -> Code {
    match status {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        500..=599 => Code::Internal,
        _ => Code::FailedPrecondition,
    }
}
