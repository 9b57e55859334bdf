//! One Kafka record through the flow: its value (a bare JSON payload or a CloudEvent in the
//! Kafka binding) becomes an event; `Ok` once it was delivered or dead-lettered.

use std::sync::Arc;

use bytes::Bytes;
use fiso_runtime::outline;
use rdkafka::message::{Headers, Message};
use tokio::runtime::Handle;

use super::state::KafkaSourceError;
use crate::event::header_binding::Binding;
use crate::event::input::{kafka_id, EventDefaults};
use crate::event::message;
use crate::pipeline::delivery::{DeliveryContext, Origin, Outcome, CORRELATION_HEADER};
use crate::pipeline::Pipeline;
use crate::{FlowError, InputEvent};

/// One record through the flow: `Ok` once it was delivered or dead-lettered. `shared` is the
/// process's shared runtime, where a heavy flow's events are handled ([`handle_shared`]).
pub(super) async fn process(
    flow: &Arc<Pipeline>,
    m: &impl Message,
    shared: &Handle,
) -> Result<(), KafkaSourceError> {
    // Read apart: only the context is kept across the delivery, so this future (one per record
    // in flight, moved into its worker's set) stays small.
    let (input, ctx) = read(flow, m);
    let undelivered = |reason: String| KafkaSourceError::Undelivered {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        reason,
    };
    let outcome = if flow.is_heavy() {
        match outline::boxed(|| handle_shared(shared, flow, input, &ctx)).await {
            Some(outcome) => outcome,
            None => return Err(undelivered("the process is stopping".to_owned())),
        }
    } else {
        flow.handle(input, &ctx).await
    };
    match outcome {
        // A rejection is the interceptor's decision about this record: logged, committed.
        Outcome::Rejected { .. } => Ok(()),
        Outcome::Delivered(_) | Outcome::DeadLettered { .. } => Ok(()),
        Outcome::Failed(e) => Err(undelivered(e.to_string())),
        // Apart: off the hot path, and as large as a Kafka produce.
        Outcome::Invalid(e) => match outline::boxed(|| flow.dead_letter_refused(&e, &ctx)).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(undelivered(format!(
                "{}: {e} (no dead-letter queue)",
                e.code()
            ))),
            Err(dlq) => Err(undelivered(format!(
                "{}: {e}; DLQ write failed: {dlq}",
                e.code()
            ))),
        },
    }
}

/// The handling of an event of a flow whose events may evaluate long (loops in its CEL), on
/// the process's shared runtime, where a long evaluation hands its worker's queue to another
/// thread: on a core's thread it would hold up every partition of that core, other flows'
/// included. `None` when that runtime is shutting down.
async fn handle_shared(
    shared: &Handle,
    flow: &Arc<Pipeline>,
    input: Result<InputEvent, FlowError>,
    ctx: &DeliveryContext,
) -> Option<Outcome> {
    let (flow, ctx) = (Arc::clone(flow), ctx.clone());
    match shared
        .spawn(async move { flow.handle(input, &ctx).await })
        .await
    {
        Ok(outcome) => Some(outcome),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// A record's event (or why it is not one) and its delivery context.
fn read(flow: &Pipeline, m: &impl Message) -> (Result<InputEvent, FlowError>, DeliveryContext) {
    let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
    let raw: Vec<(&str, &[u8])> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    // The headers with a UTF-8 value, as text.
    let text = || {
        raw.iter()
            .filter_map(|(k, v)| Some((*k, std::str::from_utf8(v).ok()?)))
    };
    let header = |name: &str| {
        text()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
    };
    // The only copy of the payload: librdkafka's buffer is released once the record is done.
    let body = Bytes::copy_from_slice(m.payload().unwrap_or_default());
    let received_at = m
        .timestamp()
        .to_millis()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_else(chrono::Utc::now);
    let defaults = flow
        .compiled()
        .defaults()
        .event_received_at(received_at)
        .with_kafka_id(topic, partition, offset);
    let input = parse_record(&raw, body.clone(), defaults);
    let correlation_id = header(CORRELATION_HEADER)
        .filter(|v| !v.trim().is_empty())
        .or_else(|| input.as_ref().ok().map(|e| e.id().to_owned()))
        .unwrap_or_else(|| kafka_id(topic, partition, offset));
    let ctx = DeliveryContext {
        correlation_id,
        traceparent: header("traceparent").or_else(|| header("ce_traceparent")),
        tracestate: header("tracestate").or_else(|| header("ce_tracestate")),
        body,
        origin: Some(Origin {
            topic: topic.to_owned(),
            partition,
            offset,
            key: m.key().map(<[u8]>::to_vec),
        }),
        headers: if flow.has_interceptors() {
            text().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
        } else {
            Vec::new()
        },
        sink_headers: Vec::new(),
    };
    (input, ctx)
}

/// The event of a record ([`message::read`]).
fn parse_record(
    headers: &[(&str, &[u8])],
    body: Bytes,
    defaults: EventDefaults<'_>,
) -> Result<InputEvent, FlowError> {
    let content_type = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        None => None,
        Some((_, v)) => Some(
            std::str::from_utf8(v)
                .map_err(|_| FlowError::invalid_input("the content-type header is not UTF-8"))?,
        ),
    };
    message::read(Binding::Kafka, headers, content_type, body, defaults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Data;
    use crate::FlowDefaults;

    fn parse(headers: &[(&str, &str)], body: &[u8]) -> Result<InputEvent, FlowError> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let defaults = FlowDefaults::new("f");
        parse_record(
            &headers,
            Bytes::copy_from_slice(body),
            defaults.event().with_kafka_id("t", 0, 7),
        )
    }

    #[test]
    fn a_bare_payload_gets_the_record_id() {
        let e = parse(&[("x", "y")], br#"{"a":1}"#).unwrap();
        assert_eq!(e.id(), "t-0-7");
        assert_eq!(e.source(), "fiso-flow/f");
        assert_eq!(e.data(), Some(&Data::Json(serde_json::json!({"a": 1}))));
    }

    #[test]
    fn ce_headers_are_attributes() {
        let e = parse(
            &[
                ("ce_specversion", "1.0"),
                ("ce_id", "own"),
                ("ce_type", "order.paid"),
                ("ce_source", "/shop"),
                ("ce_myext", "v"),
                ("content-type", "application/json"),
            ],
            br#"{"a":1}"#,
        )
        .unwrap();
        assert_eq!(e.id(), "own");
        assert_eq!(e.type_(), "order.paid");
        assert_eq!(e.source(), "/shop");
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert!(e.extensions().contains_key("myext"));

        let e = parse(
            &[
                ("ce_specversion", "1.0"),
                ("ce_id", "own"),
                ("ce_type", "t"),
                ("ce_source", "s"),
                ("content-type", "text/plain"),
            ],
            b"hello",
        )
        .unwrap();
        assert_eq!(e.data(), Some(&Data::Text("hello".into())));
    }

    #[test]
    fn a_binary_mode_event_needs_its_required_attributes() {
        let e = parse(
            &[
                ("ce_specversion", "1.0"),
                ("ce_type", "t"),
                ("ce_source", "/s"),
            ],
            b"{}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("`id`: is required"), "{e}");
    }

    #[test]
    fn the_content_type_decides_the_mode() {
        let structured = br#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":1}"#;
        let ce = [(
            "content-type",
            "application/cloudevents+json; charset=UTF-8",
        )];
        assert_eq!(parse(&ce, structured).unwrap().id(), "s-1");
        // Without a content-type header an object with `specversion` is a structured event...
        assert_eq!(parse(&[], structured).unwrap().id(), "s-1");
        // ...and with a JSON one; with another it is a payload.
        let e = parse(&[("content-type", "application/json")], structured).unwrap();
        assert_eq!(e.id(), "s-1");
        let e = parse(&[("content-type", "text/plain")], structured).unwrap();
        assert_eq!(e.id(), "t-0-7");
        let avro = [("content-type", "application/cloudevents+avro")];
        assert_eq!(parse(&avro, b"x").unwrap_err().code(), "INPUT_INVALID");
    }

    #[test]
    fn invalid_values_are_invalid_input() {
        for body in [&b"not json{"[..], b""] {
            let e = parse(&[], body).unwrap_err();
            assert_eq!(e.code(), "INPUT_INVALID", "{e}");
        }
    }
}
