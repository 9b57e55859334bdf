//! A JSON payload a flow carries without reading it, kept as its text. A flow with no
//! transform, no CEL over `data` and a sink that writes the payload as JSON text (HTTP, gRPC)
//! only checks the payload and writes it back out: when the text is already exactly what
//! writing its parsed value would give (compact, no escapes, numbers in their written form, no
//! repeated keys), it is kept and written verbatim, and no value is built for it.
//!
//! Anything else — and an object with `specversion`, which is a structured CloudEvent to be
//! read as one — is parsed as before, so which way a payload takes never changes what leaves
//! the flow, which payloads are refused, or why.

use std::fmt;

use bytes::Bytes;
use serde::ser::SerializeStruct as _;
use serde::Serialize;
use serde_json::Value as Json;

use super::payload_keys::is_json_whitespace;

/// JSON text that is its own compact, plain-decimal serialization: a slice of the body it
/// came in, never copied.
#[derive(Clone)]
pub struct CarriedJson(Bytes);

impl CarriedJson {
    /// `body` kept as its text, when it is valid JSON written exactly as Fiso would write it,
    /// and not an object with `specversion`; `None` otherwise (parse it).
    pub fn read(body: &Bytes) -> Option<CarriedJson> {
        let text = trim_whitespace(body);
        written_form::is_written_form(text).then(|| CarriedJson(body.slice_ref(text)))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        // Every string was checked to be UTF-8 when read, and JSON is ASCII outside strings.
        std::str::from_utf8(&self.0).expect("carried JSON was checked to be UTF-8")
    }

    /// The value, for what reads it (interceptors, `transform test`).
    pub fn to_json(&self) -> Json {
        serde_json::from_str(self.text()).expect("carried JSON was checked to be valid")
    }
}

/// The name under which serde_json's serializers take a value's JSON text as it is: what
/// `RawValue` serializes as. Written here because `RawValue` can only be built by parsing the
/// text once more, which the check in [`CarriedJson::read`] has made needless.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl Serialize for CarriedJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut raw = s.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, self.text())?;
        raw.end()
    }
}

impl PartialEq for CarriedJson {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl fmt::Debug for CarriedJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CarriedJson").field(&self.text()).finish()
    }
}

fn trim_whitespace(body: &[u8]) -> &[u8] {
    let start = body
        .iter()
        .position(|b| !is_json_whitespace(b))
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !is_json_whitespace(b))
        .map_or(start, |e| e + 1);
    &body[start..end]
}

mod written_form;

#[cfg(test)]
mod tests;
