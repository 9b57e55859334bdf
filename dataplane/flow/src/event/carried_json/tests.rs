use serde_json::Value as Json;

use super::CarriedJson;
use crate::event::json::to_vec_plain;

fn read(body: &str) -> Option<CarriedJson> {
    CarriedJson::read(&bytes::Bytes::copy_from_slice(body.as_bytes()))
}

/// What the flow writes for `body` when it parses it.
fn written_after_a_parse(body: &str) -> Option<String> {
    let value: Json = serde_json::from_str(body).ok()?;
    Some(String::from_utf8(to_vec_plain(&value).unwrap()).unwrap())
}

#[test]
fn a_payload_in_its_written_form_is_carried_as_it_is() {
    for body in [
        r#"{"order_id":"ORD-1","customer":{"name":"Ada","tier":"gold"},"amount":99.5,"items":[{"sku":"A-1","qty":2}],"note":"x"}"#,
        r#"[1,-2,0,-0,3.25,"a b",true,false,null,{},[]]"#,
        r#""a string with spaces, é and ✓""#,
        "123456789012345678901234567890123456789",
        "0.1000000000000000055511151231257827",
        r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
        "null",
    ] {
        let carried = read(body).unwrap_or_else(|| panic!("{body}"));
        assert_eq!(carried.text(), body);
        assert_eq!(
            Some(carried.text().to_owned()),
            written_after_a_parse(body),
            "carrying {body} writes what a parse would"
        );
        assert_eq!(
            carried.to_json(),
            serde_json::from_str::<Json>(body).unwrap()
        );
        assert_eq!(serde_json::to_string(&carried).unwrap(), body);
        assert_eq!(
            serde_json::to_value(&carried).unwrap(),
            serde_json::from_str::<Json>(body).unwrap()
        );
    }
}

#[test]
fn whitespace_around_the_document_is_dropped_as_a_parse_drops_it() {
    let carried = read(" \n{\"a\":1}\r\n").unwrap();
    assert_eq!(carried.text(), r#"{"a":1}"#);
}

#[test]
fn a_payload_a_parse_would_write_differently_is_not_carried() {
    for body in [
        r#"{"a": 1}"#,
        "[1,\n2]",
        r#"{"a":"\u00e9"}"#,
        r#"{"a":"\/"}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":{"b":1,"c":2,"b":3}}"#,
        "1.50",
        "1e3",
        "1E400",
        "-0.0",
        "100.0",
    ] {
        assert!(read(body).is_none(), "{body} is parsed");
        let written = written_after_a_parse(body).unwrap();
        assert_ne!(written, body.trim(), "a parse really rewrites {body}");
    }
}

#[test]
fn a_payload_with_an_escape_is_parsed_even_when_it_would_be_written_the_same() {
    let body = r#"{"a":"\"quoted\""}"#;
    assert_eq!(written_after_a_parse(body).as_deref(), Some(body));
    assert!(read(body).is_none());
}

#[test]
fn a_structured_cloudevent_is_not_carried_but_a_nested_specversion_is() {
    let event = r#"{"specversion":"1.0","id":"e","source":"s","type":"t"}"#;
    assert!(read(event).is_none());
    let nested = r#"{"event":{"specversion":"1.0"}}"#;
    assert!(read(nested).is_some());
}

#[test]
fn a_body_a_parse_refuses_is_not_carried() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let at_the_limit = format!("{}{}", "[".repeat(128), "]".repeat(128));
    assert!(serde_json::from_str::<Json>(&deep).is_err());
    assert!(read(&deep).is_none());
    assert_eq!(
        read(&at_the_limit).is_some(),
        serde_json::from_str::<Json>(&at_the_limit).is_ok(),
        "the nesting limit is the parse's"
    );
    for body in [
        &b"{\"a\":1"[..],
        b"{\"a\":1}}",
        b"{\"a\":1} x",
        b"[1,]",
        b"\"\xff\"",
        b"\"a\x01\"",
        b"",
        b"   ",
        b"NaN",
        b"01",
    ] {
        assert!(
            CarriedJson::read(&bytes::Bytes::copy_from_slice(body)).is_none(),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(serde_json::from_slice::<Json>(body).is_err());
    }
}

#[test]
fn an_event_with_carried_data_is_written_as_with_parsed_data_in_every_format() {
    use crate::event::protobuf::to_proto;
    use crate::{Data, FlowDefaults, InputEvent};

    let body = r#"{"a":[1,2.5,"x"],"b":{"c":null},"n":123456789012345678901234567890}"#;
    let flow = FlowDefaults::new("f");
    let at = chrono::Utc::now();
    let event = |data: Data| {
        InputEvent::from_payload(data, flow.event().with_id("e-1").received_at(at)).into_event()
    };
    let carried = event(Data::CarriedJson(read(body).unwrap()));
    let parsed = event(Data::Json(serde_json::from_str(body).unwrap()));
    assert_eq!(
        to_vec_plain(&carried).unwrap(),
        to_vec_plain(&parsed).unwrap()
    );
    assert_eq!(
        carried.data().unwrap().to_body().unwrap(),
        parsed.data().unwrap().to_body().unwrap()
    );
    assert_eq!(carried.datacontenttype(), parsed.datacontenttype());
    assert_eq!(to_proto(&carried), to_proto(&parsed));
}

/// What a parse decides about `body`: whether the flow may carry it as it is.
fn carried_by_a_parse(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    // Whitespace around the document is dropped, as a parse drops it.
    let text = text.trim_matches([' ', '\n', '\r', '\t']);
    let structured = matches!(
        serde_json::from_str::<Json>(text),
        Ok(Json::Object(map)) if map.contains_key("specversion")
    );
    !text.contains('\\') && !structured && written_after_a_parse(text).as_deref() == Some(text)
}

/// Random texts near JSON, from pieces that make the walk's every decision: it carries
/// exactly what a parse writes back unchanged.
#[test]
fn the_walk_carries_what_a_parse_writes_back_unchanged() {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"a\"",
        "\"b\"",
        "\"é✓\"",
        "\"\u{1}\"",
        "\"",
        "1",
        "0",
        "-",
        "-0",
        "12",
        "2.5",
        "1.50",
        "0.1",
        "1e3",
        ".",
        "true",
        "fals",
        "null",
        " ",
        "\"specversion\"",
        "\\",
        // Long digit runs: fractions a double rounds, with and without a trailing zero.
        "00000000000000000003",
        "0.00000000000000000000",
        "99999999999999999999",
        "10",
    ];
    let mut rng = fastrand::Rng::with_seed(17);
    let (mut carried, mut tried) = (0, 0);
    while tried < 200_000 {
        let mut body = String::new();
        for _ in 0..rng.usize(1..12) {
            body.push_str(PIECES[rng.usize(..PIECES.len())]);
        }
        tried += 1;
        let walk = read(&body).is_some();
        assert_eq!(walk, carried_by_a_parse(body.as_bytes()), "{body:?}");
        carried += usize::from(walk);
    }
    assert!(
        carried > 1000,
        "the texts reach the carried side: {carried}"
    );
}

#[test]
fn invalid_utf8_in_a_string_is_not_carried() {
    for body in [&b"[\"\xc3\"]"[..], b"{\"\xff\":1}", b"\"\xed\xa0\x80\""] {
        assert!(CarriedJson::read(&bytes::Bytes::copy_from_slice(body)).is_none());
        assert!(!carried_by_a_parse(body));
    }
}

#[test]
fn the_nesting_limit_is_the_parses() {
    use super::written_form::MAX_DEPTH;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    for text in [nested(MAX_DEPTH), objects(MAX_DEPTH)] {
        assert!(read(&text).is_some());
        assert!(serde_json::from_str::<Json>(&text).is_ok());
    }
    for text in [nested(MAX_DEPTH + 1), objects(MAX_DEPTH + 1)] {
        assert!(read(&text).is_none());
        assert!(serde_json::from_str::<Json>(&text).is_err());
    }
}
