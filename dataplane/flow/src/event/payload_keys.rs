//! Reading only what a flow reads of a JSON payload. A flow whose CEL names `data.order_id`
//! and nothing else of `data`, and whose output is its transform's, never looks at the other
//! keys of the payload: they are parsed to be checked exactly as a whole parse checks them
//! (syntax, UTF-8, serde_json's nesting limit) and dropped instead of being built into
//! values (strings copied, maps and numbers allocated).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

/// The top-level keys of a JSON object payload a flow reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PayloadKeys {
    /// The whole payload: it is carried, or read as a whole (`size(data)`, `data[k]`).
    #[default]
    All,
    /// Only these keys (sorted; `specversion` always among them, so an object payload that
    /// is a structured CloudEvent is still recognised and then read whole).
    Only(Vec<String>),
    /// None of it: the flow carries the payload to a sink that writes it as JSON text, so it
    /// is kept as its text when that is already the text Fiso would write
    /// ([`CarriedJson`](super::carried_json::CarriedJson)), and parsed whole otherwise.
    Carried,
}

impl PayloadKeys {
    /// Only `keys`, besides `specversion`.
    pub fn only(keys: impl IntoIterator<Item = String>) -> PayloadKeys {
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.push("specversion".to_owned());
        keys.sort();
        keys.dedup();
        PayloadKeys::Only(keys)
    }

    /// `body` as JSON; of an object, only the keys this reads (anything else whole).
    pub fn parse(&self, body: &[u8]) -> serde_json::Result<Json> {
        let keys = match self {
            PayloadKeys::Only(keys) if first_byte(body) == Some(b'{') => keys,
            PayloadKeys::All | PayloadKeys::Only(_) | PayloadKeys::Carried => {
                return serde_json::from_slice(body)
            }
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        let map = de.deserialize_map(Object { keys })?;
        de.end()?;
        Ok(Json::Object(map))
    }
}

/// The first byte that is not JSON whitespace.
fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !is_json_whitespace(b))
}

/// Whitespace as JSON has it (RFC 8259 §2): space, tab, line feed, carriage return.
pub(super) fn is_json_whitespace(b: &u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// The top-level object, with the wanted keys' values.
struct Object<'k> {
    keys: &'k [String],
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = Map<String, Json>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some(wanted) = access.next_key_seed(Key { keys: self.keys })? {
            match wanted {
                // A repeated key keeps its last value, in its first place, as a whole parse.
                Some(key) => {
                    let value: Json = access.next_value()?;
                    map.insert(key, value);
                }
                None => access.next_value_seed(Skip)?,
            }
        }
        Ok(map)
    }
}

/// A top-level key: `Some` (owned) when it is wanted.
struct Key<'k> {
    keys: &'k [String],
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self
            .keys
            .binary_search_by(|k| k.as_str().cmp(key))
            .is_ok()
            .then(|| key.to_owned()))
    }
}

/// Any value, parsed through `deserialize_any` (so serde_json counts its nesting as for a
/// whole parse) and dropped.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    accept_json_scalars!();

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    // Objects, and numbers under serde_json's `arbitrary_precision` (a one-entry map).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only(keys: &[&str]) -> PayloadKeys {
        PayloadKeys::only(keys.iter().map(|k| (*k).to_owned()))
    }

    #[test]
    fn an_object_keeps_the_keys_read_in_their_order() {
        let body =
            br#"{"b": {"c": [1, 2.50, "x"]}, "note": "x\u00e9\n", "a": 12345678901234567890123,
            "items": [{"sku": "A"}], "z": null, "t": true}"#;
        let got = only(&["a", "b", "missing"]).parse(body).unwrap();
        assert_eq!(
            got,
            serde_json::from_str::<Json>(
                r#"{"b": {"c": [1, 2.50, "x"]}, "a": 12345678901234567890123}"#
            )
            .unwrap()
        );
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            r#"{"b":{"c":[1,2.50,"x"]},"a":12345678901234567890123}"#,
            "numbers keep their text"
        );
    }

    #[test]
    fn anything_else_is_read_whole() {
        for body in [&b"[1, {\"a\": 2}]"[..], b" \"text\"", b"12.5", b"null"] {
            assert_eq!(
                only(&["a"]).parse(body).unwrap(),
                serde_json::from_slice::<Json>(body).unwrap()
            );
        }
        let body = br#"{"a": 1, "b": 2}"#;
        assert_eq!(
            PayloadKeys::All.parse(body).unwrap(),
            json!({"a": 1, "b": 2})
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_a_whole_parse_does() {
        let body = br#"{"a": 1, "b": 2, "a": 3}"#;
        let whole: Json = serde_json::from_slice(body).unwrap();
        assert_eq!(only(&["a"]).parse(body).unwrap(), json!({"a": whole["a"]}));
    }

    #[test]
    fn what_is_dropped_is_checked_as_a_whole_parse_checks_it() {
        let deep = format!(
            "{{\"a\": 1, \"b\": {}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let shallow = format!(
            "{{\"a\": 1, \"b\": {}1{}}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        let bodies: Vec<Vec<u8>> = vec![
            br#"{"a": 1, "b": [1,}"#.to_vec(),
            br#"{"a": 1, "b": "\q"}"#.to_vec(),
            b"{\"a\": 1, \"b\": \"\xff\"}".to_vec(),
            br#"{"a": 1, "b": 01}"#.to_vec(),
            br#"{"a": 1, "b": 1} x"#.to_vec(),
            br#"{"a": 1, "b": 1"#.to_vec(),
            br#"{"a": 1, 2: 1}"#.to_vec(),
            deep.into_bytes(),
            shallow.into_bytes(),
            br#"{"a": 1, "b": {"c": -1.5e3, "d": [true, false, null]}}"#.to_vec(),
        ];
        for body in bodies {
            let whole = serde_json::from_slice::<Json>(&body);
            let projected = only(&["a"]).parse(&body);
            assert_eq!(
                whole.is_ok(),
                projected.is_ok(),
                "{}: {whole:?} / {projected:?}",
                String::from_utf8_lossy(&body)
            );
            if let (Err(w), Err(p)) = (&whole, &projected) {
                assert_eq!(w.classify(), p.classify(), "{w} / {p}");
            }
        }
    }

    #[test]
    fn specversion_is_always_read() {
        let body = br#"{"specversion": "1.0", "id": "1", "a": 1}"#;
        assert_eq!(
            only(&["a"]).parse(body).unwrap(),
            json!({"specversion": "1.0", "a": 1})
        );
    }
}
