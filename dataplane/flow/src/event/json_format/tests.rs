use super::*;
use serde_json::json;

fn read(json: Json) -> Result<CloudEvent, EventError> {
    from_json(json)
}

fn base() -> Map<String, Json> {
    match json!({"specversion": "1.0", "id": "A234-1234-1234", "source": "/mycontext",
                 "type": "com.example.someevent"})
    {
        Json::Object(map) => map,
        _ => unreachable!(),
    }
}

fn with(pairs: Json) -> Json {
    let mut map = base();
    for (k, v) in pairs.as_object().unwrap() {
        map.insert(k.clone(), v.clone());
    }
    Json::Object(map)
}

fn round_trip(json: Json) -> Json {
    serde_json::to_value(read(json).expect("valid")).unwrap()
}

#[test]
fn the_spec_examples_round_trip() {
    // json-format §3.2
    for example in [
        json!({"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext",
               "id": "A234-1234-1234", "time": "2018-04-05T17:31:00Z",
               "comexampleextension1": "value", "comexampleothervalue": 5,
               "datacontenttype": "application/vnd.apache.thrift.binary",
               "data_base64": "AAECAwQ="}),
        json!({"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext",
               "id": "B234-1234-1234", "time": "2018-04-05T17:31:00Z",
               "comexampleextension1": "value", "comexampleothervalue": 5,
               "datacontenttype": "application/xml", "data": "<much wow=\"xml\"/>"}),
        json!({"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext",
               "id": "C234-1234-1234", "time": "2018-04-05T17:31:00Z",
               "comexampleextension1": "value", "comexampleothervalue": 5,
               "datacontenttype": "application/json",
               "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": true}}),
        json!({"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext",
               "id": "D234-1234-1234", "datacontenttype": "text/json", "data": "I'm just a string"}),
    ] {
        assert_eq!(round_trip(example.clone()), example);
    }
}

#[test]
fn data_forms_are_kept_apart() {
    let data = |json: Json| read(json).unwrap().data().cloned();
    assert_eq!(data(with(json!({}))), None);
    assert_eq!(
        data(with(json!({"data": null}))),
        Some(Data::Json(Json::Null))
    );
    assert_eq!(
        data(with(json!({"data": "{\"a\":1}"}))),
        Some(Data::Json(json!("{\"a\":1}"))),
        "a JSON string is not parsed again"
    );
    assert_eq!(
        data(with(json!({"datacontenttype": "text/plain", "data": "hi"}))),
        Some(Data::Text("hi".into()))
    );
    assert_eq!(
        data(with(
            json!({"datacontenttype": "application/json", "data_base64": "eyJhIjoxfQ=="})
        )),
        Some(Data::Bytes(Bytes::from_static(b"{\"a\":1}"))),
        "data_base64 is bytes whatever the content type"
    );
    // No member for no data; `data: null` stays.
    assert_eq!(round_trip(with(json!({}))), with(json!({})));
    assert_eq!(
        round_trip(with(json!({"data": null}))),
        with(json!({"data": null}))
    );
    // data_base64 without datacontenttype gets none.
    assert_eq!(
        round_trip(with(json!({"data_base64": "AP8="}))),
        with(json!({"data_base64": "AP8="}))
    );
}

#[test]
fn null_attributes_are_absent() {
    let event = read(with(json!({"subject": null, "time": null, "ext": null}))).unwrap();
    assert_eq!(event.subject(), None);
    assert_eq!(event.time(), None);
    assert!(event.extensions().is_empty());
}

#[test]
fn integers_are_32_bit_without_fraction() {
    for (value, expected) in [
        (json!(2147483647), 2147483647),
        (json!(-2147483648), i32::MIN),
    ] {
        let event = read(with(json!({ "n": value }))).unwrap();
        assert_eq!(
            event.extension("n"),
            Some(&AttributeValue::Integer(expected))
        );
    }
    for value in [
        json!(2147483648_i64),
        json!(-2147483649_i64),
        json!(1.5),
        serde_json::from_str::<Json>("1e3").unwrap(),
        serde_json::from_str::<Json>("1.0").unwrap(),
    ] {
        let error = read(with(json!({ "n": value }))).unwrap_err();
        assert_eq!(error.attribute, "n", "{value}");
    }
}

#[test]
fn invalid_events_name_their_problem() {
    for (json, attribute, words) in [
        (
            json!({"id": "x", "source": "/s", "type": "t"}),
            "specversion",
            "is required",
        ),
        (
            with(json!({"specversion": "0.3"})),
            "specversion",
            "1.0 only",
        ),
        (
            with(json!({"specversion": "2.0"})),
            "specversion",
            "1.0 only",
        ),
        (
            with(json!({"specversion": 1.0})),
            "specversion",
            "must be a string",
        ),
        (
            with(json!({"id": 1})),
            "id",
            "must be a string, not a number",
        ),
        (with(json!({"type": true})), "type", "must be a string"),
        (with(json!({"time": 5})), "time", "must be a string"),
        (with(json!({"id": null})), "id", "is required"),
        (with(json!({"id": ""})), "id", "must not be empty"),
        (with(json!({"subject": ""})), "subject", "must not be empty"),
        (with(json!({"time": "2018-04-05"})), "time", "RFC 3339"),
        (
            with(json!({"data": 1, "data_base64": "AA=="})),
            "data_base64",
            "both",
        ),
        (
            with(json!({"data_base64": "%%"})),
            "data_base64",
            "not base64",
        ),
        (with(json!({"ext": {"a": 1}})), "ext", "not an object"),
        (with(json!({"ext": [1]})), "ext", "not an array"),
        (with(json!({"Ext": "v"})), "Ext", "attribute name"),
        (
            with(json!({"datacontenttype": "json"})),
            "datacontenttype",
            "media type",
        ),
    ] {
        let error = read(json.clone()).expect_err(&json.to_string());
        assert_eq!(error.attribute, attribute, "{json}");
        assert!(error.message.contains(words), "{json}: {error}");
    }
    assert!(read(json!([1])).is_err());
}

#[test]
fn typed_extensions_are_written_as_their_json_form() {
    let mut event = CloudEvent::new("1", "/s", "t");
    event
        .set_attribute("flag", AttributeValue::Boolean(true))
        .unwrap();
    event
        .set_attribute("bin", AttributeValue::Binary(Bytes::from_static(b"\x01")))
        .unwrap();
    event
        .set_attribute("link", AttributeValue::Uri("https://e.com".into()))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
               "flag": true, "bin": "AQ==", "link": "https://e.com"})
    );
}
