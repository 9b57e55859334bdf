use super::*;
use serde_json::json;

fn event() -> CloudEvent {
    CloudEvent::new("e-1", "/orders", "order.created")
}

fn invalid(change: impl FnOnce(&mut CloudEvent)) -> EventError {
    let mut e = event();
    change(&mut e);
    e.validate().expect_err("invalid")
}

#[test]
fn required_attributes_are_non_empty_strings() {
    assert_eq!(event().validate(), Ok(()));
    for (attribute, change) in [
        (
            "id",
            (|e: &mut CloudEvent| e.set_id("")) as fn(&mut CloudEvent),
        ),
        ("source", |e| e.set_source("")),
        ("type", |e| e.set_type("")),
    ] {
        let error = invalid(change);
        assert_eq!(error.attribute, attribute);
        assert!(error.message.contains("must not be empty"), "{error}");
    }
}

#[test]
fn optional_attributes_are_absent_or_non_empty() {
    for (attribute, change) in [
        (
            "subject",
            (|e: &mut CloudEvent| e.set_subject(Some(String::new()))) as fn(&mut CloudEvent),
        ),
        ("datacontenttype", |e| {
            e.set_datacontenttype(Some(String::new()))
        }),
        ("dataschema", |e| e.set_dataschema(Some(String::new()))),
    ] {
        assert_eq!(invalid(change).attribute, attribute);
    }
}

#[test]
fn source_is_a_uri_reference_and_dataschema_an_absolute_uri() {
    for source in [
        "/x",
        "urn:a:b",
        "https://e.com/x?y#z",
        "//github.com/cloudevents",
        "fiso-flow/orders",
        "caf%C3%A9",
    ] {
        let mut e = event();
        e.set_source(source);
        assert_eq!(e.validate(), Ok(()), "{source}");
    }
    for source in ["a b", "x%zz", "\u{e9}t\u{e9}", "http://[::1"] {
        assert_eq!(
            invalid(|e| e.set_source(source)).attribute,
            "source",
            "{source}"
        );
    }
    let mut e = event();
    e.set_dataschema(Some("https://e.com/s.json".into()));
    assert_eq!(e.validate(), Ok(()));
    for schema in ["/relative", "not a uri", "https://e.com/s.json#frag"] {
        let error = invalid(|e| e.set_dataschema(Some(schema.into())));
        assert_eq!(error.attribute, "dataschema", "{schema}");
    }
}

#[test]
fn datacontenttype_is_a_media_type() {
    for ct in ["json", "application/", "a b/c", "text/plain;"] {
        let error = invalid(|e| e.set_datacontenttype(Some(ct.into())));
        assert_eq!(error.attribute, "datacontenttype", "{ct}");
    }
}

#[test]
fn strings_must_not_hold_control_characters() {
    for text in ["a\u{0}", "a\r\nb", "\u{7f}", "x\u{9f}"] {
        let error = invalid(|e| e.set_subject(Some(text.into())));
        assert!(error.message.contains("control character"), "{error}");
        let mut e = event();
        assert!(e.set_extension("ext", text).is_err(), "{text:?}");
    }
    for text in [
        "a\u{fffe}",
        "\u{fdd0}",
        "\u{fdef}",
        "\u{10ffff}",
        "\u{1ffff}",
    ] {
        let error = invalid(|e| e.set_subject(Some(text.into())));
        assert!(error.message.contains("noncharacter"), "{error}");
    }
    let mut e = event();
    e.set_subject(Some(
        "caf\u{e9} \u{1f600} \u{a0} \u{fdf0} \u{fffd} \u{102ad}".into(),
    ));
    assert_eq!(e.validate(), Ok(()));
}

#[test]
fn extension_names_are_lower_case_letters_and_digits() {
    let mut e = event();
    for valid in ["a", "tenant", "x1", "averyveryverylongextensionname"] {
        assert_eq!(e.set_extension(valid, "v"), Ok(()), "{valid}");
    }
    for invalid in [
        "", "Tenant", "my_ext", "my-ext", "data", "id", "time", "\u{e9}",
    ] {
        assert!(e.set_extension(invalid, "v").is_err(), "{invalid:?}");
    }
}

#[test]
fn attributes_from_typed_values() {
    let mut e = event();
    e.set_attribute(
        "time",
        AttributeValue::String("2018-04-05T17:31:00+02:00".into()),
    )
    .unwrap();
    assert_eq!(e.time().unwrap().as_str(), "2018-04-05T17:31:00+02:00");
    e.set_attribute("dataschema", AttributeValue::Uri("https://e.com/s".into()))
        .unwrap();
    assert_eq!(e.dataschema(), Some("https://e.com/s"));
    e.set_attribute("prio", AttributeValue::Integer(-3))
        .unwrap();
    assert_eq!(e.extension("prio"), Some(&AttributeValue::Integer(-3)));
    let error = e
        .set_attribute("subject", AttributeValue::Boolean(true))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "CloudEvent `subject`: must be a string, not a boolean"
    );
    let error = e
        .set_attribute("specversion", AttributeValue::String("0.3".into()))
        .unwrap_err();
    assert!(error.message.contains("CloudEvents 1.0 only"), "{error}");
    assert!(e
        .set_attribute("link", AttributeValue::Uri("/relative".into()))
        .is_err());
}

#[test]
fn timestamps_are_rfc_3339_and_keep_their_text() {
    for text in [
        "2018-04-05T17:31:00Z",
        "2018-04-05T17:31:00.123456789Z",
        "2018-04-05t17:31:00z",
        "2018-04-05T17:31:00-07:30",
    ] {
        assert_eq!(Timestamp::parse(text).unwrap().as_str(), text);
    }
    for text in [
        "2018-04-05",
        "2018-04-05T17:31:00",
        "2018-04-05 17:31:00Z",
        "5",
    ] {
        assert!(Timestamp::parse(text).is_err(), "{text}");
    }
    let t = Timestamp::parse("2018-04-05T19:31:00+02:00").unwrap();
    assert_eq!(
        Timestamp::from_utc(t.to_utc()).as_str(),
        "2018-04-05T17:31:00Z"
    );
}

#[test]
fn bodies_become_json_text_or_bytes_by_content_type() {
    let ct = |t: &str| MediaType::parse(t).unwrap();
    let body = |b: &[u8]| Bytes::copy_from_slice(b);
    assert_eq!(
        Data::from_body(Bytes::new(), Some(&ct("application/json"))),
        Ok(None)
    );
    assert_eq!(
        Data::from_body(
            body(b"{\"a\":1}"),
            Some(&ct("application/json; charset=utf-8"))
        ),
        Ok(Some(Data::Json(json!({"a": 1}))))
    );
    assert_eq!(
        Data::from_body(body(b"null"), Some(&ct("application/json"))),
        Ok(Some(Data::Json(Json::Null)))
    );
    let error = Data::from_body(body(b"{nope"), Some(&ct("application/json"))).unwrap_err();
    assert_eq!(error.attribute, "data");
    assert_eq!(
        Data::from_body(
            body("Hello, \u{1f30e}!\n".as_bytes()),
            Some(&ct("text/plain"))
        ),
        Ok(Some(Data::Text("Hello, \u{1f30e}!\n".into())))
    );
    // Not UTF-8 although text: bytes, exact.
    assert_eq!(
        Data::from_body(body(b"caf\xe9"), Some(&ct("text/plain; charset=latin1"))),
        Ok(Some(Data::Bytes(body(b"caf\xe9"))))
    );
    assert_eq!(
        Data::from_body(body(b"\x00\x01"), Some(&ct("application/octet-stream"))),
        Ok(Some(Data::Bytes(body(b"\x00\x01"))))
    );
    // No content type: JSON when it is, else bytes.
    assert_eq!(
        Data::from_body(body(b"[1]"), None),
        Ok(Some(Data::Json(json!([1]))))
    );
    assert_eq!(
        Data::from_body(body(b"plain"), None),
        Ok(Some(Data::Bytes(body(b"plain"))))
    );
}

#[test]
fn bodies_of_data() {
    assert_eq!(
        Data::Json(json!({"n": 1e21})).to_body().unwrap(),
        &b"{\"n\":1000000000000000000000}"[..]
    );
    assert_eq!(
        Data::Text("t\u{e9}".into()).to_body().unwrap(),
        "t\u{e9}".as_bytes()
    );
    assert_eq!(
        Data::Bytes(Bytes::from_static(b"\xff")).to_body().unwrap(),
        &b"\xff"[..]
    );
}
