//! The vocabulary every source and sink shares: what a source hands the pipeline with an event
//! ([`DeliveryContext`], [`Origin`]), what a sink answers ([`Receipt`], [`DeliveryError`]) and
//! what became of the event ([`Outcome`]). Sources turn an [`Outcome`] into their protocol's
//! answer from these types alone, so no source knows any sink.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;

use crate::kafka::client::KafkaDelivery;
use crate::FlowError;

/// The content type of a CloudEvent in structured mode.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The header carrying an event's correlation id on every hop (HTTP, Kafka, dead letters).
pub const CORRELATION_HEADER: &str = "fiso-correlation-id";
/// [`CORRELATION_HEADER`] as an HTTP header name: inserting a header by its text copies the
/// name into a new allocation each time.
pub const CORRELATION_HEADER_NAME: HeaderName = HeaderName::from_static(CORRELATION_HEADER);
/// The W3C trace context headers, read from a request and written on a delivery. Built at
/// compile time: a name built from text is checked again on every use.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Per-event context propagated to the sink.
#[derive(Debug, Clone, Default)]
pub struct DeliveryContext {
    pub correlation_id: String,
    pub traceparent: Option<String>,
    /// The caller's W3C `tracestate`, which travels with `traceparent`.
    pub tracestate: Option<String>,
    /// The source's raw payload (the HTTP request body): the value of a dead letter.
    pub body: Bytes,
    /// Where the event came from, when the source is Kafka: the dead letter's key and
    /// `fiso-original-*` headers.
    pub origin: Option<Origin>,
    /// The source's headers (HTTP request headers, Kafka record headers, gRPC metadata), as
    /// interceptors see them.
    pub headers: Vec<(String, String)>,
    /// Headers interceptors asked to send with the delivery (HTTP request, Kafka record).
    pub sink_headers: Vec<(String, String)>,
}

/// A Kafka source record's coordinates and key.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
}

/// What a sink answered, as an HTTP caller gets it.
#[derive(Debug, Clone)]
pub struct SinkResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    /// The body was longer than the sink's `maxResponseBodySize`: `body` holds its first bytes
    /// only, the rest was never read.
    pub truncated: bool,
}

/// A sink took the event.
#[derive(Debug)]
pub enum Receipt {
    /// The sink's answer: an HTTP sink's response, a gRPC sink's acknowledgement as JSON.
    Response(SinkResponse),
    /// A Kafka broker acknowledged the record.
    Published { topic: String, at: KafkaDelivery },
    /// Temporal started (or signalled) the workflow, or found it already started.
    Started { workflow_id: String, run_id: String },
}

/// What kind of failure ended a delivery: decides a source's answer (HTTP 502 / 503 / 504,
/// gRPC codes) without knowing the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryErrorKind {
    /// The sink refused the event; retrying cannot help.
    Rejected,
    /// The sink did not answer in time.
    Timeout,
    /// The sink could not be reached or asked to back off.
    Unavailable,
    /// Anything else: retries ran out on other errors, the request could not be built, ...
    Other,
}

/// A sink did not take the event: what kind of failure, after how many attempts, with the
/// sink's last answer when it gave one. Displays as the sink's own description of it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub kind: DeliveryErrorKind,
    /// Attempts actually made (`fiso-retry-count`).
    pub attempts: u32,
    /// The sink's last answer, when it answered at all.
    pub response: Option<SinkResponse>,
    message: String,
}

impl DeliveryError {
    pub fn new(kind: DeliveryErrorKind, attempts: u32, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            attempts,
            response: None,
            message: message.into(),
        }
    }

    /// With the sink's last answer.
    pub fn with_response(mut self, response: SinkResponse) -> Self {
        self.response = Some(response);
        self
    }

    /// Attempts made (the real count, for `fiso-retry-count`).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The sink's last status, when it answered at all.
    pub fn sink_status(&self) -> Option<StatusCode> {
        self.response.as_ref().map(|r| r.status)
    }

    /// The sink's answer refusing the event, when it gave one: what a request-response source
    /// relays to its caller.
    pub fn refusal(&self) -> Option<&SinkResponse> {
        match self.kind {
            DeliveryErrorKind::Rejected => self.response.as_ref(),
            _ => None,
        }
    }
}

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// The sink took the event.
    Delivered(Receipt),
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

impl Outcome {
    /// The stable code of a failure (`error.type` of the event's span); `None` when delivered.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Outcome::Delivered(_) => None,
            Outcome::DeadLettered { .. } => Some("DEAD_LETTERED"),
            Outcome::Invalid(e) => Some(e.code()),
            Outcome::Rejected { .. } => Some("INTERCEPTOR_REJECTED"),
            Outcome::Failed(_) => Some("SINK_DELIVERY_FAILED"),
        }
    }
}
