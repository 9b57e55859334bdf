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

use bytes::Bytes;
use proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use proto::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data as ProtoData};
use proto::io::cloudevents::v1::CloudEvent as ProtoEvent;

use super::cloudevent::{AttributeValue, CloudEvent, Data, EventError, Timestamp};
use super::media_type::MediaType;

/// What a gRPC message carries: a CloudEvent, or — with no `spec_version` — a bare payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event(Box<CloudEvent>),
    /// The JSON of `text_data` or `binary_data`.
    Payload(serde_json::Value),
}

/// Reads a message in the Protobuf format (protobuf-format.md), validated. Attributes keep their
/// types; `text_data` is JSON for a JSON content type, text otherwise (JSON when it parses and
/// there is no content type); `binary_data` is JSON for a JSON content type (as a binary-mode
/// body is), bytes otherwise; `proto_data` is a Protobuf message.
pub fn from_proto(ce: ProtoEvent) -> Result<Incoming, EventError> {
    if ce.spec_version.is_empty() {
        let json = match &ce.data {
            Some(ProtoData::TextData(text)) => serde_json::from_str(text).ok(),
            Some(ProtoData::BinaryData(bytes)) => serde_json::from_slice(bytes).ok(),
            _ => None,
        };
        return json.map(Incoming::Payload).ok_or_else(|| {
            EventError::new(
                "specversion",
                "a message without spec_version is a bare payload and needs JSON text_data or binary_data",
            )
        });
    }
    super::cloudevent::check_specversion(&ce.spec_version)?;
    let mut event = CloudEvent::new(ce.id, ce.source, ce.r#type);
    for required in ["id", "source", "type"] {
        let empty = match required {
            "id" => event.id().is_empty(),
            "source" => event.source().is_empty(),
            _ => event.ty().is_empty(),
        };
        if empty {
            return Err(EventError::new(required, "is required"));
        }
    }
    let mut attributes: Vec<_> = ce.attributes.into_iter().collect();
    // A map has no order; sorted, extensions come out the same every time.
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in attributes {
        if matches!(name.as_str(), "specversion" | "id" | "source" | "type") {
            return Err(EventError::new(
                &name,
                "is a field of the message, not an entry of `attributes`",
            ));
        }
        let value = attribute(&name, value)?;
        event.set_attribute(&name, value)?;
    }
    event.validate()?;
    let media_type = event
        .datacontenttype()
        .and_then(|ct| MediaType::parse(ct).ok());
    let json_type = media_type.as_ref().map(MediaType::is_json);
    let data = match ce.data {
        None => None,
        Some(ProtoData::TextData(text)) => Some(match json_type {
            Some(true) => Data::Json(parse_json(text.as_bytes())?),
            Some(false) => Data::Text(text),
            None => match serde_json::from_str(&text) {
                Ok(json) => Data::Json(json),
                Err(_) => Data::Text(text),
            },
        }),
        Some(ProtoData::BinaryData(bytes)) => Some(match json_type {
            Some(true) => Data::Json(parse_json(&bytes)?),
            _ => Data::Bytes(Bytes::from(bytes)),
        }),
        Some(ProtoData::ProtoData(any)) => Some(Data::Proto {
            type_url: any.type_url,
            value: Bytes::from(any.value),
        }),
    };
    event.set_data(data);
    Ok(Incoming::Event(Box::new(event)))
}

fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, EventError> {
    serde_json::from_slice(bytes).map_err(|e| {
        EventError::new(
            "data",
            format!("is not valid JSON, as its datacontenttype says: {e}"),
        )
    })
}

fn attribute(name: &str, value: CloudEventAttributeValue) -> Result<AttributeValue, EventError> {
    Ok(match value.attr {
        Some(Attr::CeBoolean(b)) => AttributeValue::Boolean(b),
        Some(Attr::CeInteger(i)) => AttributeValue::Integer(i),
        Some(Attr::CeString(s)) => AttributeValue::String(s),
        Some(Attr::CeBytes(b)) => AttributeValue::Binary(Bytes::from(b)),
        Some(Attr::CeUri(s)) => AttributeValue::Uri(s),
        Some(Attr::CeUriRef(s)) => AttributeValue::UriRef(s),
        Some(Attr::CeTimestamp(t)) => {
            let at = u32::try_from(t.nanos)
                .ok()
                .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
                .ok_or_else(|| EventError::new(name, "the timestamp is out of range"))?;
            AttributeValue::Timestamp(Timestamp::from_utc(at))
        }
        None => return Err(EventError::new(name, "has no value")),
    })
}

/// A CloudEvent in the Protobuf format: attributes with their types (`time` a Timestamp,
/// `dataschema` a URI), JSON and text as `text_data` (JSON without a `datacontenttype` gets
/// `application/json`), bytes as `binary_data`, a Protobuf message as `proto_data`.
pub fn to_proto(event: &CloudEvent) -> Result<ProtoEvent, String> {
    let value = |attr| CloudEventAttributeValue { attr: Some(attr) };
    let mut attributes = std::collections::HashMap::new();
    if let Some(s) = event.subject() {
        attributes.insert("subject".to_owned(), value(Attr::CeString(s.to_owned())));
    }
    if let Some(t) = event.time() {
        attributes.insert("time".to_owned(), value(timestamp(t)));
    }
    if let Some(s) = event.dataschema() {
        attributes.insert("dataschema".to_owned(), value(Attr::CeUri(s.to_owned())));
    }
    for (name, v) in event.extensions() {
        let attr = match v {
            AttributeValue::Boolean(b) => Attr::CeBoolean(*b),
            AttributeValue::Integer(i) => Attr::CeInteger(*i),
            AttributeValue::String(s) => Attr::CeString(s.clone()),
            AttributeValue::Binary(b) => Attr::CeBytes(b.to_vec()),
            AttributeValue::Uri(s) => Attr::CeUri(s.clone()),
            AttributeValue::UriRef(s) => Attr::CeUriRef(s.clone()),
            AttributeValue::Timestamp(t) => timestamp(t),
        };
        attributes.insert(name.to_owned(), value(attr));
    }
    let data = match event.data() {
        None => None,
        Some(Data::Json(v)) => Some(ProtoData::TextData(
            super::json::to_string_plain(v).map_err(|e| e.to_string())?,
        )),
        Some(Data::CarriedJson(json)) => Some(ProtoData::TextData(json.text().to_owned())),
        Some(Data::Text(s)) => Some(ProtoData::TextData(s.clone())),
        Some(Data::Bytes(b)) => Some(ProtoData::BinaryData(b.to_vec())),
        Some(Data::Proto { type_url, value }) => Some(ProtoData::ProtoData(prost_types::Any {
            type_url: type_url.clone(),
            value: value.to_vec(),
        })),
    };
    let content_type = match (event.datacontenttype(), event.data()) {
        (Some(ct), _) => Some(ct),
        // json-format §3.1.2: the implied type is made explicit in another format.
        (None, Some(data)) if data.is_json() => Some("application/json"),
        (None, _) => None,
    };
    if let Some(ct) = content_type {
        attributes.insert(
            "datacontenttype".to_owned(),
            value(Attr::CeString(ct.to_owned())),
        );
    }
    Ok(ProtoEvent {
        id: event.id().to_owned(),
        source: event.source().to_owned(),
        spec_version: event.specversion().to_owned(),
        r#type: event.ty().to_owned(),
        attributes,
        data,
    })
}

fn timestamp(t: &Timestamp) -> Attr {
    let at = t.to_utc();
    Attr::CeTimestamp(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(ct: Option<&str>, data: &str) -> ProtoEvent {
        let mut ce = ProtoEvent {
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

    fn event(ce: ProtoEvent) -> CloudEvent {
        match from_proto(ce) {
            Ok(Incoming::Event(e)) => *e,
            other => panic!("{other:?}"),
        }
    }

    fn attr(attr: Attr) -> CloudEventAttributeValue {
        CloudEventAttributeValue { attr: Some(attr) }
    }

    #[test]
    fn a_structured_event_with_json_data() {
        let mut ce = text(Some("application/json"), r#"{"n":1}"#);
        ce.attributes
            .insert("priority".into(), attr(Attr::CeInteger(3)));
        let e = event(ce);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "order.created",
                   "datacontenttype": "application/json", "priority": 3, "data": {"n": 1}})
        );
    }

    #[test]
    fn bare_payloads_text_and_bytes() {
        let mut ce = ProtoEvent {
            data: Some(ProtoData::BinaryData(br#"{"order_id":"1"}"#.to_vec())),
            ..Default::default()
        };
        assert_eq!(
            from_proto(ce.clone()).unwrap(),
            Incoming::Payload(json!({"order_id": "1"}))
        );
        ce.data = Some(ProtoData::TextData("not json".into()));
        assert_eq!(from_proto(ce).unwrap_err().attribute, "specversion");
        assert_eq!(
            event(text(Some("text/plain"), "hello")).data(),
            Some(&Data::Text("hello".into()))
        );
        let mut bytes = text(Some("application/octet-stream"), "");
        bytes.data = Some(ProtoData::BinaryData(vec![0, 1, 2]));
        assert_eq!(
            event(bytes).data(),
            Some(&Data::Bytes(Bytes::from_static(&[0, 1, 2])))
        );
        let invalid = text(Some("application/json"), "{nope");
        assert_eq!(from_proto(invalid).unwrap_err().attribute, "data");
    }

    #[test]
    fn typed_attributes_and_every_data_form_round_trip() {
        let mut ce = text(None, "");
        for (name, value) in [
            ("subject", Attr::CeString("sub".into())),
            ("dataschema", Attr::CeUri("https://e.com/s".into())),
            ("flag", Attr::CeBoolean(true)),
            ("n", Attr::CeInteger(i32::MIN)),
            ("bin", Attr::CeBytes(vec![0xff])),
            ("link", Attr::CeUri("https://e.com".into())),
            ("ref", Attr::CeUriRef("/r".into())),
            (
                "at",
                Attr::CeTimestamp(prost_types::Timestamp {
                    seconds: 1_522_949_784,
                    nanos: 5,
                }),
            ),
            (
                "time",
                Attr::CeTimestamp(prost_types::Timestamp {
                    seconds: 1_522_949_784,
                    nanos: 0,
                }),
            ),
        ] {
            ce.attributes.insert(name.into(), attr(value));
        }
        for data in [
            ProtoData::TextData("plain".into()),
            ProtoData::BinaryData(vec![0, 159, 146, 150]),
            ProtoData::ProtoData(prost_types::Any {
                type_url: "type.googleapis.com/shop.Order".into(),
                value: vec![8, 1],
            }),
        ] {
            let mut ce = ce.clone();
            ce.data = Some(data);
            if matches!(ce.data, Some(ProtoData::TextData(_))) {
                ce.attributes.insert(
                    "datacontenttype".into(),
                    attr(Attr::CeString("text/plain".into())),
                );
            }
            let e = event(ce.clone());
            assert_eq!(e.time().unwrap().as_str(), "2018-04-05T17:36:24Z");
            assert_eq!(to_proto(&e).unwrap(), ce);
        }
    }

    #[test]
    fn json_data_is_text_with_its_content_type() {
        let mut e = CloudEvent::new("x", "/s", "t");
        e.set_data(Some(Data::Json(json!({"amount": 31.5}))));
        let ce = to_proto(&e).unwrap();
        assert_eq!(
            ce.data,
            Some(ProtoData::TextData(r#"{"amount":31.5}"#.into()))
        );
        assert_eq!(
            ce.attributes["datacontenttype"].attr,
            Some(Attr::CeString("application/json".into()))
        );
        assert_eq!(event(ce).data(), e.data());
    }

    #[test]
    fn invalid_messages_are_refused() {
        let mut ce = text(None, "{}");
        ce.spec_version = "0.3".into();
        assert_eq!(from_proto(ce).unwrap_err().attribute, "specversion");
        let mut ce = text(None, "{}");
        ce.id = String::new();
        assert_eq!(from_proto(ce).unwrap_err().attribute, "id");
        let mut ce = text(None, "{}");
        ce.attributes
            .insert("id".into(), attr(Attr::CeString("2".into())));
        assert_eq!(from_proto(ce).unwrap_err().attribute, "id");
        let mut ce = text(None, "{}");
        ce.attributes
            .insert("subject".into(), attr(Attr::CeInteger(1)));
        assert_eq!(from_proto(ce).unwrap_err().attribute, "subject");
        let mut ce = text(None, "{}");
        ce.attributes
            .insert("Bad".into(), attr(Attr::CeString("v".into())));
        assert_eq!(from_proto(ce).unwrap_err().attribute, "Bad");
        let mut ce = text(None, "{}");
        ce.source = "a b".into();
        assert_eq!(from_proto(ce).unwrap_err().attribute, "source");
    }
}
