//! The upstream YAML events (`upstream/yaml/**/*.yaml`), sent as the conformance repository's
//! `cloudevents send` builds the HTTP request (`pkg/http/http.go` at the vendored commit):
//! - every value is `TrimSpace`d and left out when empty;
//! - binary mode (also when `Mode` is absent): attributes and extensions as `ce-<name>` headers,
//!   values raw (not percent-encoded, as senders before 1.0.2 did), `datacontenttype` as
//!   `Content-Type`, the body is `Data` as is (trailing newline included);
//! - structured mode: a JSON object of the attributes and extensions (strings) and `data` =
//!   `Data` parsed as JSON (re-serialised compactly), keys sorted as Go's `json.Marshal` sorts a
//!   map, with `Content-Type: application/cloudevents+json; charset=UTF-8`;
//! - `TransportExtensions` are extra headers in both modes.
//!
//! The YAML carries no expectation; ours: `specversion` other than 1.0 is refused; otherwise the
//! event arrives with every attribute as sent — a binary request's header values as a 1.0.2
//! receiver decodes them ([`super::check::decode_header_value`]: the raw `{"othervalue": 5}` is
//! not one quoted string and arrives as it is) — and the data of a binary request as the JSON
//! format carries it: a JSON value for a JSON `datacontenttype`, or without one when it parses
//! as JSON (json-format §3.1.2), a string for UTF-8 text ([`super::check::is_text_media_type`]),
//! `data_base64` otherwise (no `datacontenttype` added, json-format §3.1.1).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::check::{decode_header_value, is_json_media_type, is_text_media_type};
use super::{Expect, Message, Transport, Vector};

/// `pkg/event/event.go`'s `Event`, the fields `send` uses.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Mode", default)]
    mode: String,
    #[serde(rename = "ContextAttributes", default)]
    attributes: Attributes,
    #[serde(rename = "TransportExtensions", default)]
    transport_extensions: BTreeMap<String, String>,
    #[serde(rename = "Data", default)]
    data: String,
}

/// `ContextAttributes`: Go's yaml.v2 reads every scalar into these strings as written
/// (`specversion: 1.0` is the string `1.0`), as serde_yaml_ng does for a `String`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Attributes {
    specversion: String,
    #[serde(rename = "type")]
    ty: String,
    time: String,
    id: String,
    source: String,
    subject: String,
    schemaurl: String,
    datacontenttype: String,
    /// The Go field's YAML tag is spelled so.
    dataecontentncoding: String,
    #[serde(rename = "Extensions")]
    extensions: BTreeMap<String, String>,
}

impl Attributes {
    /// `(attribute, value)` in the order `send` writes them, `datacontenttype` excluded; the
    /// Go field `DataContentEncoding` is written as `datacontentencoding`.
    fn context(&self) -> Vec<(&str, &str)> {
        vec![
            ("specversion", &self.specversion),
            ("type", &self.ty),
            ("time", &self.time),
            ("id", &self.id),
            ("source", &self.source),
            ("subject", &self.subject),
            ("schemaurl", &self.schemaurl),
            ("datacontentencoding", &self.dataecontentncoding),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.as_str()))
        .chain(
            self.extensions
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .collect()
    }
}

pub(super) fn load(dir: &Path) -> Vec<Vector> {
    super::files(dir, "yaml")
        .iter()
        .flat_map(|path| {
            let short = super::short_name(path);
            let text = super::read(path);
            serde_yaml_ng::Deserializer::from_str(&text)
                .enumerate()
                .map(|(i, doc)| {
                    let event = Event::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{} document {}: {e}", path.display(), i + 1));
                    to_vector(&event, &short, i + 1)
                        .unwrap_or_else(|e| panic!("{} document {}: {e}", path.display(), i + 1))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn to_vector(event: &Event, file: &str, n: usize) -> Result<Vector, String> {
    let structured = match event.mode.as_str() {
        "structured" => true,
        "" | "binary" => false,
        other => return Err(format!("unknown mode {other:?}")),
    };
    let trimmed = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let attrs = &event.attributes;
    let mut message = Message::default();
    let mut expected = Map::new();
    // The first binary-mode header value a receiver must refuse (§3.1.3.2), if any.
    let mut undecodable = None;
    if structured {
        let mut env = BTreeMap::new();
        for (k, v) in attrs
            .context()
            .into_iter()
            .chain([("datacontenttype", attrs.datacontenttype.as_str())])
        {
            if let Some(v) = trimmed(v) {
                env.insert(k.to_owned(), Value::String(v));
            }
        }
        if !event.data.is_empty() {
            let data: Value =
                serde_json::from_str(&event.data).map_err(|e| format!("Data: {e}"))?;
            env.insert("data".to_owned(), data);
        }
        expected.extend(env);
        message = Message::structured(
            "application/cloudevents+json; charset=UTF-8",
            &Value::Object(expected.clone()),
        );
    } else {
        for (k, v) in attrs.context() {
            if let Some(v) = trimmed(v) {
                message.headers.push((format!("ce-{k}"), v.clone()));
                match decode_header_value(&v) {
                    Some(decoded) => {
                        expected.insert(k.to_owned(), Value::String(decoded));
                    }
                    None => {
                        undecodable.get_or_insert_with(|| k.to_owned());
                    }
                }
            }
        }
        let content_type = trimmed(&attrs.datacontenttype);
        if let Some(ct) = &content_type {
            message
                .headers
                .push(("Content-Type".to_owned(), ct.clone()));
            expected.insert("datacontenttype".to_owned(), Value::String(ct.clone()));
        }
        message.body = event.data.clone().into_bytes();
        if let Some((member, value)) = data_member(content_type.as_deref(), &message.body) {
            expected.insert(member.to_owned(), value);
        }
    }
    for (k, v) in &event.transport_extensions {
        if let Some(v) = trimmed(v) {
            message.headers.push((k.clone(), v));
        }
    }
    let id = trimmed(&attrs.id).unwrap_or_default();
    let mode = if structured { "structured" } else { "binary" };
    let expect = match undecodable {
        _ if attrs.specversion.trim() != "1.0" => Expect::Invalid("specversion".to_owned()),
        Some(attribute) => Expect::Invalid(attribute),
        None => Expect::Valid(expected),
    };
    Ok(Vector {
        name: format!("{file} #{n} {id} ({mode})"),
        clause: "upstream conformance YAML (as `cloudevents send` sends it)".to_owned(),
        transport: Transport::Http,
        message,
        expect,
    })
}

/// How the JSON format carries a binary-mode body: `data` (JSON value or text) or
/// `data_base64`; `None` for an empty body (no data).
fn data_member(content_type: Option<&str>, body: &[u8]) -> Option<(&'static str, Value)> {
    if body.is_empty() {
        return None;
    }
    if content_type.is_none_or(is_json_media_type) {
        if let Ok(value) = serde_json::from_slice(body) {
            return Some(("data", value));
        }
    }
    match std::str::from_utf8(body) {
        Ok(text) if content_type.is_some_and(is_text_media_type) => {
            Some(("data", Value::String(text.to_owned())))
        }
        _ => Some((
            "data_base64",
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        )),
    }
}
