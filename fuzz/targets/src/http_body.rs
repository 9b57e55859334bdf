//! The HTTP source's request handling between "body read" and "event": headers (content type,
//! binary-mode `ce-*` attributes) and body → the flow's input event, or a 400-class error.
//!
//! Input, like a request head: `name: value` header lines, an empty line, then the body. Lines
//! that are not valid headers are skipped; without an empty line everything is the body.

use fiso_flow::event::header_binding::Binding;
use fiso_flow::event::json_format;
use fiso_flow::sources::http::input_event;
use fiso_flow::{FlowDefaults, Scope, Transformer};
use http::{HeaderMap, HeaderName, HeaderValue};
use indexmap::IndexMap;

pub fn run(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&[][..], data),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }

    let defaults = FlowDefaults::new("fuzz");
    let Ok(input) = input_event(
        &headers,
        bytes::Bytes::copy_from_slice(body),
        defaults.event(),
    ) else {
        return;
    };
    let event = input.event();
    for (name, value) in Binding::Http.write(event) {
        assert!(HeaderValue::from_str(&value).is_ok(), "{name}: {value:?}");
    }
    let json = serde_json::to_value(event).expect("an event is JSON");
    let back = json_format::from_json(json).expect("a valid event reads back");
    assert_eq!(&back, event);
    // What the flow reads of every event next: its attributes in the CEL scope.
    let fields = IndexMap::from([
        ("id".to_owned(), "id".to_owned()),
        ("time".to_owned(), "time".to_owned()),
        ("subject".to_owned(), "subject".to_owned()),
        ("data".to_owned(), "data".to_owned()),
    ]);
    let transformer = Transformer::compile(&fields).expect("fixed fields compile");
    let _ = transformer.transform(&Scope::new(&input));
}
