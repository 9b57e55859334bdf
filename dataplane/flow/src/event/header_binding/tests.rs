use super::*;
use serde_json::json;

fn read(
    binding: Binding,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
) -> Result<CloudEvent, EventError> {
    binding.read(
        headers.iter().map(|(k, v)| (*k, v.as_bytes())),
        content_type,
        Bytes::copy_from_slice(body),
    )
}

const REQUIRED: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "1234-1234-1234"),
    ("ce-source", "/mycontext/subcontext"),
    ("ce-type", "com.example.someevent"),
];

fn http_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    REQUIRED.iter().chain(extra).copied().collect()
}

#[test]
fn header_values_are_unquoted_then_percent_decoded() {
    for (header, value) in [
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro \u{20ac} \u{1f600}"),
        ("euro%20%e2%82%ac", "euro \u{20ac}"),
        ("%41bc", "Abc"),
        ("\"a\\\"b\"", "a\"b"),
        ("\"quoted %25\"", "quoted %"),
        ("{\"othervalue\": 5}", "{\"othervalue\": 5}"),
        ("\"a\" \"b\"", "\"a\" \"b\""),
        ("\"open", "\"open"),
        ("50%", "50%"),
    ] {
        let headers = http_with(&[("ce-subject", header)]);
        let event = read(Binding::Http, &headers, None, b"").expect(header);
        assert_eq!(event.subject(), Some(value), "{header}");
    }
    for (header, words) in [
        ("%C0%A0", "not UTF-8"),
        ("%FF", "not UTF-8"),
        ("a%0D%0Ab", "control character"),
    ] {
        let headers = http_with(&[("ce-subject", header)]);
        let error = read(Binding::Http, &headers, None, b"").expect_err(header);
        assert!(error.to_string().contains(words), "{header}: {error}");
    }
}

#[test]
fn kafka_header_values_are_utf8_as_they_are() {
    let headers = [
        ("ce_specversion", "1.0"),
        ("ce_id", "1"),
        ("ce_source", "/s"),
        ("ce_type", "t"),
        ("ce_subject", "Euro%20\u{20ac}"),
    ];
    let event = read(Binding::Kafka, &headers, None, b"").unwrap();
    assert_eq!(event.subject(), Some("Euro%20\u{20ac}"));
    let error = Binding::Kafka
        .read(
            [("ce_specversion", &b"1.0"[..]), ("ce_id", b"\xff")].into_iter(),
            None,
            Bytes::new(),
        )
        .unwrap_err();
    assert!(error.message.contains("not UTF-8"), "{error}");
}

#[test]
fn binary_mode_rules() {
    let headers = http_with(&[("ce-datacontenttype", "text/plain")]);
    let error = read(Binding::Http, &headers, None, b"").unwrap_err();
    assert_eq!(error.attribute, "datacontenttype");
    let mut headers = http_with(&[("ce-ext", "a")]);
    headers.push(("ce-ext", "b"));
    assert!(read(Binding::Http, &headers, None, b"")
        .unwrap_err()
        .message
        .contains("more than once"));
    for missing in ["ce-id", "ce-source", "ce-type"] {
        let headers: Vec<_> = REQUIRED
            .iter()
            .filter(|(k, _)| *k != missing)
            .copied()
            .collect();
        let error = read(Binding::Http, &headers, None, b"").unwrap_err();
        assert!(error.message.contains("is required"), "{error}");
    }
    let headers = [
        ("ce-specversion", "0.3"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];
    assert_eq!(
        read(Binding::Http, &headers, None, b"")
            .unwrap_err()
            .attribute,
        "specversion"
    );
    let error = read(Binding::Http, &REQUIRED, Some("text/plain;"), b"x").unwrap_err();
    assert_eq!(error.attribute, "datacontenttype");
}

#[test]
fn the_conformance_binary_request_reads() {
    let headers = http_with(&[("ce-time", "2018-04-05T03:56:24Z")]);
    let event = read(
        Binding::Http,
        &headers,
        Some("application/json; charset=utf-8"),
        b"{\n    \"message\": \"Hello World!\"\n}",
    )
    .unwrap();
    assert_eq!(event.time().unwrap().as_str(), "2018-04-05T03:56:24Z");
    assert_eq!(
        event.datacontenttype(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        event.data(),
        Some(&Data::Json(json!({"message": "Hello World!"})))
    );
}

#[test]
fn attributes_are_written_encoded_for_the_binding() {
    let mut event = CloudEvent::new("1", "/s", "t");
    event.set_subject(Some("Euro \u{20ac} \"100%\"".into()));
    event.set_extension("n", 5).unwrap();
    event.set_extension("ok", true).unwrap();
    event.set_datacontenttype(Some("text/plain".into()));
    let http = Binding::Http.write(&event);
    assert_eq!(
        http,
        [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", "Euro%20%E2%82%AC%20%22100%25%22"),
            ("ce-n", "5"),
            ("ce-ok", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    let kafka = Binding::Kafka.write(&event);
    assert!(kafka.contains(&("ce_subject".into(), "Euro \u{20ac} \"100%\"".into())));
    // Every written value reads back as it was.
    let headers: Vec<(&str, &[u8])> = http
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let back = Binding::Http
        .read(headers.into_iter(), Some("text/plain"), Bytes::new())
        .unwrap();
    assert_eq!(back.subject(), event.subject());
}

#[test]
fn content_types_of_binary_messages() {
    let mut event = CloudEvent::new("1", "/s", "t");
    assert_eq!(content_type(&event), None);
    event.set_data(Some(Data::Json(json!(1))));
    assert_eq!(content_type(&event), Some("application/json"));
    event.set_data(Some(Data::Bytes(Bytes::from_static(b"x"))));
    assert_eq!(content_type(&event), None);
    event.set_datacontenttype(Some("image/png".into()));
    assert_eq!(content_type(&event), Some("image/png"));
}
