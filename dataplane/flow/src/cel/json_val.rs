//! A CEL view of a borrowed JSON object or array.
//!
//! Converting the whole payload to CEL values up front costs time proportional to its size,
//! although an expression usually reads a handful of fields, and it loses the key order of
//! objects (CEL maps are hash maps). [`JsonRef`] instead answers CEL's questions (`a.b`,
//! `a[0]`, `size(a)`, `k in a`, comprehensions) straight from the `serde_json` tree: a field is
//! converted when it is read, strings are borrowed, and an object passed through whole
//! (`data.customer`) comes back out with its keys in their original order.

use std::sync::OnceLock;

use cel::common::traits::{self, Adder, Container, Indexer, Iterable, Sizer, Zeroer};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelNull, CelString, CelUInt, Kind, Type, LIST_TYPE,
    MAP_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::{ExecutionError, Value};
use serde_json::Value as Json;

/// A JSON value as CEL sees it: scalars become CEL's own types (so every standard function
/// accepts them), strings borrow from the document, objects and arrays become a [`JsonRef`].
pub fn json_to_val(json: &Json) -> Box<dyn Val + '_> {
    match json {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => number_to_val(n),
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(_) | Json::Object(_) => Box::new(JsonRef::new(json)),
    }
}

/// Integers stay integers when they fit (`int`, else `uint`), so `data.count + 1` is exact.
/// Anything else is a `double`: CEL has no wider number, so an integer beyond 64 bits or a
/// decimal with more digits than a double holds is computed with in double precision (its
/// exact text only survives where it is passed through, see [`crate::event::json`]).
fn number_to_val(n: &serde_json::Number) -> Box<dyn Val + 'static> {
    if let Some(i) = n.as_i64() {
        Box::new(CelInt::from(i))
    } else if let Some(u) = n.as_u64() {
        Box::new(CelUInt::from(u))
    } else {
        Box::new(CelDouble::from(crate::event::json::number_as_f64(n)))
    }
}

/// A borrowed JSON object (a CEL `map`) or array (a CEL `list`).
///
/// Iteration has to hand out references to CEL values; those are materialised once, on the
/// first iteration, and kept for the life of this view.
#[derive(Debug)]
pub struct JsonRef<'v> {
    json: &'v Json,
    items: OnceLock<Vec<Box<dyn Val + 'v>>>,
}

impl<'v> JsonRef<'v> {
    /// A view of `json`, which should be an object or an array (anything else is an empty
    /// list).
    pub fn new(json: &'v Json) -> Self {
        JsonRef {
            json,
            items: OnceLock::new(),
        }
    }

    /// The JSON this view reads.
    pub fn json(&self) -> &'v Json {
        self.json
    }

    fn is_object(&self) -> bool {
        self.json.is_object()
    }

    fn len(&self) -> usize {
        match self.json {
            Json::Object(map) => map.len(),
            Json::Array(items) => items.len(),
            _ => 0,
        }
    }

    /// Keys of an object, elements of an array, as CEL values.
    fn items(&self) -> &[Box<dyn Val + 'v>] {
        self.items.get_or_init(|| match self.json {
            Json::Object(map) => map
                .keys()
                .map(|k| Box::new(CelString::from(k.as_str())) as Box<dyn Val + 'v>)
                .collect(),
            Json::Array(items) => items.iter().map(json_to_val).collect(),
            _ => Vec::new(),
        })
    }

    fn lookup(&self, key: &dyn Val) -> Result<Option<&'v Json>, ExecutionError> {
        match self.json {
            Json::Object(map) => match key.downcast_ref::<CelString>() {
                Some(name) => Ok(map.get(name.inner())),
                // JSON keys are strings: another map key type is valid CEL, it just isn't there.
                None if is_map_key(key) => Ok(None),
                None => Err(ExecutionError::UnexpectedType {
                    got: key.get_type().name().to_owned(),
                    want: "map key".to_owned(),
                }),
            },
            Json::Array(items) => Ok(items.get(list_index(key)?)),
            _ => Ok(None),
        }
    }
}

fn is_map_key(key: &dyn Val) -> bool {
    matches!(
        key.get_type().kind(),
        Kind::String | Kind::Int | Kind::UInt | Kind::Boolean | Kind::Double
    )
}

/// A list index as CEL allows it: an `int`, a `uint`, or a whole `double`.
fn list_index(idx: &dyn Val) -> Result<usize, ExecutionError> {
    let out_of_bounds = || ExecutionError::IndexOutOfBounds(value_of(idx));
    if let Some(i) = idx.downcast_ref::<CelInt>() {
        usize::try_from(*i.inner()).map_err(|_| out_of_bounds())
    } else if let Some(u) = idx.downcast_ref::<CelUInt>() {
        usize::try_from(*u.inner()).map_err(|_| out_of_bounds())
    } else if let Some(d) = idx.downcast_ref::<CelDouble>() {
        let d = *d.inner();
        if d.fract() == 0.0 && d >= 0.0 && d < usize::MAX as f64 {
            Ok(d as usize)
        } else {
            Err(out_of_bounds())
        }
    } else {
        Err(ExecutionError::UnexpectedType {
            got: idx.get_type().name().to_owned(),
            want: "int|uint|double".to_owned(),
        })
    }
}

/// `val` as a [`Value`] for an error message; values with no `Value` form print as null.
fn value_of(val: &dyn Val) -> Value {
    Value::try_from(val).unwrap_or(Value::Null)
}

fn key_text(key: &dyn Val) -> String {
    if let Some(s) = key.downcast_ref::<CelString>() {
        s.inner().to_owned()
    } else {
        match value_of(key) {
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            other => format!("{other:?}"),
        }
    }
}

impl Val for JsonRef<'_> {
    fn get_type(&self) -> &Type {
        if self.is_object() {
            &MAP_TYPE
        } else {
            &LIST_TYPE
        }
    }

    fn cel_type() -> &'static Type
    where
        Self: Sized,
    {
        // Objects and arrays share this Rust type, so there is no one static answer; only the
        // overload macros ask, and they are never given a `JsonRef`.
        &MAP_TYPE
    }

    fn as_adder<'b, 'w>(&'b self) -> Option<&'b (dyn Adder + 'w)>
    where
        Self: 'w,
    {
        (!self.is_object()).then_some(self)
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        deep_equals(self, other)
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(JsonRef::new(self.json))
    }
}

impl Indexer for JsonRef<'_> {
    fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        match self.lookup(idx)? {
            Some(json) => Ok(CowVal::Owned(json_to_val(json))),
            None if self.is_object() => Err(ExecutionError::no_such_key(&key_text(idx))),
            None => Err(ExecutionError::IndexOutOfBounds(value_of(idx))),
        }
    }

    fn steal<'w>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

impl Container for JsonRef<'_> {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        if self.is_object() {
            self.lookup(value).map(|found| found.is_some())
        } else {
            Ok(self
                .items()
                .iter()
                .any(|item| deep_equals(item.as_ref(), value)))
        }
    }
}

struct SliceIter<'b, 'v>(std::slice::Iter<'b, Box<dyn Val + 'v>>);

impl<'b, 'v: 'w, 'w> traits::Iterator<'b, 'w> for SliceIter<'b, 'v> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'w)> {
        self.0.next().map(|item| item.as_ref())
    }
}

impl Iterable for JsonRef<'_> {
    fn iter<'b, 'w>(&'b self) -> Box<dyn traits::Iterator<'b, 'w> + 'b>
    where
        Self: 'w,
    {
        Box::new(SliceIter(self.items().iter()))
    }
}

impl Sizer for JsonRef<'_> {
    fn size(&self) -> CelInt {
        CelInt::from(i64::try_from(self.len()).unwrap_or(i64::MAX))
    }
}

impl Zeroer for JsonRef<'_> {
    fn is_zero_value(&self) -> bool {
        self.len() == 0
    }
}

impl Adder for JsonRef<'_> {
    fn add<'b, 'w>(&'b self, rhs: &(dyn Val + 'w)) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        let Some(rhs_items) = rhs
            .as_iterable()
            .filter(|_| rhs.get_type().kind() == Kind::List)
        else {
            return Err(ExecutionError::UnsupportedBinaryOperator(
                "add",
                value_of(self),
                value_of(rhs),
            ));
        };
        let mut list: Vec<Box<dyn Val + 'w>> = self
            .items()
            .iter()
            .map(|item| item.clone_as_boxed())
            .collect();
        let mut rest = rhs_items.iter();
        while let Some(item) = rest.next() {
            list.push(item.clone_as_boxed());
        }
        Ok(CowVal::owned(CelList::from(list)))
    }
}

/// Structural equality between any two CEL values, lists and maps of any implementation
/// included: the built-in containers only recognise their own kind, so `[1] == data.list`
/// would otherwise be false.
pub fn deep_equals(a: &dyn Val, b: &dyn Val) -> bool {
    match (a.get_type().kind(), b.get_type().kind()) {
        (Kind::List, Kind::List) => {
            let (Some(xs), Some(ys)) = (a.as_iterable(), b.as_iterable()) else {
                return a.equals(b);
            };
            let (mut xs, mut ys) = (xs.iter(), ys.iter());
            loop {
                match (xs.next(), ys.next()) {
                    (None, None) => return true,
                    (Some(x), Some(y)) if deep_equals(x, y) => {}
                    _ => return false,
                }
            }
        }
        (Kind::Map, Kind::Map) => {
            let (Some(a_keys), Some(a_index), Some(b_index)) =
                (a.as_iterable(), a.as_indexer(), b.as_indexer())
            else {
                return a.equals(b);
            };
            if size_of(a) != size_of(b) {
                return false;
            }
            let mut keys = a_keys.iter();
            while let Some(key) = keys.next() {
                match (a_index.get(key), b_index.get(key)) {
                    (Ok(x), Ok(y)) if deep_equals(x.as_ref(), y.as_ref()) => {}
                    _ => return false,
                }
            }
            true
        }
        // A list or map equals nothing of another kind; asking a JSON one `equals` again would
        // come straight back here.
        (Kind::List | Kind::Map, _) | (_, Kind::List | Kind::Map) => false,
        _ => a.equals(b),
    }
}

fn size_of(val: &dyn Val) -> Option<i64> {
    val.as_sizer().map(|s| *s.size().inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Env};
    use serde_json::json;
    use std::sync::Arc;

    fn eval(expr: &str, data: &Json) -> Result<Value, ExecutionError> {
        let env = Arc::new(Env::stdlib());
        let program = env.compile(expr).expect("compiles");
        let mut ctx = Context::with_env(env);
        ctx.add_variable_as_val("data", json_to_val(data));
        Value::resolve(program.expression(), &ctx)
    }

    #[test]
    fn lists_and_maps_are_unequal_to_other_kinds() {
        let data = json!({"l": [1, 2], "m": {"a": 1}, "n": null});
        for expr in [
            "data.l == null",
            "null == data.l",
            "data.m == null",
            "data.l == 1",
            "'x' == data.m",
            "data.l == data.m",
            "data.n == data.l",
        ] {
            assert_eq!(eval(expr, &data), Ok(Value::Bool(false)), "{expr}");
        }
        assert_eq!(eval("data.l != null", &data), Ok(Value::Bool(true)));
        assert_eq!(eval("data.l == [1, 2]", &data), Ok(Value::Bool(true)));
    }

    #[test]
    fn fields_and_elements_read_lazily() {
        let data = json!({"a": {"b": [10, "x", true, null, 1.5]}, "big": 18446744073709551615u64});
        assert_eq!(eval("data.a.b[0]", &data), Ok(Value::Int(10)));
        assert_eq!(
            eval("data.a.b[1]", &data),
            Ok(Value::String(Arc::new("x".into())))
        );
        assert_eq!(eval("data.a.b[2]", &data), Ok(Value::Bool(true)));
        assert_eq!(eval("data.a.b[3]", &data), Ok(Value::Null));
        assert_eq!(eval("data.a.b[4]", &data), Ok(Value::Float(1.5)));
        assert_eq!(
            eval("data.a.b[1u]", &data),
            Ok(Value::String(Arc::new("x".into())))
        );
        assert_eq!(eval("data.big", &data), Ok(Value::UInt(u64::MAX)));
        assert_eq!(eval("data['a']['b'][0]", &data), Ok(Value::Int(10)));
    }

    #[test]
    fn missing_keys_and_indexes_are_errors() {
        let data = json!({"a": [1]});
        assert_eq!(
            eval("data.nope", &data),
            Err(ExecutionError::no_such_key("nope"))
        );
        assert_eq!(
            eval("data.a[3]", &data),
            Err(ExecutionError::IndexOutOfBounds(Value::Int(3)))
        );
        assert_eq!(
            eval("data[1]", &data),
            Err(ExecutionError::no_such_key("1"))
        );
    }

    #[test]
    fn has_size_in_and_comprehensions() {
        let data = json!({"tags": ["a", "b"], "o": {"k": 1}, "empty": []});
        assert_eq!(eval("has(data.tags)", &data), Ok(Value::Bool(true)));
        assert_eq!(eval("has(data.nope)", &data), Ok(Value::Bool(false)));
        assert_eq!(
            eval("size(data.tags) + data.tags.size()", &data),
            Ok(Value::Int(4))
        );
        assert_eq!(eval("size(data)", &data), Ok(Value::Int(3)));
        assert_eq!(eval("'b' in data.tags", &data), Ok(Value::Bool(true)));
        assert_eq!(eval("'k' in data.o", &data), Ok(Value::Bool(true)));
        assert_eq!(eval("1 in data.o", &data), Ok(Value::Bool(false)));
        assert_eq!(
            eval("data.tags.exists(t, t == 'a')", &data),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("data.o.all(k, k == 'k')", &data),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("data.tags.map(t, t + '!')", &data),
            Ok(Value::List(Arc::new(vec![
                Value::String(Arc::new("a!".into())),
                Value::String(Arc::new("b!".into())),
            ])))
        );
        assert_eq!(eval("size(data.tags + ['c'])", &data), Ok(Value::Int(3)));
        assert_eq!(
            eval("size(data.empty + data.tags)", &data),
            Ok(Value::Int(2))
        );
    }

    #[test]
    fn equality_is_structural_both_ways() {
        let data = json!({"tags": ["a", "b"], "o": {"k": 1, "j": [1.0]}});
        assert!(deep_equals(
            &JsonRef::new(&data["tags"]),
            json_to_val(&json!(["a", "b"])).as_ref()
        ));
        assert_eq!(
            eval("data.tags == ['a', 'b']", &data),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("data.o == {'j': [1], 'k': 1}", &data),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("data.o == {'k': 1}", &data), Ok(Value::Bool(false)));
        assert_eq!(eval("data.tags == ['a']", &data), Ok(Value::Bool(false)));
        let literal: Box<dyn Val> = Value::List(Arc::new(vec![
            Value::String(Arc::new("a".into())),
            Value::String(Arc::new("b".into())),
        ]))
        .try_into()
        .expect("list converts");
        assert!(deep_equals(literal.as_ref(), &JsonRef::new(&data["tags"])));
    }
}
