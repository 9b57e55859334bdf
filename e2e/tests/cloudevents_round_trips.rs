//! The same CloudEvents through Fiso's other bindings and formats. Every valid event of
//! `e2e/conformance/fiso/*.yaml` goes into one real `fiso flow` as a structured HTTP request and
//! out through
//! - the Kafka binding in binary mode and in structured mode (a Kafka sink, then a Kafka source
//!   reading the topic back; an event without data is a null value in binary mode), and
//! - the Protobuf format (a gRPC sink into Fiso's own gRPC source),
//!
//! each ending at a structured HTTP sink, where it must arrive as it was sent, except for what
//! the hop's format cannot carry, each spelled out in [`after_hop`]:
//! - header bindings carry strings, so integer and boolean extensions arrive as strings;
//! - binary modes (Kafka binary, Protobuf `binary_data`) read bytes with a JSON content type as
//!   that JSON, and a Kafka binary-mode value without a content type as JSON when it parses;
//! - JSON data without `datacontenttype` gains `application/json` in another binding or format
//!   (json-format §3.1.2);
//! - Protobuf carries `time` as a Timestamp: the same instant, written in UTC.

use std::path::Path;

use base64::Engine as _;
use fiso_e2e::kafka::{brokers, create_topic, kafka_source, unique};
use fiso_e2e::{client, send, FisoProcess, FlowDir, SinkServer};
use fiso_flow::event::cloudevent::CORE_ATTRIBUTES;
use serde_json::{Map, Value};

/// A hop between the HTTP source and the structured HTTP sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    KafkaBinary,
    KafkaStructured,
    Protobuf,
}

const HOPS: [Hop; 3] = [Hop::KafkaBinary, Hop::KafkaStructured, Hop::Protobuf];

impl Hop {
    fn path(self) -> &'static str {
        match self {
            Hop::KafkaBinary => "kb",
            Hop::KafkaStructured => "ks",
            Hop::Protobuf => "pb",
        }
    }
}

/// Every `valid` event of the vector files, named `<file>: <vector>`.
fn valid_events() -> Vec<(String, Map<String, Value>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/fiso");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the vector folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a vector file");
        let doc: Value = serde_yaml_ng::from_str(&text).expect("vector YAML");
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        for vector in doc["vectors"].as_array().expect("vectors") {
            if let Some(Value::Object(event)) = vector.get("valid") {
                let name = vector["name"].as_str().unwrap_or("?");
                events.push((format!("{stem}: {name}"), event.clone()));
            }
        }
    }
    assert!(events.len() > 20, "only {} valid vectors", events.len());
    events
}

fn is_json_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let subtype = essence.split_once('/').map_or("", |(_, s)| s);
    subtype == "json" || subtype.ends_with("+json")
}

/// `event` as the structured sink must receive it after `hop`.
fn after_hop(hop: Hop, event: &Map<String, Value>) -> Map<String, Value> {
    let mut out = event.clone();
    let binary = matches!(hop, Hop::KafkaBinary | Hop::Protobuf);
    if hop != Hop::KafkaStructured {
        let ct = out.get("datacontenttype").and_then(Value::as_str);
        if ct.is_none() && out.contains_key("data") {
            out.insert("datacontenttype".into(), "application/json".into());
        }
    }
    if binary {
        let ct = out.get("datacontenttype").and_then(Value::as_str);
        let bytes_as_json = match ct {
            Some(ct) => is_json_type(ct),
            None => hop == Hop::KafkaBinary && bytes_are_json(&out),
        };
        if bytes_as_json {
            if let Some(Value::String(encoded)) = out.remove("data_base64") {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("base64");
                let json = serde_json::from_slice(&bytes).expect("JSON bytes under a JSON type");
                out.insert("data".into(), json);
            }
        }
    }
    if hop == Hop::KafkaBinary {
        for (name, value) in out.iter_mut() {
            let member =
                CORE_ATTRIBUTES.contains(&name.as_str()) || name == "data" || name == "data_base64";
            if !member && !value.is_string() {
                *value = Value::String(value.to_string());
            }
        }
    }
    out
}

fn bytes_are_json(event: &Map<String, Value>) -> bool {
    event
        .get("data_base64")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|bytes| serde_json::from_slice::<Value>(&bytes).is_ok())
}

/// The instant of an RFC 3339 text, so `+01:00` and its UTC spelling compare equal.
fn instant(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// What differs between `expected` and `got`, or nothing.
fn difference(hop: Hop, expected: &Map<String, Value>, got: &Value) -> Option<String> {
    let Some(got) = got.as_object() else {
        return Some(format!("not a JSON object: {got}"));
    };
    let mut got = got.clone();
    let mut expected = expected.clone();
    match expected.get("time") {
        // The input had no time: Fiso stamped one, which every hop must keep.
        None => {
            if got.remove("time").as_ref().and_then(instant).is_none() {
                return Some("no RFC 3339 `time` was stamped".into());
            }
        }
        Some(t) if hop == Hop::Protobuf => {
            if got.get("time").and_then(instant) != instant(t) {
                return Some(format!("time {:?} is not the instant {t}", got.get("time")));
            }
            got.remove("time");
            expected.remove("time");
        }
        Some(_) => {}
    }
    (got != expected).then(|| {
        format!(
            "expected {}\n     got {}",
            Value::Object(expected),
            Value::Object(got)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_cross_kafka_and_protobuf_unchanged() {
    let events = valid_events();
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    let listen = "127.0.0.1:0";
    let topic = |hop: Hop| unique(&format!("rt-{}", hop.path()));
    let (binary_topic, structured_topic) = (topic(Hop::KafkaBinary), topic(Hop::KafkaStructured));
    for t in [&binary_topic, &structured_topic] {
        create_topic(t, 1).await;
    }
    let kafka = format!(
        "kafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\n",
        brokers()
    );
    let http_source = |path: &str| {
        format!(
            "source:\n  type: http\n  config:\n    listenAddr: \"{listen}\"\n    path: /{path}\n"
        )
    };
    let http_sink = |path: &str| {
        format!(
            "sink:\n  type: http\n  config:\n    url: {}\n",
            sink.url(&format!("/{path}"))
        )
    };
    for (hop, topic) in [
        (Hop::KafkaBinary, &binary_topic),
        (Hop::KafkaStructured, &structured_topic),
    ] {
        let mode = if hop == Hop::KafkaBinary {
            "binary"
        } else {
            "structured"
        };
        dir.write(
            &format!("{}-out.yaml", hop.path()),
            &format!(
                "name: {p}-out\n{kafka}{}sink:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n    mode: {mode}\n",
                http_source(hop.path()),
                p = hop.path(),
            ),
        );
        dir.write(
            &format!("{}-in.yaml", hop.path()),
            &format!(
                "name: {p}-in\n{}{}",
                kafka_source(topic, &unique("rt-group")),
                http_sink(hop.path()),
                p = hop.path(),
            ),
        );
    }
    dir.write(
        "pb-in.yaml",
        &format!(
            "name: pb-in\nsource:\n  type: grpc\n  config:\n    listenAddr: 127.0.0.1:0\n{}",
            http_sink("pb")
        ),
    );
    // The gRPC source listens on a port of its own choosing (a port picked free beforehand can
    // be taken by another test first); the flow sending to it joins after.
    let fiso = FisoProcess::start(&dir.path()).await;
    let grpc = fiso.grpc_addr("pb-in").await;
    let mark = fiso.log_mark();
    dir.write(
        "pb-out.yaml",
        &format!(
            "name: pb-out\n{}sink:\n  type: grpc\n  config:\n    address: {grpc}\n",
            http_source("pb")
        ),
    );
    fiso.wait_for_log_since(mark, |l| l.is_flow_started("pb-out"))
        .await;
    let base = format!("http://{}", fiso.http_addr(listen).await);

    for (name, event) in &events {
        let body = Value::Object(event.clone()).to_string();
        for hop in HOPS {
            let answer = send(
                client()
                    .post(format!("{base}/{}", hop.path()))
                    .header("content-type", "application/cloudevents+json")
                    .body(body.clone()),
            )
            .await;
            assert!(
                answer.status.is_success(),
                "{name} via {hop:?}: {} {}\n{}",
                answer.status,
                answer.text(),
                fiso.logs().tail(20)
            );
        }
    }
    let received = sink.wait_for_requests(events.len() * HOPS.len()).await;
    let mut problems = Vec::new();
    for hop in HOPS {
        let at_sink: Vec<_> = received
            .iter()
            .filter(|r| r.path == format!("/{}", hop.path()))
            .collect();
        assert_eq!(at_sink.len(), events.len(), "{hop:?}");
        for ((name, event), got) in events.iter().zip(at_sink) {
            if let Some(diff) = difference(hop, &after_hop(hop, event), &got.json()) {
                problems.push(format!("{name} via {hop:?}:\n  {diff}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
