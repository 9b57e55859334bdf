//! A message of the HTTP or Kafka binding as a flow's input event. The content type decides
//! (http-protocol-binding §3, kafka-protocol-binding §3): `application/cloudevents+json` is a
//! structured CloudEvent, a `specversion` attribute header makes a binary-mode one, and anything
//! else is a bare JSON payload — read as the structured CloudEvent it is when the content type
//! is JSON or absent and the body is an object with `specversion` ([`is_json_or_none`]).
//! Batched mode and other event formats are refused. Everything not valid is
//! [`FlowError::InvalidInput`].

use bytes::Bytes;
use serde_json::Value as Json;

use super::carried_json::CarriedJson;
use super::cloudevent::Data;
use super::header_binding::Binding;
use super::input::EventDefaults;
use super::json_format;
use super::media_type::{is_json_or_none, MediaType, MessageMode};
use super::payload_keys::PayloadKeys;
use crate::{FlowError, InputEvent};

/// The input event of a message: its headers (name, raw value), content type and body.
pub fn read(
    binding: Binding,
    headers: &[(&str, &[u8])],
    content_type: Option<&str>,
    body: Bytes,
    defaults: EventDefaults<'_>,
) -> Result<InputEvent, FlowError> {
    let received_at = defaults.received_at;
    match content_type.map(MediaType::message_mode) {
        Some(MessageMode::Structured) => {
            let event = json_format::from_json(parse_json(binding, &body)?)?;
            return Ok(InputEvent::from_event(event, received_at));
        }
        Some(MessageMode::Batched) => {
            return Err(FlowError::invalid_input(
                "batched mode (application/cloudevents-batch+json) is not accepted: send one event per message",
            ))
        }
        Some(MessageMode::UnknownFormat) => {
            return Err(FlowError::invalid_input(format!(
                "the event format of content type {:?} is not supported: send application/cloudevents+json, or binary mode",
                content_type.unwrap_or_default()
            )))
        }
        Some(MessageMode::Binary) | None => {}
    }
    if binding.is_event(headers.iter().map(|(name, _)| *name)) {
        let event = binding.read(headers.iter().copied(), content_type, body)?;
        return Ok(InputEvent::from_event(event, received_at));
    }
    if body.is_empty() {
        return Err(FlowError::invalid_input(format!(
            "{} is empty; send a JSON payload or a CloudEvent",
            what(binding)
        )));
    }
    if matches!(defaults.payload_keys, PayloadKeys::Carried) {
        if let Some(json) = CarriedJson::read(&body) {
            return Ok(InputEvent::from_payload(Data::CarriedJson(json), defaults));
        }
    }
    let payload = defaults
        .payload_keys
        .parse(&body)
        .map_err(|e| not_json(binding, e))?;
    match payload {
        Json::Object(map) if is_json_or_none(content_type) && map.contains_key("specversion") => {
            // An event is read whole, whatever the flow reads of a payload.
            let map = match defaults.payload_keys {
                PayloadKeys::Only(_) => match parse_json(binding, &body)? {
                    Json::Object(whole) => whole,
                    _ => map,
                },
                PayloadKeys::All | PayloadKeys::Carried => map,
            };
            let event = json_format::from_map(map)?;
            Ok(InputEvent::from_event(event, received_at))
        }
        payload => Ok(InputEvent::from_payload(Data::Json(payload), defaults)),
    }
}

fn what(binding: Binding) -> &'static str {
    match binding {
        Binding::Http => "the body",
        Binding::Kafka => "the record value",
    }
}

fn parse_json(binding: Binding, body: &[u8]) -> Result<Json, FlowError> {
    serde_json::from_slice(body).map_err(|e| not_json(binding, e))
}

fn not_json(binding: Binding, e: serde_json::Error) -> FlowError {
    FlowError::invalid_input(format!("{} is not valid JSON: {e}", what(binding)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowDefaults;
    use serde_json::json;

    fn read_reading(keys: &[&str], body: &[u8]) -> Result<InputEvent, FlowError> {
        let flow = FlowDefaults::new("f").reading(PayloadKeys::only(
            keys.iter().map(|k| (*k).to_owned()).collect(),
        ));
        read(
            Binding::Http,
            &[],
            None,
            Bytes::copy_from_slice(body),
            flow.event(),
        )
    }

    #[test]
    fn a_payload_is_read_as_far_as_the_flow_reads_it() {
        let event = read_reading(&["a"], br#"{"a": 1, "b": {"c": [2]}}"#).unwrap();
        assert_eq!(event.data_json(), json!({"a": 1}));
    }

    fn read_carrying(body: &[u8]) -> InputEvent {
        let flow = FlowDefaults::new("f").reading(PayloadKeys::Carried);
        read(
            Binding::Kafka,
            &[],
            None,
            Bytes::copy_from_slice(body),
            flow.event(),
        )
        .unwrap()
    }

    #[test]
    fn a_payload_the_flow_carries_is_kept_as_its_text_when_that_is_how_it_is_written() {
        let event = read_carrying(br#"{"a":1,"b":[2.5,"x"]}"#);
        assert!(
            matches!(event.data(), Some(Data::CarriedJson(json)) if json.text() == r#"{"a":1,"b":[2.5,"x"]}"#)
        );
        assert_eq!(event.data_json(), json!({"a": 1, "b": [2.5, "x"]}));
        let spaced = read_carrying(br#"{"a": 1}"#);
        assert_eq!(spaced.data(), Some(&Data::Json(json!({"a": 1}))));
        let event =
            read_carrying(br#"{"specversion":"1.0","id":"e-2","source":"s","type":"t","data":1}"#);
        assert_eq!(event.id(), "e-2");
    }

    #[test]
    fn a_structured_event_among_payloads_is_read_whole() {
        let body =
            br#"{"specversion": "1.0", "id": "e-1", "source": "s", "type": "t", "data": {"b": 2}}"#;
        let event = read_reading(&["a"], body).unwrap();
        assert_eq!(event.id(), "e-1");
        assert_eq!(event.data_json(), json!({"b": 2}));
    }

    #[test]
    fn a_payload_broken_where_the_flow_does_not_read_is_still_refused() {
        let e = read_reading(&["a"], br#"{"a": 1, "b": [1,}"#).unwrap_err();
        assert_eq!(e.code(), "INPUT_INVALID");
        assert!(e.to_string().contains("the body is not valid JSON"), "{e}");
    }
}
