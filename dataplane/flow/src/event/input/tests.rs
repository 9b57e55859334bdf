//! Input events: structured CloudEvents, bare payloads, attribute checks, ids and times.

use super::*;
use bytes::Bytes;
use serde_json::json;

fn json_data(event: &InputEvent) -> Option<&Json> {
    match event.data() {
        Some(Data::Json(json)) => Some(json),
        other => panic!("not JSON data: {other:?}"),
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

fn defaults(flow: &FlowDefaults) -> EventDefaults<'_> {
    flow.event().received_at(at("2026-02-06T22:00:00.123456Z"))
}

#[test]
fn a_bare_payload_gets_the_flow_defaults() {
    let flow = FlowDefaults::new("orders");
    let event = InputEvent::from_json(
        json!({"order_id": "TEST-001"}),
        defaults(&flow).with_id("orders-0-42"),
    )
    .expect("reads");
    assert_eq!(json_data(&event), Some(&json!({"order_id": "TEST-001"})));
    assert_eq!(event.datacontenttype(), Some("application/json"));
    assert_eq!(event.id(), "orders-0-42");
    assert_eq!(event.source(), "fiso-flow/orders");
    assert_eq!(event.type_(), "fiso.event");
    assert_eq!(event.subject(), None);
    assert_eq!(event.time_text(), "2026-02-06T22:00:00.123Z");
    assert!(event.extensions().is_empty());
}

#[test]
fn without_an_id_a_bare_payload_gets_a_uuid_v7() {
    let flow = FlowDefaults::new("f");
    let event = InputEvent::from_json(json!([1]), defaults(&flow)).expect("reads");
    let id = uuid::Uuid::parse_str(event.id()).expect("uuid");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(json_data(&event), Some(&json!([1])));
}

#[test]
fn kafka_ids_are_topic_partition_offset() {
    let flow = FlowDefaults::new("f");
    let event = InputEvent::from_json(json!({}), defaults(&flow).with_kafka_id("orders", 3, 1234))
        .expect("reads");
    assert_eq!(event.id(), "orders-3-1234");
}

#[test]
fn a_structured_cloudevent_brings_its_own_attributes() {
    let flow = FlowDefaults::new("f");
    let event = InputEvent::from_json(
        json!({
            "specversion": "1.0",
            "id": "ce-1",
            "source": "/orders",
            "type": "order.created",
            "subject": "o-9",
            "time": "2026-01-01T10:00:00+01:00",
            "datacontenttype": "application/json",
            "traceparent": "00-abc-def-01",
            "priority": 3,
            "data": {"total": 5}
        }),
        defaults(&flow).with_id("ignored"),
    )
    .expect("reads");
    assert_eq!(json_data(&event), Some(&json!({"total": 5})));
    assert_eq!(event.id(), "ce-1");
    assert_eq!(event.source(), "/orders");
    assert_eq!(event.type_(), "order.created");
    assert_eq!(event.subject(), Some("o-9"));
    assert_eq!(event.time_text(), "2026-01-01T09:00:00Z");
    assert_eq!(
        event.event().time().map(Timestamp::as_str),
        Some("2026-01-01T10:00:00+01:00"),
        "delivered as it came"
    );
    assert_eq!(event.datacontenttype(), Some("application/json"));
    assert_eq!(
        event.extensions().get("traceparent"),
        Some(&AttributeValue::from("00-abc-def-01"))
    );
    assert_eq!(
        event.extensions().get("priority"),
        Some(&AttributeValue::Integer(3))
    );
}

#[test]
fn a_structured_cloudevent_without_time_or_data() {
    let flow = FlowDefaults::new("f");
    let event = InputEvent::from_json(
        json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t"}),
        defaults(&flow),
    )
    .expect("reads");
    assert_eq!(event.data(), None, "no data is not null data");
    assert_eq!(event.data_json(), Json::Null);
    assert_eq!(event.time_text(), "2026-02-06T22:00:00.123Z");
}

#[test]
fn data_base64_is_bytes() {
    let flow = FlowDefaults::new("f");
    let ce = |ct: &str, data: &str| {
        json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
               "datacontenttype": ct, "data_base64": data})
    };
    let json = InputEvent::from_json(ce("application/json", "eyJhIjoxfQ=="), defaults(&flow))
        .expect("reads");
    assert_eq!(
        json.data(),
        Some(&Data::Bytes(Bytes::from_static(b"{\"a\":1}")))
    );
    let text = InputEvent::from_json(ce("text/plain", "aGk="), defaults(&flow)).expect("reads");
    assert_eq!(text.data(), Some(&Data::Bytes(Bytes::from_static(b"hi"))));
    let bad = InputEvent::from_json(ce("text/plain", "%%%"), defaults(&flow));
    assert_eq!(bad.map_err(|e| e.code()), Err("INPUT_INVALID"));
}

#[test]
fn malformed_cloudevents_are_invalid_input() {
    let flow = FlowDefaults::new("f");
    let cases = [
        (
            json!({"specversion": "1.0", "source": "s", "type": "t"}),
            "`id`: is required",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "type": "t"}),
            "`source`: is required",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": ""}),
            "`type`: must not be empty",
        ),
        (
            json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}),
            "specversion",
        ),
        (
            json!({"specversion": 1, "id": "1", "source": "s", "type": "t"}),
            "must be a string",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "yesterday"}),
            "not an RFC 3339 timestamp",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Bad-Name": "x"}),
            "not a valid attribute name",
        ),
    ];
    for (input, expected) in cases {
        let error = InputEvent::from_json(input.clone(), defaults(&flow)).expect_err("invalid");
        assert_eq!(error.code(), "INPUT_INVALID");
        assert!(error.to_string().contains(expected), "{input}: {error}");
    }
}

#[test]
fn control_characters_in_attributes_are_invalid_input() {
    let flow = FlowDefaults::new("f");
    let base = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t"});
    for (name, value) in [
        ("id", "a\r\nx-injected: 1"),
        ("source", "s\n"),
        ("type", "t\u{0}"),
        ("subject", "\u{7f}"),
        ("dataschema", "https://x/\u{85}"),
        ("traceparent", "00-1\r\n"),
        ("datacontenttype", "application/json\r\nx: y"),
        ("datacontenttype", "text/plain; é"),
    ] {
        let mut input = base.clone();
        input[name] = json!(value);
        let error = InputEvent::from_json(input, defaults(&flow)).expect_err(name);
        assert_eq!(error.code(), "INPUT_INVALID", "{name}");
        assert!(error.to_string().contains(&format!("`{name}`")), "{error}");
    }
    let mut unicode = base.clone();
    unicode["subject"] = json!("café \"100%\" ✓");
    let event = InputEvent::from_json(unicode, defaults(&flow)).expect("printable text");
    assert_eq!(event.subject(), Some("café \"100%\" ✓"));
    let mut event = InputEvent::from_json(json!({}), defaults(&flow)).expect("reads");
    let error = event
        .set_extension("traceparent", "00\r\n")
        .expect_err("control characters");
    assert_eq!(error.code(), "INPUT_INVALID");
}

#[test]
fn extensions_can_be_added_by_the_source() {
    let flow = FlowDefaults::new("f");
    let mut event = InputEvent::from_json(json!({}), defaults(&flow)).expect("reads");
    event
        .set_extension("traceparent", "00-1-2-01")
        .expect("valid name");
    assert!(event.set_extension("id", "x").is_err());
    assert!(event.set_extension("TraceParent", "x").is_err());
    assert_eq!(event.extensions().len(), 1);
}

#[test]
fn a_kafka_record_id_is_its_coordinates() {
    assert_eq!(
        super::kafka_id("orders", 3, 1_234_567_890_123),
        "orders-3-1234567890123"
    );
    assert_eq!(super::kafka_id("t", -1, 0), "t--1-0");
}
