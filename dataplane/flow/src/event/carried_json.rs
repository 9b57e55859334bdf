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
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeStruct as _;
use serde::Serialize;
use serde_json::Value as Json;
use smallvec::SmallVec;

use super::json::plain_decimal;
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
        if !is_compact_without_escapes(text) {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(text);
        // An error here is either a broken body or a canonical-form miss: the parse that
        // follows tells them apart and words the error as it always has.
        Canonical { top: true }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(CarriedJson(body.slice_ref(text)))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        // serde_json checked every string to be UTF-8, and JSON is ASCII outside strings.
        std::str::from_utf8(&self.0).expect("carried JSON was checked to be UTF-8")
    }

    /// The value, for what reads it (interceptors, `transform test`).
    pub fn to_json(&self) -> Json {
        serde_json::from_str(self.text()).expect("carried JSON was checked to be valid")
    }
}

/// The name under which serde_json's serializers take a value's JSON text as it is: what
/// `RawValue` serializes as. Written here because `RawValue` can only be built by parsing the
/// text once more, which the walk in [`CarriedJson::read`] has made needless.
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

/// No backslash anywhere (serde_json writes some escapes differently from how they may have
/// come: `\/`, `\u00e9`) and no whitespace outside strings. Without backslashes, every `"`
/// opens or closes a string.
fn is_compact_without_escapes(text: &[u8]) -> bool {
    if memchr::memchr(b'\\', text).is_some() {
        return false;
    }
    let mut rest = text;
    loop {
        let open = memchr::memchr(b'"', rest);
        let outside = &rest[..open.unwrap_or(rest.len())];
        if outside.iter().any(is_json_whitespace) {
            return false;
        }
        let Some(open) = open else {
            return true;
        };
        rest = &rest[open + 1..];
        match memchr::memchr(b'"', rest) {
            Some(close) => rest = &rest[close + 1..],
            // An unterminated string: the parse refuses it.
            None => return true,
        }
    }
}

/// serde_json's key for a number read with `arbitrary_precision`: a map with this one key
/// whose value is the number's text.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Any value, checked to be in its written form. Values are walked through `deserialize_any`,
/// so serde_json applies the nesting limit of a whole parse. A miss is an error.
struct Canonical {
    /// The document itself (where an object with `specversion` is a CloudEvent).
    top: bool,
}

fn miss<E: de::Error>(what: &str) -> E {
    E::custom(format_args!("not carried as text: {what}"))
}

impl<'de> DeserializeSeed<'de> for Canonical {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    accept_json_scalars!();

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(miss("a number read as a double"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Canonical { top: false })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // On the stack for the objects payloads are made of: this walk runs for every event.
        let mut keys: SmallVec<[&'de str; 16]> = SmallVec::new();
        while let Some(key) = map.next_key_seed(BorrowedKey)? {
            if key == NUMBER_TOKEN && keys.is_empty() {
                return map.next_value_seed(NumberText);
            }
            if self.top && key == "specversion" {
                return Err(miss("an object with specversion is a CloudEvent"));
            }
            keys.push(key);
            map.next_value_seed(Canonical { top: false })?;
        }
        keys.sort_unstable();
        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
            // A parse keeps the last value in the first place.
            return Err(miss("a repeated key"));
        }
        Ok(())
    }
}

/// An object key, borrowed from the body (it has no escapes).
struct BorrowedKey;

impl<'de> DeserializeSeed<'de> for BorrowedKey {
    type Value = &'de str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'de str, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for BorrowedKey {
    type Value = &'de str;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<&'de str, E> {
        Ok(key)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<&'de str, E> {
        Err(miss("a key that is not in the body as it is"))
    }
}

/// A number's text, in its written form when the plain-decimal writer leaves it unchanged.
struct NumberText;

impl<'de> DeserializeSeed<'de> for NumberText {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NumberText {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        let written = if text.contains(['e', 'E']) {
            // serde_json rewrites an exponent's marker; not worth following.
            false
        } else if text.contains('.') {
            plain_decimal(text).is_none_or(|plain| plain == text)
        } else {
            true
        };
        if written {
            Ok(())
        } else {
            Err(miss("a number written differently"))
        }
    }
}

#[cfg(test)]
mod tests;
