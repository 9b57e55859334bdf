//! The incoming event: its payload and the CloudEvents attributes the CEL scope exposes.
//!
//! A structured CloudEvent (a JSON object with `specversion`) brings its own attributes and its
//! `data` is the payload. Anything else is a bare payload: the attributes are made up from what
//! the source knows ([`EventDefaults`]): `time` is the receive time, `id` the id the envelope
//! will carry (`<topic>-<partition>-<offset>` for Kafka, else a UUIDv7), `source` and `type`
//! the flow's defaults, and there is no `subject`.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use cloudevents::event::ExtensionValue;
use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::FlowError;

/// Default CloudEvent `type` of a flow, as upstream Fiso.
pub const DEFAULT_TYPE: &str = "fiso.event";

/// The attributes the core CloudEvents spec defines; anything else at the top level of a
/// structured event is an extension.
const CORE_ATTRIBUTES: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// How a flow names the events that don't name themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDefaults {
    source: String,
    type_: String,
}

impl FlowDefaults {
    /// `source` = `fiso-flow/<flow name>`, `type` = [`DEFAULT_TYPE`].
    pub fn new(flow_name: &str) -> Self {
        FlowDefaults {
            source: format!("fiso-flow/{flow_name}"),
            type_: DEFAULT_TYPE.to_owned(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn type_(&self) -> &str {
        &self.type_
    }

    /// The defaults for one event, received now, with no id of its own yet.
    pub fn event(&self) -> EventDefaults<'_> {
        EventDefaults {
            source: &self.source,
            type_: &self.type_,
            id: None,
            received_at: Utc::now(),
        }
    }
}

/// What a source knows about one event besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDefaults<'a> {
    pub source: &'a str,
    pub type_: &'a str,
    /// The id a bare payload gets; `None` means a fresh UUIDv7.
    pub id: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl EventDefaults<'_> {
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The id of a Kafka record: stable across redelivery, so sinks can de-duplicate.
    pub fn with_kafka_id(self, topic: &str, partition: i32, offset: i64) -> Self {
        self.with_id(format!("{topic}-{partition}-{offset}"))
    }

    pub fn received_at(mut self, at: DateTime<Utc>) -> Self {
        self.received_at = at;
        self
    }
}

/// An event as it enters a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct InputEvent {
    data: Json,
    id: String,
    source: String,
    type_: String,
    subject: Option<String>,
    time: DateTime<Utc>,
    /// `time` as the CEL scope shows it, formatted once.
    time_text: String,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    extensions: IndexMap<String, ExtensionValue>,
}

impl InputEvent {
    /// Reads `json`, a structured CloudEvent or a bare payload (see the module
    /// documentation).
    pub fn from_json(json: Json, defaults: EventDefaults<'_>) -> Result<InputEvent, FlowError> {
        match json {
            Json::Object(map) if map.contains_key("specversion") => {
                Self::from_structured(map, defaults.received_at)
            }
            data => Ok(Self::from_payload(data, defaults)),
        }
    }

    /// A bare payload with attributes from `defaults`.
    pub fn from_payload(data: Json, defaults: EventDefaults<'_>) -> InputEvent {
        // Sub-millisecond digits only make the text longer: Kafka timestamps are milliseconds.
        let time = defaults.received_at.trunc_subsecs(3);
        InputEvent {
            data,
            id: defaults
                .id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            source: defaults.source.to_owned(),
            type_: defaults.type_.to_owned(),
            subject: None,
            time_text: format_time(&time),
            time,
            datacontenttype: None,
            dataschema: None,
            extensions: IndexMap::new(),
        }
    }

    fn from_structured(
        map: serde_json::Map<String, Json>,
        received_at: DateTime<Utc>,
    ) -> Result<InputEvent, FlowError> {
        let mut specversion = None;
        let (mut id, mut source, mut type_, mut subject, mut time) = (None, None, None, None, None);
        let (mut datacontenttype, mut dataschema) = (None, None);
        let (mut data, mut data_base64) = (None, None);
        let mut extensions = IndexMap::new();
        for (name, value) in map {
            match name.as_str() {
                "specversion" => specversion = Some(string_attribute(&name, value)?),
                "id" => id = Some(string_attribute(&name, value)?),
                "source" => source = Some(string_attribute(&name, value)?),
                "type" => type_ = Some(string_attribute(&name, value)?),
                "subject" => subject = optional_string_attribute(&name, value)?,
                "time" => time = optional_string_attribute(&name, value)?,
                "datacontenttype" => datacontenttype = optional_string_attribute(&name, value)?,
                "dataschema" => dataschema = optional_string_attribute(&name, value)?,
                "data" => data = Some(value),
                "data_base64" => data_base64 = optional_string_attribute(&name, value)?,
                _ => {
                    if let Some(value) = extension_value(value) {
                        check_extension_name(&name)?;
                        extensions.insert(name, value);
                    }
                }
            }
        }
        match specversion.as_deref() {
            Some("1.0") => {}
            other => {
                return Err(FlowError::invalid_input(format!(
                    "unsupported CloudEvents specversion {:?} (only \"1.0\" is)",
                    other.unwrap_or_default()
                )))
            }
        }
        let required = |value: Option<String>, name: &str| {
            value.filter(|v| !v.is_empty()).ok_or_else(|| {
                FlowError::invalid_input(format!("structured CloudEvent without `{name}`"))
            })
        };
        for (name, value) in [
            ("id", &id),
            ("source", &source),
            ("type", &type_),
            ("subject", &subject),
        ] {
            if let Some(text) = value {
                check_attribute_text(name, text).map_err(FlowError::invalid_input)?;
            }
        }
        if let Some(text) = &datacontenttype {
            check_media_type("datacontenttype", text).map_err(FlowError::invalid_input)?;
        }
        if let Some(text) = &dataschema {
            check_attribute_text("dataschema", text).map_err(FlowError::invalid_input)?;
        }
        for (name, value) in &extensions {
            check_extension_value(name, value)?;
        }
        let time = match time {
            Some(text) => DateTime::parse_from_rfc3339(&text)
                .map_err(|e| {
                    FlowError::invalid_input(format!(
                        "CloudEvent `time` {text:?} is not RFC 3339: {e}"
                    ))
                })?
                .with_timezone(&Utc),
            None => received_at.trunc_subsecs(3),
        };
        let data = match (data, data_base64) {
            (Some(_), Some(_)) => {
                return Err(FlowError::invalid_input(
                    "a CloudEvent cannot have both `data` and `data_base64`",
                ))
            }
            (Some(data), None) => data,
            (None, Some(encoded)) => decode_data_base64(&encoded, datacontenttype.as_deref())?,
            (None, None) => Json::Null,
        };
        Ok(InputEvent {
            data,
            id: required(id, "id")?,
            source: required(source, "source")?,
            type_: required(type_, "type")?,
            subject: subject.filter(|s| !s.is_empty()),
            time_text: format_time(&time),
            time,
            datacontenttype,
            dataschema,
            extensions,
        })
    }

    /// Adds a CloudEvents extension attribute (e.g. `traceparent` from a request header); the
    /// envelope carries it.
    pub fn set_extension(
        &mut self,
        name: impl Into<String>,
        value: impl Into<ExtensionValue>,
    ) -> Result<(), FlowError> {
        let name = name.into();
        let value = value.into();
        check_extension_name(&name)?;
        if CORE_ATTRIBUTES.contains(&name.as_str()) {
            return Err(FlowError::invalid_input(format!(
                "`{name}` is a core CloudEvents attribute, not an extension"
            )));
        }
        check_extension_value(&name, &value)?;
        self.extensions.insert(name, value);
        Ok(())
    }

    /// The payload: the body, record value or message, or a structured event's `data`.
    pub fn data(&self) -> &Json {
        &self.data
    }

    pub(crate) fn take_data(&mut self) -> Json {
        std::mem::take(&mut self.data)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn type_(&self) -> &str {
        &self.type_
    }

    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    pub fn time(&self) -> DateTime<Utc> {
        self.time
    }

    /// `time` in RFC 3339 (UTC), as the `time` variable of the CEL scope.
    pub fn time_text(&self) -> &str {
        &self.time_text
    }

    /// `datacontenttype` of a structured input event.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    /// `dataschema` of a structured input event.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }

    pub fn extensions(&self) -> &IndexMap<String, ExtensionValue> {
        &self.extensions
    }
}

fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn string_attribute(name: &str, value: Json) -> Result<String, FlowError> {
    match value {
        Json::String(s) => Ok(s),
        other => Err(FlowError::invalid_input(format!(
            "CloudEvent `{name}` must be a string, not {other}"
        ))),
    }
}

fn optional_string_attribute(name: &str, value: Json) -> Result<Option<String>, FlowError> {
    match value {
        Json::Null => Ok(None),
        other => string_attribute(name, other).map(Some),
    }
}

/// CloudEvents extension values are strings, booleans or integers; anything else is kept as
/// its JSON text rather than dropped.
fn extension_value(value: Json) -> Option<ExtensionValue> {
    match value {
        Json::Null => None,
        Json::String(s) => Some(ExtensionValue::String(s)),
        Json::Bool(b) => Some(ExtensionValue::Boolean(b)),
        Json::Number(n) => Some(match n.as_i64() {
            Some(i) => ExtensionValue::Integer(i),
            None => ExtensionValue::String(n.to_string()),
        }),
        other => Some(ExtensionValue::String(other.to_string())),
    }
}

/// The spec's rule: lowercase ASCII letters and digits.
fn check_extension_name(name: &str) -> Result<(), FlowError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(FlowError::invalid_input(format!(
            "`{name}` is not a valid CloudEvents extension name (lowercase letters and digits only)"
        )))
    }
}

/// The CloudEvents spec forbids control characters (U+0000–U+001F, U+007F–U+009F) in string
/// attributes: they have no agreed representation, and a CR or LF in a `ce-*` header would split
/// it. Refusing them where the event is read makes them the sender's error for every sink, and
/// the binary HTTP binding can percent-encode whatever else remains.
pub(crate) fn check_attribute_text(name: &str, text: &str) -> Result<(), String> {
    match text.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(format!(
            "CloudEvent `{name}` contains the control character U+{:04X}, which CloudEvents attributes must not carry",
            u32::from(c)
        )),
    }
}

/// `datacontenttype` becomes the `Content-Type` header as it is (no percent-encoding applies to
/// it): a media type is printable ASCII.
pub(crate) fn check_media_type(name: &str, text: &str) -> Result<(), String> {
    if text
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(format!(
            "CloudEvent `{name}` {text:?} is not a media type (printable ASCII only)"
        ))
    }
}

fn check_extension_value(name: &str, value: &ExtensionValue) -> Result<(), FlowError> {
    match value {
        ExtensionValue::String(text) => {
            check_attribute_text(name, text).map_err(FlowError::invalid_input)
        }
        ExtensionValue::Boolean(_) | ExtensionValue::Integer(_) => Ok(()),
    }
}

pub(crate) fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// `data_base64` holds bytes: JSON content is parsed, text kept as a string, and other
/// bytes stay base64 (the payload must be JSON for CEL).
fn decode_data_base64(encoded: &str, content_type: Option<&str>) -> Result<Json, FlowError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| FlowError::invalid_input(format!("CloudEvent `data_base64`: {e}")))?;
    if content_type.is_none_or(is_json_content_type) {
        if let Ok(json) = serde_json::from_slice(&bytes) {
            return Ok(json);
        }
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Json::String(text),
        Err(_) => Json::String(encoded.to_owned()),
    })
}

#[cfg(test)]
mod tests;
