//! One Kafka record through the flow: its value (a bare JSON payload or a CloudEvent in the
//! Kafka binding) becomes an event; `Ok` once it was delivered or dead-lettered.

use bytes::Bytes;
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::{Map, Value};

use super::state::KafkaSourceError;
use crate::pipeline::delivery::{DeliveryContext, Origin, Outcome, CORRELATION_HEADER};
use crate::pipeline::Pipeline;
use crate::{FlowError, InputEvent};

/// One record through the flow: `Ok` once it was delivered or dead-lettered.
pub(super) async fn process(flow: &Pipeline, m: &OwnedMessage) -> Result<(), KafkaSourceError> {
    let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
    let kafka_id = format!("{topic}-{partition}-{offset}");
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                headers.push((h.key.to_owned(), v.to_owned()));
            }
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = Bytes::copy_from_slice(m.payload().unwrap_or_default());
    let mut defaults = flow
        .compiled()
        .defaults()
        .event()
        .with_kafka_id(&topic, partition, offset);
    if let Some(ms) = m.timestamp().to_millis() {
        if let Some(at) = chrono::DateTime::from_timestamp_millis(ms) {
            defaults = defaults.received_at(at);
        }
    }
    let input = parse_record(&headers, &body, &kafka_id, defaults);
    let correlation_id = header(CORRELATION_HEADER)
        .filter(|v| !v.trim().is_empty())
        .or_else(|| input.as_ref().ok().map(|e| e.id().to_owned()))
        .unwrap_or_else(|| kafka_id.clone());
    let ctx = DeliveryContext {
        correlation_id,
        traceparent: header("traceparent").or_else(|| header("ce_traceparent")),
        body,
        origin: Some(Origin {
            topic: topic.clone(),
            partition,
            offset,
            key: m.key().map(<[u8]>::to_vec),
        }),
        headers: if flow.has_interceptors() {
            headers.clone()
        } else {
            Vec::new()
        },
        sink_headers: Vec::new(),
    };
    let undelivered = |reason: String| KafkaSourceError::Undelivered {
        topic: topic.clone(),
        partition,
        offset,
        reason,
    };
    match flow.handle(input, &ctx).await {
        // A rejection is the interceptor's decision about this record: logged, committed.
        Outcome::Rejected { .. } => Ok(()),
        Outcome::Delivered(_) | Outcome::DeadLettered { .. } => Ok(()),
        Outcome::Failed(e) => Err(undelivered(e.to_string())),
        Outcome::Invalid(e) => match flow.dead_letter_refused(&e, &ctx).await {
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

/// A record's value as JSON: a bare payload or a structured CloudEvent; with `ce_specversion`
/// among the headers, a binary-mode CloudEvent whose attributes are the `ce_*` headers.
fn parse_record(
    headers: &[(String, String)],
    body: &[u8],
    kafka_id: &str,
    defaults: crate::event::input::EventDefaults<'_>,
) -> Result<InputEvent, FlowError> {
    let invalid = |message: String| FlowError::InvalidInput { message };
    let value = |body: &[u8]| -> Result<Value, FlowError> {
        serde_json::from_slice(body)
            .map_err(|e| invalid(format!("record value is not valid JSON: {e}")))
    };
    if headers.iter().any(|(k, _)| k == "ce_specversion") {
        let mut obj = Map::new();
        for (k, v) in headers {
            if let Some(attr) = k.strip_prefix("ce_") {
                obj.insert(attr.to_owned(), Value::String(v.clone()));
            }
        }
        obj.entry("id")
            .or_insert_with(|| Value::String(kafka_id.to_owned()));
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        let data = if body.is_empty() {
            Value::Null
        } else if content_type.is_none_or(|ct| ct.contains("json")) {
            value(body)?
        } else {
            Value::String(
                String::from_utf8(body.to_vec())
                    .map_err(|_| invalid("binary-mode value is not UTF-8 text".into()))?,
            )
        };
        if let Some(ct) = content_type {
            obj.insert("datacontenttype".into(), Value::String(ct.to_owned()));
        }
        obj.insert("data".into(), data);
        return InputEvent::from_json(Value::Object(obj), defaults);
    }
    if body.is_empty() {
        return Err(invalid("the record has no value".into()));
    }
    InputEvent::from_json(value(body)?, defaults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowDefaults;

    fn parse(headers: &[(&str, &str)], body: &[u8]) -> Result<InputEvent, FlowError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let defaults = FlowDefaults::new("f");
        parse_record(
            &headers,
            body,
            "t-0-7",
            defaults.event().with_kafka_id("t", 0, 7),
        )
    }

    #[test]
    fn a_bare_payload_gets_the_record_id() {
        let e = parse(&[("x", "y")], br#"{"a":1}"#).unwrap();
        assert_eq!(e.id(), "t-0-7");
        assert_eq!(e.source(), "fiso-flow/f");
        assert_eq!(e.data(), &serde_json::json!({"a": 1}));
    }

    #[test]
    fn ce_headers_are_attributes() {
        let e = parse(
            &[
                ("ce_specversion", "1.0"),
                ("ce_type", "order.paid"),
                ("ce_source", "/shop"),
                ("ce_myext", "v"),
                ("content-type", "application/json"),
            ],
            br#"{"a":1}"#,
        )
        .unwrap();
        assert_eq!(e.id(), "t-0-7", "no ce_id: the record's coordinates");
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
        assert_eq!(e.id(), "own");
        assert_eq!(e.data(), &serde_json::json!("hello"));
    }

    #[test]
    fn invalid_values_are_invalid_input() {
        for body in [&b"not json{"[..], b""] {
            let e = parse(&[], body).unwrap_err();
            assert_eq!(e.code(), "INPUT_INVALID", "{e}");
        }
    }
}
