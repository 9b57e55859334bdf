//! The CloudEvents 1.0 event every source reads into and every sink writes from: one model for
//! the JSON format ([`super::json_format`]), the header bindings of HTTP and Kafka
//! ([`super::header_binding`]) and the Protobuf format ([`super::protobuf`]).
//!
//! It keeps what the formats can tell apart: no data, JSON data (`null` included), text and
//! bytes ([`Data`]); attribute values with their CloudEvents type ([`AttributeValue`]), so a
//! Protobuf `ce_uri` or an integer extension read from JSON is written back as one; a `time`
//! with the text it came with. [`CloudEvent::validate`] is the spec's rules (spec.md
//! "Context Attributes" and "Type System"), applied where an event is read and again before one
//! is delivered.
//!
//! Own code rather than the `cloudevents-sdk` crate's `Event`: that type re-renders
//! `dataschema` through `url::Url` (`https://e.com` becomes `https://e.com/`), stores integer
//! extensions as 64-bit, turns `data_base64` with a JSON content type into JSON, and cannot tell
//! a Protobuf `ce_uri` from a string — each an interop bug for a relay.

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use indexmap::IndexMap;
use iri_string::types::{UriAbsoluteStr, UriReferenceStr};
use serde_json::Value as Json;

use super::carried_json::CarriedJson;
use super::media_type::{self, MediaType};

/// The only `specversion` Fiso reads and writes.
pub const SPEC_VERSION: &str = "1.0";

/// The attributes spec.md defines; any other attribute is an extension.
pub const CORE_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// Why an event is not a valid CloudEvent, naming the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CloudEvent `{attribute}`: {message}")]
pub struct EventError {
    pub attribute: String,
    pub message: String,
}

impl EventError {
    pub fn new(attribute: impl Into<String>, message: impl Into<String>) -> Self {
        EventError {
            attribute: attribute.into(),
            message: message.into(),
        }
    }
}

/// An event that is not a valid CloudEvent is the sender's error.
impl From<EventError> for crate::FlowError {
    fn from(e: EventError) -> Self {
        crate::FlowError::invalid_input(e.to_string())
    }
}

/// The event's data, as the formats distinguish it.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// JSON-formatted data, `null` included (json-format §3.1: explicit `null` is data).
    Json(Json),
    /// JSON data a flow carries without reading it, kept as its text (see [`CarriedJson`]).
    CarriedJson(CarriedJson),
    /// Text data of a non-JSON content type (`text/plain`, XML, ...).
    Text(String),
    /// Bytes: `data_base64` in JSON, `binary_data` in Protobuf, the raw body in binary mode.
    Bytes(Bytes),
    /// A Protobuf message (`proto_data`, protobuf-format §3): its type URL and encoding. Other
    /// formats carry its bytes.
    Proto { type_url: String, value: Bytes },
}

impl Data {
    /// The data of a binary-mode message body (HTTP, Kafka) whose content type is
    /// `content_type`: JSON for a JSON type (an error if it is not JSON), text for a text type
    /// that is UTF-8, else bytes. Without a content type, JSON when the body parses as JSON
    /// (json-format §3.1.2: an absent `datacontenttype` means `application/json`; the
    /// conformance material sends JSON without one), else bytes. An empty body is no data.
    pub fn from_body(
        body: Bytes,
        content_type: Option<&MediaType>,
    ) -> Result<Option<Data>, EventError> {
        if body.is_empty() {
            return Ok(None);
        }
        Ok(Some(match content_type {
            Some(ct) if ct.is_json() => Data::Json(serde_json::from_slice(&body).map_err(|e| {
                EventError::new(
                    "data",
                    format!(
                        "the body is not valid JSON, as its content type {} says: {e}",
                        ct.essence()
                    ),
                )
            })?),
            Some(ct) if ct.is_text() => match String::from_utf8(body.to_vec()) {
                Ok(text) => Data::Text(text),
                Err(_) => Data::Bytes(body),
            },
            Some(_) => Data::Bytes(body),
            None => match serde_json::from_slice(&body) {
                Ok(json) => Data::Json(json),
                Err(_) => Data::Bytes(body),
            },
        }))
    }

    /// The bytes a binary-mode message carries: JSON as compact text (plain-decimal numbers),
    /// text as UTF-8, bytes as they are.
    pub fn to_body(&self) -> Result<Bytes, serde_json::Error> {
        Ok(match self {
            Data::Json(json) => Bytes::from(super::json::to_vec_plain(json)?),
            Data::CarriedJson(json) => Bytes::copy_from_slice(json.text().as_bytes()),
            Data::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
            Data::Bytes(bytes) | Data::Proto { value: bytes, .. } => bytes.clone(),
        })
    }

    /// JSON data, parsed or carried as text.
    pub fn is_json(&self) -> bool {
        matches!(self, Data::Json(_) | Data::CarriedJson(_))
    }

    /// The bytes of binary data (`Bytes`, `Proto`).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Data::Bytes(bytes) | Data::Proto { value: bytes, .. } => Some(bytes),
            Data::Json(_) | Data::CarriedJson(_) | Data::Text(_) => None,
        }
    }

    /// The data as one JSON value, for what only speaks JSON (the `transform test` output):
    /// text as a string, bytes as a base64 string.
    pub fn to_json(&self) -> Json {
        use base64::Engine as _;
        match self {
            Data::Json(json) => json.clone(),
            Data::CarriedJson(json) => json.to_json(),
            Data::Text(text) => Json::String(text.clone()),
            Data::Bytes(bytes) | Data::Proto { value: bytes, .. } => {
                Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// A `time` attribute: the instant and the RFC 3339 text it was given as, written back
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    at: DateTime<FixedOffset>,
    text: String,
}

impl Timestamp {
    /// Parses RFC 3339 (`2018-04-05T17:31:00Z`, `…T17:31:00.123+02:00`).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let at = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
        // chrono also reads a space as the separator: RFC 3339 §5.6 does not (`T` or `t`).
        if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
            return Err(format!(
                "{text:?} is not an RFC 3339 timestamp: the date and time must be joined by `T`"
            ));
        }
        Ok(Timestamp {
            at,
            text: text.to_owned(),
        })
    }

    /// An instant as UTC text with as many fraction digits as it needs.
    pub fn from_utc(at: DateTime<Utc>) -> Timestamp {
        Timestamp {
            text: at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            at: at.fixed_offset(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn to_utc(&self) -> DateTime<Utc> {
        self.at.with_timezone(&Utc)
    }
}

/// An attribute value with its CloudEvents type (spec.md "Type System").
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Boolean(bool),
    /// 32-bit, as the spec's Integer.
    Integer(i32),
    String(String),
    Binary(Bytes),
    Uri(String),
    UriRef(String),
    Timestamp(Timestamp),
}

impl AttributeValue {
    /// The canonical string form (spec.md "Type System"), which header bindings carry.
    pub fn canonical(&self) -> std::borrow::Cow<'_, str> {
        use base64::Engine as _;
        match self {
            AttributeValue::Boolean(b) => b.to_string().into(),
            AttributeValue::Integer(i) => i.to_string().into(),
            AttributeValue::String(s) | AttributeValue::Uri(s) | AttributeValue::UriRef(s) => {
                s.as_str().into()
            }
            AttributeValue::Binary(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
            AttributeValue::Timestamp(t) => t.as_str().into(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::Boolean(_) => "a boolean",
            AttributeValue::Integer(_) => "an integer",
            AttributeValue::String(_) => "a string",
            AttributeValue::Binary(_) => "binary",
            AttributeValue::Uri(_) => "a URI",
            AttributeValue::UriRef(_) => "a URI-reference",
            AttributeValue::Timestamp(_) => "a timestamp",
        }
    }
}

impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(s)
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::String(s.to_owned())
    }
}

impl From<bool> for AttributeValue {
    fn from(b: bool) -> Self {
        AttributeValue::Boolean(b)
    }
}

impl From<i32> for AttributeValue {
    fn from(i: i32) -> Self {
        AttributeValue::Integer(i)
    }
}

/// A CloudEvent. Build one with [`CloudEvent::new`] and the setters, then [`validate`] it: the
/// setters take what they are given, so a reader can report every rule in one place.
///
/// [`validate`]: CloudEvent::validate
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    id: String,
    source: String,
    type_: String,
    subject: Option<String>,
    time: Option<Timestamp>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    extensions: IndexMap<String, AttributeValue>,
    data: Option<Data>,
}

impl CloudEvent {
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        type_: impl Into<String>,
    ) -> CloudEvent {
        CloudEvent {
            id: id.into(),
            source: source.into(),
            type_: type_.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: IndexMap::new(),
            data: None,
        }
    }

    pub fn specversion(&self) -> &'static str {
        SPEC_VERSION
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn ty(&self) -> &str {
        &self.type_
    }

    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    pub fn time(&self) -> Option<&Timestamp> {
        self.time.as_ref()
    }

    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }

    pub fn data(&self) -> Option<&Data> {
        self.data.as_ref()
    }

    pub fn extensions(&self) -> &IndexMap<String, AttributeValue> {
        &self.extensions
    }

    pub fn extension(&self, name: &str) -> Option<&AttributeValue> {
        self.extensions.get(name)
    }

    pub fn set_id(&mut self, id: impl Into<String>) {
        self.id = id.into();
    }

    pub fn set_source(&mut self, source: impl Into<String>) {
        self.source = source.into();
    }

    pub fn set_type(&mut self, type_: impl Into<String>) {
        self.type_ = type_.into();
    }

    pub fn set_subject(&mut self, subject: Option<String>) {
        self.subject = subject;
    }

    pub fn set_time(&mut self, time: Option<Timestamp>) {
        self.time = time;
    }

    pub fn set_datacontenttype(&mut self, datacontenttype: Option<String>) {
        self.datacontenttype = datacontenttype;
    }

    pub fn set_dataschema(&mut self, dataschema: Option<String>) {
        self.dataschema = dataschema;
    }

    pub fn set_data(&mut self, data: Option<Data>) {
        self.data = data;
    }

    pub fn take_data(&mut self) -> Option<Data> {
        self.data.take()
    }

    /// Sets an extension; a core attribute's name is an error (use its setter).
    pub fn set_extension(
        &mut self,
        name: impl Into<String>,
        value: impl Into<AttributeValue>,
    ) -> Result<(), EventError> {
        let name = name.into();
        check_extension_name(&name)?;
        let value = value.into();
        check_extension_value(&name, &value)?;
        self.extensions.insert(name, value);
        Ok(())
    }

    pub fn remove_extension(&mut self, name: &str) -> Option<AttributeValue> {
        self.extensions.shift_remove(name)
    }

    /// Sets the attribute `name` — core or extension — from a typed value, as the Protobuf
    /// format and the header bindings read them. `specversion` must be `1.0`; the value of a
    /// core attribute must have its type or be a string of it.
    pub fn set_attribute(&mut self, name: &str, value: AttributeValue) -> Result<(), EventError> {
        let text = |value: AttributeValue| match value {
            AttributeValue::String(s) | AttributeValue::Uri(s) | AttributeValue::UriRef(s) => Ok(s),
            other => Err(EventError::new(
                name,
                format!("must be a string, not {}", other.type_name()),
            )),
        };
        match name {
            "specversion" => check_specversion(&text(value)?),
            "id" => text(value).map(|v| self.id = v),
            "source" => text(value).map(|v| self.source = v),
            "type" => text(value).map(|v| self.type_ = v),
            "subject" => text(value).map(|v| self.subject = Some(v)),
            "datacontenttype" => text(value).map(|v| self.datacontenttype = Some(v)),
            "dataschema" => text(value).map(|v| self.dataschema = Some(v)),
            "time" => {
                let time = match value {
                    AttributeValue::Timestamp(t) => t,
                    other => Timestamp::parse(&text(other)?)
                        .map_err(|message| EventError::new("time", message))?,
                };
                self.time = Some(time);
                Ok(())
            }
            _ => self.set_extension(name, value),
        }
    }

    /// Every rule of spec.md on the attributes: `id`, `source`, `type` non-empty; `source` a
    /// URI-reference and `dataschema` an absolute URI (RFC 3986); `datacontenttype` a media
    /// type (RFC 2046); `subject`, `datacontenttype`, `dataschema` not empty when present; no
    /// string holding a control character; extension names `[a-z0-9]+`.
    pub fn validate(&self) -> Result<(), EventError> {
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.type_),
        ] {
            if value.is_empty() {
                return Err(EventError::new(name, "must not be empty"));
            }
            check_text(name, value)?;
        }
        check_uri_reference("source", &self.source)?;
        for (name, value) in [
            ("subject", &self.subject),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ] {
            if let Some(value) = value {
                if value.is_empty() {
                    return Err(EventError::new(
                        name,
                        "must not be empty when present (omit it instead)",
                    ));
                }
                check_text(name, value)?;
            }
        }
        if let Some(ct) = &self.datacontenttype {
            media_type::check(ct).map_err(|e| EventError::new("datacontenttype", e.to_string()))?;
        }
        if let Some(schema) = &self.dataschema {
            check_absolute_uri("dataschema", schema)?;
        }
        for (name, value) in &self.extensions {
            check_extension_name(name)?;
            check_extension_value(name, value)?;
        }
        Ok(())
    }
}

/// `specversion` other than `1.0` is refused, naming the one Fiso speaks.
pub fn check_specversion(version: &str) -> Result<(), EventError> {
    if version == SPEC_VERSION {
        Ok(())
    } else {
        Err(EventError::new(
            "specversion",
            format!("{version:?} is not supported: Fiso reads and writes CloudEvents 1.0 only"),
        ))
    }
}

/// spec.md "Type System", String: no control characters (U+0000–U+001F, U+007F–U+009F) — they
/// have no agreed representation, and a CR or LF in a header would split it — and no Unicode
/// noncharacters (U+FDD0–U+FDEF and the last two code points of every plane). Rust strings hold
/// no unpaired surrogates, the spec's third rule.
pub fn check_text(name: &str, text: &str) -> Result<(), EventError> {
    let refused = |c: char| {
        let code = u32::from(c);
        let what = if c.is_control() {
            "the control character"
        } else {
            "the Unicode noncharacter"
        };
        EventError::new(
            name,
            format!("contains {what} U+{code:04X}, which CloudEvents attributes must not carry"),
        )
    };
    // Printable ASCII, what attributes nearly always are, needs no look at each character;
    // the characters are looked at from the first byte that is not (a character boundary:
    // every byte before it is ASCII).
    let Some(rest) = text.bytes().position(|b| !matches!(b, b' '..=b'~')) else {
        return Ok(());
    };
    match text[rest..]
        .chars()
        .find(|&c| c.is_control() || is_noncharacter(c))
    {
        None => Ok(()),
        Some(c) => Err(refused(c)),
    }
}

fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// spec.md "Type System", URI-reference (RFC 3986 §4.1).
pub fn check_uri_reference(name: &str, text: &str) -> Result<(), EventError> {
    UriReferenceStr::new(text)
        .map(drop)
        .map_err(|_| EventError::new(name, format!("{text:?} is not a URI-reference (RFC 3986)")))
}

/// spec.md "Type System", URI: an absolute URI (RFC 3986 §4.3: a scheme, no fragment).
pub fn check_absolute_uri(name: &str, text: &str) -> Result<(), EventError> {
    UriAbsoluteStr::new(text).map(drop).map_err(|_| {
        EventError::new(
            name,
            format!("{text:?} is not an absolute URI (RFC 3986 §4.3: a scheme, no fragment)"),
        )
    })
}

/// spec.md "Attribute Naming Convention": lower-case ASCII letters and digits; `data` is the
/// event's data, never an attribute.
pub fn check_extension_name(name: &str) -> Result<(), EventError> {
    if CORE_ATTRIBUTES.contains(&name) || name == "data" {
        return Err(EventError::new(
            name,
            "is not an extension attribute: the name belongs to the CloudEvents spec",
        ));
    }
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(EventError::new(
            name,
            "is not a valid attribute name (lower-case ASCII letters and digits only)",
        ))
    }
}

fn check_extension_value(name: &str, value: &AttributeValue) -> Result<(), EventError> {
    match value {
        AttributeValue::String(text) => check_text(name, text),
        AttributeValue::UriRef(text) => check_uri_reference(name, text),
        AttributeValue::Uri(text) => check_absolute_uri(name, text),
        AttributeValue::Boolean(_)
        | AttributeValue::Integer(_)
        | AttributeValue::Binary(_)
        | AttributeValue::Timestamp(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
