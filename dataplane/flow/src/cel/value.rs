//! Conversions between JSON (`serde_json::Value`) and CEL values, without a serde round trip
//! (which costs microseconds per event).
//!
//! Two CEL representations exist: the owned [`cel::Value`] enum the crate's API speaks, and
//! the `dyn Val` trait objects its interpreter evaluates. The hot path only uses the latter
//! ([`json_to_val`] into a scope, [`val_to_json`] out of a result); the `Value` pair is for
//! callers that hold `cel::Value`s.
//!
//! JSON → CEL: integers become `int` when they fit in an `i64`, else `uint`, else `double`;
//! other numbers `double` (a number no double holds exactly keeps its text only when passed
//! through without CEL computing with it); objects maps with string keys; arrays lists; `null` null.
//!
//! CEL → JSON: map keys must be strings, ints, uints or bools (the non-strings are printed);
//! timestamps become RFC 3339 strings, durations strings like `"1.5s"`, bytes base64 strings,
//! `optional` values their content (or null); NaN and infinities have no JSON form and are an
//! error. Maps built by an expression have no order, so their keys come out sorted; JSON
//! objects read from the input keep their order.

use std::sync::Arc;

use base64::Engine as _;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelMap, CelOptional, CelString,
    CelTimestamp, CelType, CelUInt, Kind,
};
use cel::common::value::Val;
use cel::objects::{Key, Map, OptionalValue};
use cel::Value;
use chrono::SecondsFormat;
use serde_json::{Map as JsonMap, Number, Value as Json};

use crate::cel::budget::{self, Resource};

pub use crate::cel::json_val::{json_to_val, JsonRef};

/// A CEL value that has no JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConversionError(String);

impl ConversionError {
    fn new(message: impl Into<String>) -> Self {
        ConversionError(message.into())
    }
}

/// JSON → owned [`cel::Value`].
pub fn json_to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(crate::event::json::number_as_f64(n))
            }
        }
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_to_value).collect())),
        Json::Object(map) => Value::Map(Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_value(v)))
                    .collect(),
            ),
        }),
    }
}

/// Owned [`cel::Value`] → JSON.
pub fn value_to_json(value: &Value) -> Result<Json, ConversionError> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => float(*f)?,
        Value::String(s) => Json::String(s.as_str().to_owned()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(&**b)),
        Value::Timestamp(t) => Json::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Value::Duration(d) => Json::String(duration_text(d)),
        Value::List(items) => {
            Json::Array(items.iter().map(value_to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(map) => {
            let mut entries = map
                .map
                .iter()
                .map(|(k, v)| Ok((key_to_string(k), v)))
                .collect::<Result<Vec<_>, ConversionError>>()?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = JsonMap::with_capacity(entries.len());
            for (k, v) in entries {
                out.insert(k, value_to_json(v)?);
            }
            Json::Object(out)
        }
        Value::Opaque(opaque) => match opaque.downcast_ref::<OptionalValue>() {
            Some(optional) => match optional.value() {
                Some(inner) => value_to_json(inner)?,
                None => Json::Null,
            },
            None => {
                return Err(ConversionError::new(format!(
                    "a value of type {} has no JSON form",
                    opaque.runtime_type_name()
                )))
            }
        },
        other => {
            return Err(ConversionError::new(format!(
                "a value of type {} has no JSON form",
                other.type_of()
            )))
        }
    })
}

fn key_to_string(key: &Key) -> String {
    match key {
        Key::String(s) => s.as_str().to_owned(),
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
    }
}

/// Interpreter value → JSON.
pub fn val_to_json(val: &dyn Val) -> Result<Json, ConversionError> {
    let kind = val.get_type().kind();
    let wrong = || {
        ConversionError::new(format!(
            "a value of type {} has no JSON form",
            val.get_type().name()
        ))
    };
    Ok(match kind {
        Kind::NullType => Json::Null,
        Kind::Boolean => Json::Bool(*val.downcast_ref::<CelBool>().ok_or_else(wrong)?.inner()),
        Kind::Int => Json::from(*val.downcast_ref::<CelInt>().ok_or_else(wrong)?.inner()),
        Kind::UInt => Json::from(*val.downcast_ref::<CelUInt>().ok_or_else(wrong)?.inner()),
        Kind::Double => float(*val.downcast_ref::<CelDouble>().ok_or_else(wrong)?.inner())?,
        Kind::String => {
            let text = val.downcast_ref::<CelString>().ok_or_else(wrong)?.inner();
            charge(Resource::Bytes, text.len())?;
            Json::String(text.to_owned())
        }
        Kind::Bytes => Json::String(
            base64::engine::general_purpose::STANDARD
                .encode(val.downcast_ref::<CelBytes>().ok_or_else(wrong)?.inner()),
        ),
        Kind::Timestamp => Json::String(
            val.downcast_ref::<CelTimestamp>()
                .ok_or_else(wrong)?
                .inner()
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        ),
        Kind::Duration => Json::String(duration_text(
            val.downcast_ref::<CelDuration>().ok_or_else(wrong)?.inner(),
        )),
        Kind::Type => Json::String(
            val.downcast_ref::<CelType>()
                .ok_or_else(wrong)?
                .name()
                .to_owned(),
        ),
        Kind::List => {
            let items = val.as_iterable().ok_or_else(wrong)?;
            let len = val.as_sizer().map_or(0, size);
            charge(Resource::Elements, len)?;
            let mut out = Vec::with_capacity(len);
            let mut iter = items.iter();
            while let Some(item) = iter.next() {
                out.push(val_to_json(item)?);
            }
            Json::Array(out)
        }
        Kind::Map => map_to_json(val)?,
        Kind::Opaque => match val.downcast_ref::<CelOptional>() {
            Some(optional) => match optional.option() {
                Some(inner) => val_to_json(inner)?,
                None => Json::Null,
            },
            None => return Err(wrong()),
        },
        _ => return Err(wrong()),
    })
}

/// Output counts against the evaluation's budget: it is where a cheap expression
/// (`data.l.map(x, data.s)`) turns into memory.
fn charge(resource: Resource, amount: usize) -> Result<(), ConversionError> {
    budget::charge(resource, u64::try_from(amount).unwrap_or(u64::MAX))
        .map_err(ConversionError::new)
}

fn size(sizer: &dyn cel::common::traits::Sizer) -> usize {
    usize::try_from(*sizer.size().inner()).unwrap_or(0)
}

fn map_to_json(val: &dyn Val) -> Result<Json, ConversionError> {
    if let Some(map) = val.downcast_ref::<CelMap>() {
        let mut entries = map
            .inner()
            .iter()
            .map(|(k, v)| Ok((val_key_to_string(k.inner())?, v.as_ref())))
            .collect::<Result<Vec<_>, ConversionError>>()?;
        charge(Resource::Elements, entries.len())?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = JsonMap::with_capacity(entries.len());
        for (k, v) in entries {
            out.insert(k, val_to_json(v)?);
        }
        return Ok(Json::Object(out));
    }
    // Any other map (a JSON object of the input) iterates in its own order: keep it.
    let no_form = || ConversionError::new("a map without keys or lookup has no JSON form");
    let keys = val.as_iterable().ok_or_else(no_form)?;
    let index = val.as_indexer().ok_or_else(no_form)?;
    let len = val.as_sizer().map_or(0, size);
    charge(Resource::Elements, len)?;
    let mut out = JsonMap::with_capacity(len);
    let mut iter = keys.iter();
    while let Some(key) = iter.next() {
        let value = index
            .get(key)
            .map_err(|e| ConversionError::new(e.to_string()))?;
        out.insert(val_key_to_string(key)?, val_to_json(value.as_ref())?);
    }
    Ok(Json::Object(out))
}

fn val_key_to_string(key: &dyn Val) -> Result<String, ConversionError> {
    if let Some(s) = key.downcast_ref::<CelString>() {
        Ok(s.inner().to_owned())
    } else if let Some(i) = key.downcast_ref::<CelInt>() {
        Ok(i.inner().to_string())
    } else if let Some(u) = key.downcast_ref::<CelUInt>() {
        Ok(u.inner().to_string())
    } else if let Some(b) = key.downcast_ref::<CelBool>() {
        Ok(b.inner().to_string())
    } else {
        Err(ConversionError::new(format!(
            "a map key of type {} has no JSON form",
            key.get_type().name()
        )))
    }
}

fn float(f: f64) -> Result<Json, ConversionError> {
    Number::from_f64(f)
        .map(Json::Number)
        .ok_or_else(|| ConversionError::new(format!("{f} has no JSON form")))
}

/// CEL's own duration syntax: seconds with up to nine decimals, e.g. `"1.5s"`, `"-3s"`.
fn duration_text(d: &chrono::Duration) -> String {
    let secs = d.num_seconds();
    let nanos = d.subsec_nanos();
    let sign = if secs < 0 || nanos < 0 { "-" } else { "" };
    let (secs, nanos) = (secs.unsigned_abs(), nanos.unsigned_abs());
    if nanos == 0 {
        format!("{sign}{secs}s")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{sign}{secs}.{}s", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Env};
    use serde_json::json;

    fn eval_to_json(expr: &str) -> Result<Json, String> {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::encoders)
            .expect("extension");
        let env = Arc::new(env);
        let program = env.compile(expr).map_err(|e| e.to_string())?;
        let ctx = Context::with_env(env);
        let val = Value::resolve_val(program.expression(), &ctx).map_err(|e| e.to_string())?;
        val_to_json(val.as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn json_numbers_pick_the_narrowest_cel_number() {
        assert_eq!(json_to_value(&json!(3)), Value::Int(3));
        assert_eq!(json_to_value(&json!(-3)), Value::Int(-3));
        assert_eq!(json_to_value(&json!(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(json_to_value(&json!(10.5)), Value::Float(10.5));
        assert_eq!(json_to_value(&json!(3.0)), Value::Float(3.0));
        assert_eq!(json_to_value(&json!(null)), Value::Null);
    }

    #[test]
    fn json_round_trips_through_cel_value() {
        let doc = json!({"s": "x", "n": 1, "f": 1.25, "b": true, "z": null, "l": [1, "a", [2]], "o": {"k": {}}});
        let back = value_to_json(&json_to_value(&doc)).expect("converts");
        assert_eq!(back, doc);
    }

    #[test]
    fn json_round_trips_through_the_lazy_view_in_order() {
        let doc: Json = serde_json::from_str(
            r#"{"zeta": 1, "alpha": {"y": [1, 2.5, "s", null, true], "b": {}}, "mid": []}"#,
        )
        .expect("json");
        let back = val_to_json(json_to_val(&doc).as_ref()).expect("converts");
        assert_eq!(
            serde_json::to_string(&back).expect("prints"),
            serde_json::to_string(&doc).expect("prints")
        );
    }

    #[test]
    fn special_cel_values_have_a_json_form() {
        assert_eq!(eval_to_json("b'hi'"), Ok(json!("aGk=")));
        assert_eq!(
            eval_to_json("timestamp('2026-02-06T22:00:00Z')"),
            Ok(json!("2026-02-06T22:00:00Z"))
        );
        assert_eq!(
            eval_to_json("timestamp('2026-02-06T22:00:00.250+01:00')"),
            Ok(json!("2026-02-06T22:00:00.250+01:00"))
        );
        assert_eq!(eval_to_json("duration('1.5s')"), Ok(json!("1.5s")));
        assert_eq!(eval_to_json("duration('-90m')"), Ok(json!("-5400s")));
        assert_eq!(eval_to_json("type(1)"), Ok(json!("int")));
        assert_eq!(eval_to_json("optional.of(2)"), Ok(json!(2)));
        assert_eq!(eval_to_json("optional.none()"), Ok(json!(null)));
        assert_eq!(eval_to_json("base64.encode(b'x')"), Ok(json!("eA==")));
    }

    #[test]
    fn map_keys_are_printed_and_sorted() {
        assert_eq!(
            eval_to_json("{'b': 1, 'a': 2, 3: 'x', true: false}"),
            Ok(json!({"3": "x", "a": 2, "b": 1, "true": false}))
        );
        let printed =
            serde_json::to_string(&eval_to_json("{'b': 1, 'a': 2}").expect("map")).expect("print");
        assert_eq!(printed, r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn non_finite_doubles_are_errors() {
        assert_eq!(
            eval_to_json("1.0 / 0.0"),
            Err("inf has no JSON form".to_owned())
        );
        assert_eq!(
            value_to_json(&Value::Float(f64::NAN)),
            Err(ConversionError::new("NaN has no JSON form"))
        );
    }

    #[test]
    fn owned_values_convert_like_interpreter_values() {
        let value = Value::Map(Map::from(std::collections::HashMap::from([
            ("b", Value::Bytes(Arc::new(b"hi".to_vec()))),
            ("a", Value::Duration(chrono::Duration::milliseconds(1500))),
        ])));
        assert_eq!(value_to_json(&value), Ok(json!({"a": "1.5s", "b": "aGk="})));
    }
}
