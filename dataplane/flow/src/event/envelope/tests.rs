//! The envelope: attribute overrides, literal fallbacks, ids, types and data of the CloudEvent built.

use super::*;
use crate::FlowDefaults;
use chrono::{DateTime, Utc};
use serde_json::json;

#[test]
fn identifier_like_words_fall_back_to_literals() {
    for (expr, literal) in [
        ("order.created", "order.created"),
        ("order-service", "order-service"),
        ("orders", "orders"),
        (" com.example.v2-beta ", "com.example.v2-beta"),
        ("_x.y_z", "_x.y_z"),
        // Upstream's hyphenated words that contain a scope variable's name.
        ("source-x", "source-x"),
        ("x-time", "x-time"),
        ("custom-subject", "custom-subject"),
    ] {
        assert_eq!(literal_fallback(expr), Some(literal), "{expr}");
    }
}

#[test]
fn expressions_and_odd_text_do_not_fall_back() {
    for expr in [
        "data.type",
        "type",
        "subject-source",
        "time.x",
        "'quoted'",
        "\"order.created\"",
        "a..b",
        "a.",
        "-a",
        "a b",
        "1abc",
        "a.1",
        "true",
        "x.null",
        "$.legacy_id",
        "",
        "a+b",
        "f(x)",
    ] {
        assert_eq!(literal_fallback(expr), None, "{expr}");
    }
}

fn envelope(config: CloudEventsConfig) -> Envelope {
    Envelope::compile(Some(&config)).expect("compiles")
}

fn input(data: Json) -> InputEvent {
    let flow = FlowDefaults::new("flow");
    let at = DateTime::parse_from_rfc3339("2026-02-06T22:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    InputEvent::from_json(data, flow.event().with_id("in-1").received_at(at)).expect("input")
}

fn event_json(event: &CloudEvent) -> Json {
    serde_json::to_value(event).expect("serializes")
}

#[test]
fn defaults_come_from_the_input() {
    let event = Envelope::default()
        .build(&input(json!({"a": 1})), json!({"b": 2}))
        .expect("builds");
    assert_eq!(
        event_json(&event),
        json!({
            "specversion": "1.0",
            "id": "in-1",
            "type": "fiso.event",
            "source": "fiso-flow/flow",
            "datacontenttype": "application/json",
            "time": "2026-02-06T22:00:00Z",
            "data": {"b": 2}
        })
    );
}

#[test]
fn non_string_attributes_become_their_string_form() {
    let data = json!({"i": 7, "u": u64::MAX, "d": 1.5, "b": true, "l": [1, "a"], "m": {"k": 1}});
    for (expr, text) in [
        ("data.i", "7"),
        ("data.u", "18446744073709551615"),
        ("data.d", "1.5"),
        ("data.b", "true"),
        ("data.l", r#"[1,"a"]"#),
        ("data.m", r#"{"k":1}"#),
        ("data.i + 1", "8"),
        ("data.m.size()", "1"),
        // Constants, computed at load: the text CEL would give.
        ("8 - 1", "7"),
        ("'x' + 'y'", "xy"),
        ("[1, 'a']", r#"[1,"a"]"#),
        ("{'k': 1.5}", r#"{"k":1.5}"#),
        (
            "timestamp('2026-01-01T00:00:00Z') + duration('1s')",
            "2026-01-01T00:00:01Z",
        ),
    ] {
        let env = envelope(CloudEventsConfig {
            subject: Some(expr.into()),
            ..Default::default()
        });
        let event = env.build(&input(data.clone()), json!({})).expect(expr);
        assert_eq!(event.subject(), Some(text), "{expr}");
    }
}

#[test]
fn a_null_required_attribute_is_a_wrap_error() {
    let env = envelope(CloudEventsConfig {
        id: Some("data.n".into()),
        ..Default::default()
    });
    let error = env
        .build(&input(json!({"n": null})), json!({}))
        .expect_err("fails");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert_eq!(
        error.to_string(),
        "cloudevents.id: must be a string, not null (convert it with string(...))"
    );
}

#[test]
fn an_empty_type_is_a_wrap_error() {
    let env = envelope(CloudEventsConfig {
        type_: Some("data.kind".into()),
        ..Default::default()
    });
    let error = env
        .build(&input(json!({"kind": ""})), json!({}))
        .expect_err("fails");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert_eq!(error.to_string(), "cloudevents.type: must not be empty");
}

#[test]
fn an_invalid_dataschema_is_a_wrap_error() {
    let env = envelope(CloudEventsConfig {
        dataschema: Some("data.schema".into()),
        ..Default::default()
    });
    let error = env
        .build(&input(json!({"schema": "not a uri"})), json!({}))
        .expect_err("fails");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert!(error
        .to_string()
        .starts_with("cloudevents.dataschema: \"not a uri\" is not an absolute URI"));
    let errors = Envelope::compile(Some(&CloudEventsConfig {
        dataschema: Some("schemas.v1".into()),
        ..Default::default()
    }))
    .expect_err("a literal is checked at compile time");
    assert_eq!(errors[0].code(), "CONFIG_INVALID");
}

#[test]
fn a_failing_expression_is_a_wrap_error_naming_the_attribute() {
    let env = envelope(CloudEventsConfig {
        subject: Some("data.customer.id".into()),
        ..Default::default()
    });
    let error = env.build(&input(json!({})), json!({})).expect_err("fails");
    assert_eq!(
        error.to_string(),
        "cloudevents.subject: no such key: customer"
    );
}

#[test]
fn an_override_over_the_budget_fails_as_a_transform() {
    let env = envelope(CloudEventsConfig {
        subject: Some("data.l.map(x, data.l.map(y, 'a')).size() > 0 ? 'x' : 'y'".into()),
        ..Default::default()
    });
    let l: Vec<u32> = (0..400).collect();
    let error = env
        .build(&input(json!({ "l": l })), json!({}))
        .expect_err("over budget");
    assert_eq!(error.code(), "TRANSFORM_FAILED");
    assert!(
        error
            .to_string()
            .starts_with("transform field `cloudevents.subject`: CEL budget exceeded"),
        "{error}"
    );
}

#[test]
fn computed_attributes_with_control_characters_are_wrap_errors() {
    let env = envelope(CloudEventsConfig {
        subject: Some("data.s".into()),
        ..Default::default()
    });
    let error = env
        .build(&input(json!({"s": "a\r\nx: y"})), json!({}))
        .expect_err("fails");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert!(
        error.to_string().contains("control character U+000D"),
        "{error}"
    );
}

#[test]
fn null_optional_attributes_are_unset() {
    let env = envelope(CloudEventsConfig {
        subject: Some("has(data.s) ? data.s : null".into()),
        datacontenttype: Some("null".into()),
        ..Default::default()
    });
    let event = env.build(&input(json!({})), json!({})).expect("builds");
    let json = event_json(&event);
    assert_eq!(json.get("subject"), None);
    assert_eq!(json["datacontenttype"], json!("application/json"));
}

#[test]
fn text_content_types_carry_string_data_as_text() {
    let env = envelope(CloudEventsConfig {
        data: Some("data.note".into()),
        datacontenttype: Some("'text/plain'".into()),
        ..Default::default()
    });
    let event = env
        .build(&input(json!({"note": "hi"})), json!({}))
        .expect("builds");
    assert_eq!(event.data(), Some(&Data::Text("hi".into())));
}

#[test]
fn compile_errors_have_paths() {
    let errors = Envelope::compile(Some(&CloudEventsConfig {
        id: Some("data.a +".into()),
        type_: Some("  ".into()),
        subject: Some("$.legacy_id".into()),
        ..Default::default()
    }))
    .expect_err("fails");
    let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), 3);
    assert!(
        rendered[0].starts_with("cloudevents.id: invalid CEL"),
        "{}",
        rendered[0]
    );
    assert_eq!(rendered[1], "cloudevents.type: must not be empty");
    assert!(rendered[2].starts_with("cloudevents.subject: JSONPath `$.legacy_id`"));
}

#[test]
fn constant_attributes_are_checked_when_the_flow_loads() {
    for (attribute, source, words) in [
        ("source", r#""my service""#, "URI-reference"),
        ("source", r#""""#, "must not be empty"),
        ("datacontenttype", r#""json""#, "media type"),
        ("dataschema", r#""/relative""#, "absolute URI"),
        ("dataschema", "not-absolute", "absolute URI"),
        ("subject", r#""a\nb""#, "control character"),
    ] {
        let mut config = CloudEventsConfig::default();
        match attribute {
            "source" => config.source = Some(source.into()),
            "datacontenttype" => config.datacontenttype = Some(source.into()),
            "dataschema" => config.dataschema = Some(source.into()),
            _ => config.subject = Some(source.into()),
        }
        let errors = Envelope::compile(Some(&config)).expect_err(source);
        let text = errors[0].to_string();
        assert!(
            text.starts_with(&format!("cloudevents.{attribute}:")) && text.contains(words),
            "{source}: {text}"
        );
    }
    let fine = CloudEventsConfig {
        source: Some("order-service".into()),
        datacontenttype: Some(r#""text/plain; charset=utf-8""#.into()),
        subject: Some(r#""""#.into()),
        ..Default::default()
    };
    assert!(Envelope::compile(Some(&fine)).is_ok());
}
