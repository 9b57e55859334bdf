//! The JSON event format (json-format.md): a [`CloudEvent`] as a JSON object and back.
//!
//! Reading (§2.2, §3.1.2): `null` is an absent attribute; an extension is a string, a boolean
//! or an Integer (a JSON number with no fraction or exponent, 32-bit); `data_base64` is bytes
//! whatever the content type; `data` is JSON when `datacontenttype` is JSON or absent, else the
//! string of a text type (a non-string value is kept as the JSON it is); `data` and
//! `data_base64` together are an error. Writing (§3.1.1): JSON data as `data`, text as a `data`
//! string, bytes as `data_base64`, no member at all for an event without data; Binary, URI and
//! Timestamp extensions as strings.

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json};

use super::cloudevent::{
    check_specversion, AttributeValue, CloudEvent, Data, EventError, Timestamp,
};
use super::media_type::MediaType;

impl Serialize for AttributeValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AttributeValue::Boolean(b) => serializer.serialize_bool(*b),
            AttributeValue::Integer(i) => serializer.serialize_i32(*i),
            other => serializer.serialize_str(&other.canonical()),
        }
    }
}

impl Serialize for CloudEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", self.specversion())?;
        map.serialize_entry("id", self.id())?;
        map.serialize_entry("source", self.source())?;
        map.serialize_entry("type", self.ty())?;
        if let Some(ct) = self.datacontenttype() {
            map.serialize_entry("datacontenttype", ct)?;
        }
        if let Some(schema) = self.dataschema() {
            map.serialize_entry("dataschema", schema)?;
        }
        if let Some(subject) = self.subject() {
            map.serialize_entry("subject", subject)?;
        }
        if let Some(time) = self.time() {
            map.serialize_entry("time", time.as_str())?;
        }
        for (name, value) in self.extensions() {
            map.serialize_entry(name, value)?;
        }
        match self.data() {
            None => {}
            Some(Data::Json(json)) => map.serialize_entry("data", json)?,
            Some(Data::CarriedJson(json)) => map.serialize_entry("data", json)?,
            Some(Data::Text(text)) => map.serialize_entry("data", text)?,
            Some(Data::Bytes(bytes) | Data::Proto { value: bytes, .. }) => map.serialize_entry(
                "data_base64",
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            )?,
        }
        map.end()
    }
}

/// The event `json` holds, which must be a JSON object, validated.
/// `event` in the JSON format (compact, plain-decimal numbers), written into a buffer sized
/// for its data up front: a 1 KiB payload otherwise costs two reallocations, each a copy of
/// what was written so far.
pub fn to_vec(event: &CloudEvent) -> serde_json::Result<Vec<u8>> {
    let data = match event.data() {
        Some(Data::CarriedJson(json)) => json.text().len(),
        Some(Data::Text(text)) => text.len(),
        Some(Data::Bytes(bytes) | Data::Proto { value: bytes, .. }) => bytes.len().div_ceil(3) * 4,
        // Unknown without writing it; the writer grows the buffer.
        Some(Data::Json(_)) | None => 0,
    };
    let mut out = Vec::with_capacity(ATTRIBUTES_ROOM + data);
    super::json::to_writer_plain(&mut out, event)?;
    Ok(out)
}

/// Room for the attributes of a typical event and a few extensions.
const ATTRIBUTES_ROOM: usize = 512;

pub fn from_json(json: Json) -> Result<CloudEvent, EventError> {
    match json {
        Json::Object(map) => from_map(map),
        other => Err(EventError::new(
            "specversion",
            format!(
                "a structured CloudEvent is a JSON object, not {}",
                kind_of(&other)
            ),
        )),
    }
}

/// The event of a JSON object, validated.
pub fn from_map(map: Map<String, Json>) -> Result<CloudEvent, EventError> {
    let mut event = CloudEvent::new("", "", "");
    let (mut specversion, mut id, mut source, mut type_) = (None, None, None, None);
    let (mut data, mut data_base64) = (None, None);
    for (name, value) in map {
        match name.as_str() {
            "data" => data = Some(value),
            "data_base64" => data_base64 = string(&name, value)?,
            "specversion" => specversion = string(&name, value)?,
            "id" => id = string(&name, value)?,
            "source" => source = string(&name, value)?,
            "type" => type_ = string(&name, value)?,
            "subject" => event.set_subject(string(&name, value)?),
            "datacontenttype" => event.set_datacontenttype(string(&name, value)?),
            "dataschema" => event.set_dataschema(string(&name, value)?),
            "time" => event.set_time(
                string(&name, value)?
                    .map(|text| Timestamp::parse(&text))
                    .transpose()
                    .map_err(|message| EventError::new("time", message))?,
            ),
            _ => {
                if let Some(value) = extension_value(&name, value)? {
                    event.set_extension(name, value)?;
                }
            }
        }
    }
    check_specversion(&specversion.ok_or_else(|| EventError::new("specversion", "is required"))?)?;
    let required = |value: Option<String>, name: &str| {
        value.ok_or_else(|| EventError::new(name, "is required"))
    };
    event.set_id(required(id, "id")?);
    event.set_source(required(source, "source")?);
    event.set_type(required(type_, "type")?);
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(EventError::new(
                "data_base64",
                "a CloudEvent cannot have both `data` and `data_base64`",
            ))
        }
        (None, Some(encoded)) => Some(Data::Bytes(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(&encoded)
                .map_err(|e| EventError::new("data_base64", format!("is not base64: {e}")))?,
        ))),
        (Some(json), None) => Some(data_of(json, event.datacontenttype())),
        (None, None) => None,
    };
    event.set_data(data);
    event.validate()?;
    Ok(event)
}

/// `data` by the content type (json-format §3.1.2). An invalid content type is reported by
/// validation; here it counts as JSON.
fn data_of(json: Json, content_type: Option<&str>) -> Data {
    let json_data = match content_type.map(MediaType::parse) {
        None | Some(Err(_)) => true,
        Some(Ok(ct)) => ct.is_json(),
    };
    match json {
        Json::String(text) if !json_data => Data::Text(text),
        other => Data::Json(other),
    }
}

fn string(name: &str, value: Json) -> Result<Option<String>, EventError> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s)),
        other => Err(EventError::new(
            name,
            format!("must be a string, not {}", kind_of(&other)),
        )),
    }
}

/// json-format §2.2: a string, a boolean or an Integer; `null` is no attribute.
fn extension_value(name: &str, value: Json) -> Result<Option<AttributeValue>, EventError> {
    Ok(Some(match value {
        Json::Null => return Ok(None),
        Json::String(s) => AttributeValue::String(s),
        Json::Bool(b) => AttributeValue::Boolean(b),
        Json::Number(n) => AttributeValue::Integer(integer(name, &n)?),
        other => {
            return Err(EventError::new(
                name,
                format!(
                    "an attribute is a string, a boolean or an integer, not {}",
                    kind_of(&other)
                ),
            ))
        }
    }))
}

/// A JSON number as a CloudEvents Integer: digits with an optional minus sign, within 32 bits.
fn integer(name: &str, n: &serde_json::Number) -> Result<i32, EventError> {
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        return Err(EventError::new(
            name,
            format!("{text} is not an Integer (no fraction or exponent)"),
        ));
    }
    text.parse::<i32>().map_err(|_| {
        EventError::new(
            name,
            format!("{text} is outside the Integer range -2147483648..=2147483647"),
        )
    })
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
