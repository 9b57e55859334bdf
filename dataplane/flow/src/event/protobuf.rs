//! gRPC: the generated `fiso.v1.EventService` and the CloudEvents Protobuf format
//! (`io.cloudevents.v1.CloudEvent`), and the conversions between that format and the events a
//! flow handles.

/// Code generated from `proto/` (see `build.rs`).
pub mod proto {
    pub mod io {
        pub mod cloudevents {
            pub mod v1 {
                tonic::include_proto!("io.cloudevents.v1");
            }
        }
    }
    pub mod fiso {
        pub mod v1 {
            tonic::include_proto!("fiso.v1");
        }
    }
    /// The descriptor set served by gRPC reflection.
    pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fiso_descriptor");
}

use base64::Engine;
use cloudevents::event::{AttributesReader, Data, ExtensionValue};
use cloudevents::Event;
use serde_json::{Map, Value};

use crate::event::json;
use crate::FlowError;
use proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use proto::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data as ProtoData};
use proto::io::cloudevents::v1::CloudEvent;

fn invalid(message: impl Into<String>) -> FlowError {
    FlowError::InvalidInput {
        message: message.into(),
    }
}

/// A received CloudEvent as the JSON a flow reads: a structured CloudEvent (JSON format), or —
/// with no `spec_version` — the bare payload in its data. JSON data (`datacontenttype` JSON or
/// absent) is parsed; other text stays a string; other bytes become `data_base64`.
pub fn event_json(ce: &CloudEvent) -> Result<Value, FlowError> {
    let content_type = match ce
        .attributes
        .get("datacontenttype")
        .and_then(|a| a.attr.as_ref())
    {
        Some(Attr::CeString(s)) => Some(s.as_str()),
        _ => None,
    };
    let is_json = content_type.is_none_or(|ct| ct.contains("json"));
    let data = match &ce.data {
        None => None,
        Some(ProtoData::TextData(text)) if is_json => Some(("data", parse_json(text.as_bytes())?)),
        Some(ProtoData::TextData(text)) => Some(("data", Value::String(text.clone()))),
        Some(ProtoData::BinaryData(bytes)) if is_json => Some(("data", parse_json(bytes)?)),
        Some(ProtoData::BinaryData(bytes)) => Some((
            "data_base64",
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        )),
        Some(ProtoData::ProtoData(any)) => {
            return Err(invalid(format!(
                "proto_data ({}) is not supported: send JSON as text_data or binary_data",
                any.type_url
            )))
        }
    };
    if ce.spec_version.is_empty() {
        return match data {
            Some(("data", payload)) => Ok(payload),
            _ => Err(invalid(
                "an event without spec_version is a bare payload and needs JSON text_data or binary_data",
            )),
        };
    }
    let mut obj = Map::new();
    obj.insert("specversion".into(), Value::String(ce.spec_version.clone()));
    for (key, value) in [("id", &ce.id), ("source", &ce.source), ("type", &ce.r#type)] {
        if !value.is_empty() {
            obj.insert(key.into(), Value::String(value.clone()));
        }
    }
    for (name, value) in &ce.attributes {
        obj.insert(name.clone(), attribute_json(name, value)?);
    }
    if let Some((key, value)) = data {
        obj.insert(key.into(), value);
    }
    Ok(Value::Object(obj))
}

fn parse_json(bytes: &[u8]) -> Result<Value, FlowError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("event data is not valid JSON: {e}")))
}

fn attribute_json(name: &str, value: &CloudEventAttributeValue) -> Result<Value, FlowError> {
    Ok(match &value.attr {
        Some(Attr::CeBoolean(b)) => Value::Bool(*b),
        Some(Attr::CeInteger(i)) => Value::from(*i),
        Some(Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s)) => Value::String(s.clone()),
        Some(Attr::CeBytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Attr::CeTimestamp(t)) => {
            let at = chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                .ok_or_else(|| invalid(format!("attribute {name}: timestamp out of range")))?;
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        None => return Err(invalid(format!("attribute {name} has no value"))),
    })
}

/// A flow's CloudEvent in the Protobuf format: JSON data as `text_data`
/// (`datacontenttype: application/json`), text as `text_data`, bytes as `binary_data`.
pub fn to_proto(event: &Event) -> Result<CloudEvent, String> {
    let string = |s: String| CloudEventAttributeValue {
        attr: Some(Attr::CeString(s)),
    };
    let mut attributes = std::collections::HashMap::new();
    if let Some(s) = event.subject() {
        attributes.insert("subject".to_owned(), string(s.to_owned()));
    }
    if let Some(t) = event.time() {
        attributes.insert(
            "time".to_owned(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeTimestamp(prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                })),
            },
        );
    }
    if let Some(s) = event.dataschema() {
        attributes.insert(
            "dataschema".to_owned(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeUri(s.to_string())),
            },
        );
    }
    for (name, value) in event.iter_extensions() {
        let attr = match value {
            ExtensionValue::String(s) => Attr::CeString(s.clone()),
            ExtensionValue::Boolean(b) => Attr::CeBoolean(*b),
            ExtensionValue::Integer(i) => match i32::try_from(*i) {
                Ok(i) => Attr::CeInteger(i),
                Err(_) => Attr::CeString(i.to_string()),
            },
        };
        attributes.insert(
            name.to_owned(),
            CloudEventAttributeValue { attr: Some(attr) },
        );
    }
    let data = match event.data() {
        None => None,
        Some(Data::Json(v)) => Some(ProtoData::TextData(
            json::to_string_plain(v).map_err(|e| e.to_string())?,
        )),
        Some(Data::String(s)) => Some(ProtoData::TextData(s.clone())),
        Some(Data::Binary(b)) => Some(ProtoData::BinaryData(b.clone())),
    };
    let content_type = match (event.datacontenttype(), &data) {
        (Some(ct), _) => Some(ct.to_owned()),
        (None, Some(ProtoData::TextData(_))) => Some("application/json".to_owned()),
        _ => None,
    };
    if let Some(ct) = content_type {
        attributes.insert("datacontenttype".to_owned(), string(ct));
    }
    Ok(CloudEvent {
        id: event.id().to_owned(),
        source: event.source().to_string(),
        spec_version: event.specversion().to_string(),
        r#type: event.ty().to_owned(),
        attributes,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(ct: Option<&str>, data: &str) -> CloudEvent {
        let mut ce = CloudEvent {
            id: "e-1".into(),
            source: "/shop".into(),
            spec_version: "1.0".into(),
            r#type: "order.created".into(),
            data: Some(ProtoData::TextData(data.into())),
            ..Default::default()
        };
        if let Some(ct) = ct {
            ce.attributes.insert(
                "datacontenttype".into(),
                CloudEventAttributeValue {
                    attr: Some(Attr::CeString(ct.into())),
                },
            );
        }
        ce
    }

    #[test]
    fn a_structured_event_with_json_data() {
        let mut ce = text(Some("application/json"), r#"{"n":1}"#);
        ce.attributes.insert(
            "priority".into(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeInteger(3)),
            },
        );
        assert_eq!(
            event_json(&ce).unwrap(),
            json!({"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "order.created",
                   "datacontenttype": "application/json", "priority": 3, "data": {"n": 1}})
        );
    }

    #[test]
    fn bare_payloads_text_and_bytes() {
        let mut ce = CloudEvent {
            data: Some(ProtoData::BinaryData(br#"{"order_id":"1"}"#.to_vec())),
            ..Default::default()
        };
        assert_eq!(event_json(&ce).unwrap(), json!({"order_id": "1"}));
        ce.data = Some(ProtoData::TextData("not json".into()));
        assert_eq!(event_json(&ce).unwrap_err().code(), "INPUT_INVALID");
        let plain = text(Some("text/plain"), "hello");
        assert_eq!(event_json(&plain).unwrap()["data"], "hello");
        let mut bytes = text(Some("application/octet-stream"), "");
        bytes.data = Some(ProtoData::BinaryData(vec![0, 1, 2]));
        assert_eq!(event_json(&bytes).unwrap()["data_base64"], "AAEC");
    }

    #[test]
    fn round_trip_through_the_envelope() {
        let event: Event = serde_json::from_value(json!({
            "specversion": "1.0", "id": "x", "source": "/s", "type": "t", "subject": "sub",
            "time": "2026-11-26T10:00:00Z", "traceparent": "00-abc-01",
            "datacontenttype": "application/json", "data": {"amount": 31.5}
        }))
        .unwrap();
        let ce = to_proto(&event).unwrap();
        assert_eq!(
            ce.data,
            Some(ProtoData::TextData(r#"{"amount":31.5}"#.into()))
        );
        let back = event_json(&ce).unwrap();
        assert_eq!(back["subject"], "sub");
        assert_eq!(back["time"], "2026-11-26T10:00:00Z");
        assert_eq!(back["traceparent"], "00-abc-01");
        assert_eq!(back["data"], json!({"amount": 31.5}));
    }
}
