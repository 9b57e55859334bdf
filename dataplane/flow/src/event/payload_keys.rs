//! Reading only what a flow reads of a JSON payload. A flow whose CEL names `data.order_id`,
//! `data.customer.name` and `size(data.items)` and nothing else of `data`, and whose output is
//! its transform's, never looks at the rest of the payload: the other keys, the customer's other
//! fields and the items themselves are parsed to be checked exactly as a whole parse checks them
//! (syntax, UTF-8, serde_json's nesting limit) and dropped instead of being built into values
//! (strings copied, maps and numbers allocated).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value as Json};

/// What a flow reads of a JSON payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PayloadKeys {
    /// The whole payload: it is carried, or read as a whole (`size(data)`, `data[k]`).
    #[default]
    All,
    /// Only these fields of an object payload (`specversion` always among them, so an object
    /// payload that is a structured CloudEvent is still recognised and then read whole).
    Only(Fields),
    /// None of it: the flow carries the payload to a sink that writes it as JSON text, so it
    /// is kept as its text when that is already the text Fiso would write
    /// ([`CarriedJson`](super::carried_json::CarriedJson)), and parsed whole otherwise.
    Carried,
}

/// The fields of an object a flow reads, by key, and how far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(BTreeMap<String, Read>);

/// How far a flow reads one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// All of it.
    Whole,
    /// Only these fields when it is an object (anything else is read whole, so CEL finds what
    /// a whole read would have: `data.a.b` of a string fails the same way).
    Fields(Fields),
    /// Only how many elements it has when it is an array (`size(data.items)`): they are read
    /// as `null`s. Anything else is read whole (`size` of a string counts its characters).
    Count,
}

impl Fields {
    /// Adds reading `read` at `path` (keys from this object down). A value read two ways, or
    /// read and counted, is read whole.
    pub fn add(&mut self, path: &[String], read: Read) {
        let Some((key, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            match self.0.get_mut(key) {
                Some(existing) if *existing != read => *existing = Read::Whole,
                Some(_) => {}
                None => {
                    self.0.insert(key.clone(), read);
                }
            }
            return;
        }
        let entry = self
            .0
            .entry(key.clone())
            .or_insert_with(|| Read::Fields(Fields::default()));
        match entry {
            Read::Fields(fields) => fields.add(rest, read),
            Read::Whole => {}
            Read::Count => *entry = Read::Whole,
        }
    }

    /// Whether nothing is read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, key: &str) -> Option<&Read> {
        self.0.get(key)
    }
}

/// Top-level keys read whole.
impl FromIterator<String> for Fields {
    fn from_iter<I: IntoIterator<Item = String>>(keys: I) -> Self {
        Fields(keys.into_iter().map(|key| (key, Read::Whole)).collect())
    }
}

impl PayloadKeys {
    /// Only `fields`, besides `specversion`.
    pub fn only(mut fields: Fields) -> PayloadKeys {
        fields.add(&["specversion".to_owned()], Read::Whole);
        PayloadKeys::Only(fields)
    }

    /// `body` as JSON; of an object, only the fields this reads (anything else whole).
    pub fn parse(&self, body: &[u8]) -> serde_json::Result<Json> {
        let fields = match self {
            PayloadKeys::Only(fields) if first_byte(body) == Some(b'{') => fields,
            PayloadKeys::All | PayloadKeys::Only(_) | PayloadKeys::Carried => {
                return serde_json::from_slice(body)
            }
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        let value = de.deserialize_map(Part::Fields(fields))?;
        de.end()?;
        Ok(value)
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

/// A value, read as far as a [`Read`] says. Always through `deserialize_any` (or, for the
/// top-level object, `deserialize_map`), so serde_json counts its nesting as for a whole parse.
#[derive(Clone, Copy)]
enum Part<'r> {
    Whole,
    Fields(&'r Fields),
    Count,
}

impl<'r> From<&'r Read> for Part<'r> {
    fn from(read: &'r Read) -> Self {
        match read {
            Read::Whole => Part::Whole,
            Read::Fields(fields) => Part::Fields(fields),
            Read::Count => Part::Count,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Part<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        match self {
            Part::Whole => Json::deserialize(d),
            Part::Fields(_) | Part::Count => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Part<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json, E> {
        Ok(Json::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json, E> {
        Ok(Json::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        if matches!(self, Part::Count) {
            while seq.next_element_seed(Skip)?.is_some() {
                items.push(Json::Null);
            }
        } else {
            while let Some(item) = seq.next_element::<Json>()? {
                items.push(item);
            }
        }
        Ok(Json::Array(items))
    }

    // Objects, and numbers under serde_json's `arbitrary_precision` (a one-entry map whose key
    // is its marker, classified as serde_json's own `Value` does).
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Json, A::Error> {
        let fields = match self {
            Part::Fields(fields) => Some(fields),
            Part::Whole | Part::Count => None,
        };
        // Sized for the fields read: their map is built without growing.
        let mut map = Map::with_capacity(fields.map_or(0, |fields| fields.0.len()));
        while let Some(key) = access.next_key_seed(Key { fields })? {
            match key {
                Entry::Number => {
                    let text: String = access.next_value()?;
                    return text.parse().map(Json::Number).map_err(de::Error::custom);
                }
                // A repeated key keeps its last value, in its first place, as a whole parse.
                Entry::Wanted(key, read) => {
                    let value = access.next_value_seed(Part::from(read))?;
                    map.insert(key, value);
                }
                Entry::Unwanted => access.next_value_seed(Skip)?,
            }
        }
        Ok(Json::Object(map))
    }
}

/// An object key: wanted (owned, with how far its value is read) or not.
struct Key<'r> {
    /// `None`: every key, read whole.
    fields: Option<&'r Fields>,
}

enum Entry<'r> {
    Number,
    Wanted(String, &'r Read),
    Unwanted,
}

/// serde_json's marker of a number under `arbitrary_precision` (its `number::TOKEN`).
const NUMBER_MARKER: &str = "$serde_json::private::Number";

impl<'de, 'r> DeserializeSeed<'de> for Key<'r> {
    type Value = Entry<'r>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'r> Visitor<'de> for Key<'r> {
    type Value = Entry<'r>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if key == NUMBER_MARKER {
            return Ok(Entry::Number);
        }
        let read = match self.fields {
            None => Some(&Read::Whole),
            Some(fields) => fields.get(key),
        };
        Ok(read.map_or(Entry::Unwanted, |read| Entry::Wanted(key.to_owned(), read)))
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
        PayloadKeys::only(keys.iter().map(|k| (*k).to_owned()).collect())
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
            for reading in [only(&["a"]), nested(), only(&["b"])] {
                let projected = reading.parse(&body);
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
    }

    #[test]
    fn the_nesting_bound_is_a_whole_parse_s_where_part_of_a_value_is_read() {
        // `levels` of nesting in the fields read whole (`b.c`) and counted (`b.d`).
        let nested_to = |levels: usize| {
            let (open, close) = ("[".repeat(levels - 2), "]".repeat(levels - 2));
            [
                format!(r#"{{"b": {{"c": {open}1{close}}}}}"#),
                format!(r#"{{"b": {{"d": [{open}{close}]}}}}"#),
            ]
        };
        let mut outcomes = Vec::new();
        for levels in 125..=131 {
            for body in nested_to(levels) {
                let whole = serde_json::from_str::<Json>(&body);
                let part = nested().parse(body.as_bytes());
                match (&whole, &part) {
                    (Ok(_), Ok(_)) => {}
                    (Err(w), Err(p)) => assert_eq!(w.to_string(), p.to_string()),
                    _ => panic!("{levels} levels: {whole:?} / {part:?}"),
                }
                outcomes.push(whole.is_ok());
            }
        }
        assert!(
            outcomes.contains(&true) && outcomes.contains(&false),
            "the bound is among them"
        );
    }

    /// `b.c`, `b.d` counted, `e` counted.
    fn nested() -> PayloadKeys {
        let mut fields = Fields::default();
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        fields.add(&path("b.c"), Read::Whole);
        fields.add(&path("b.d"), Read::Count);
        fields.add(&path("e"), Read::Count);
        PayloadKeys::only(fields)
    }

    #[test]
    fn of_an_object_only_the_fields_read_are_kept_and_of_an_array_read_for_its_size_its_length() {
        let body = br#"{"a": 1, "b": {"c": {"x": [1.50]}, "d": [{"y": 1}, "z", [], 2], "f": "no"}, "e": [[1], {"k": "v"}]}"#;
        let got = nested().parse(body).unwrap();
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            r#"{"b":{"c":{"x":[1.50]},"d":[null,null,null,null]},"e":[null,null]}"#
        );
    }

    #[test]
    fn what_is_not_an_object_or_not_an_array_is_read_whole_where_part_of_it_is_read() {
        for (b, e) in [
            (r#""text""#, r#""héllo""#),
            ("12345678901234567890123.50", r#"{"k": [1], "j": null}"#),
            (r#"[{"c": 1}, 2]"#, "-0.0"),
            ("null", "true"),
            (r#"{"$serde_json::private::Number": "12"}"#, "1e400"),
        ] {
            let body = format!(r#"{{"b": {b}, "e": {e}, "z": 1}}"#);
            let whole: Json = serde_json::from_str(&body).unwrap();
            let got = nested().parse(body.as_bytes()).unwrap();
            assert_eq!(got["b"], whole["b"], "{body}");
            assert_eq!(got["e"], whole["e"], "{body}");
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                format!(
                    r#"{{"b":{},"e":{}}}"#,
                    serde_json::to_string(&whole["b"]).unwrap(),
                    serde_json::to_string(&whole["e"]).unwrap()
                ),
                "numbers keep their text"
            );
        }
        let marker = br#"{"b": {"$serde_json::private::Number": "x"}}"#;
        assert!(serde_json::from_slice::<Json>(marker).is_err());
        assert!(nested().parse(marker).is_err());
    }

    #[test]
    fn reading_a_value_two_ways_reads_it_whole() {
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        let mut fields = Fields::default();
        fields.add(&path("a"), Read::Count);
        fields.add(&path("a.b"), Read::Whole);
        fields.add(&path("c.d"), Read::Whole);
        fields.add(&path("c"), Read::Count);
        fields.add(&path("e"), Read::Whole);
        fields.add(&path("e.f"), Read::Whole);
        fields.add(&path("g"), Read::Count);
        fields.add(&path("g"), Read::Count);
        let expected: Fields = ["a", "c", "e"].map(str::to_owned).into_iter().collect();
        let mut expected = expected;
        expected.add(&path("g"), Read::Count);
        assert_eq!(fields, expected);
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
