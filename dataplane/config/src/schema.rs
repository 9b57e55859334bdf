//! Hand-written JSON schemas where the derived ones would not be Kubernetes-structural.

use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

/// `x-kubernetes-int-or-string`: the structural way to say "an integer or a string" (the
/// reference docs show it as such). The CRDs replace it with an untyped leaf, which
/// kube-apiserver 1.20 can publish (see `crd::all`).
pub(crate) fn int_or_string(description: &str) -> Schema {
    json_schema!({
        "description": description,
        "x-kubernetes-int-or-string": true
    })
}

/// Schema for `{type: <variant>, config: {...}}` enums.
///
/// A `oneOf` per variant would not be structural (Kubernetes rejects differing `config` shapes),
/// so `config` is the union of every variant's properties, each typed. Which properties belong
/// to which `type` is enforced by deserialisation and validation, and said in the descriptions.
pub(crate) fn tagged_union(
    description: &str,
    variants: Vec<(&'static str, Schema)>,
    config_required: bool,
) -> Schema {
    let mut merged: Map<String, Value> = Map::new();
    let mut owners: Map<String, Value> = Map::new();
    for (tag, schema) in &variants {
        let props = schema
            .as_object()
            .and_then(|o| o.get("properties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, prop) in props {
            owners
                .entry(name.clone())
                .or_insert_with(|| Value::Array(vec![]))
                .as_array_mut()
                .expect("owners are arrays")
                .push(Value::String((*tag).to_owned()));
            match merged.get_mut(&name) {
                None => {
                    merged.insert(name, strip_nullable_default(prop));
                }
                Some(existing) => merge_property(&name, existing, strip_nullable_default(prop)),
            }
        }
    }
    for (name, prop) in merged.iter_mut() {
        let tags: Vec<String> = owners[name]
            .as_array()
            .expect("owners are arrays")
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        if let Some(obj) = prop.as_object_mut() {
            let base = obj
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let text = format!("[{}] {}", tags.join(", "), base)
                .trim_end()
                .to_owned();
            obj.insert("description".into(), Value::String(text));
        }
    }
    let tags: Vec<Value> = variants
        .iter()
        .map(|(t, _)| Value::String((*t).to_owned()))
        .collect();
    let mut required = vec![Value::String("type".into())];
    if config_required {
        required.push(Value::String("config".into()));
    }
    json_schema!({
        "description": description,
        "type": "object",
        "required": required,
        "properties": {
            "type": { "type": "string", "enum": tags },
            "config": { "type": "object", "properties": merged }
        }
    })
}

/// Brings a property schema to one comparable shape: no default, no null alternative, and
/// documented unit enums (`oneOf` of `const`s) as a plain string `enum`.
fn strip_nullable_default(prop: Value) -> Value {
    let Value::Object(mut obj) = prop else {
        return prop;
    };
    obj.remove("default");
    obj.remove("nullable");
    if let Some(Value::Array(alts)) = obj.get("anyOf").cloned() {
        let non_null: Vec<Value> = alts
            .into_iter()
            .filter(|a| a.get("type") != Some(&Value::from("null")))
            .collect();
        if non_null.len() == 1 {
            obj.remove("anyOf");
            let description = obj.remove("description");
            let Value::Object(inner) = strip_nullable_default(non_null[0].clone()) else {
                unreachable!("object in, object out")
            };
            obj.extend(inner);
            if let Some(d) = description {
                obj.insert("description".into(), d);
            }
        }
    }
    if let Some(Value::Array(alts)) = obj.get("oneOf").cloned() {
        let consts: Option<Vec<Value>> = alts.iter().map(|a| a.get("const").cloned()).collect();
        if let Some(consts) = consts {
            obj.remove("oneOf");
            obj.insert("type".into(), Value::from("string"));
            obj.insert("enum".into(), Value::Array(consts));
        }
    }
    if let Some(Value::Array(types)) = obj.get("type").cloned() {
        let non_null: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        if non_null.len() == 1 {
            obj.insert("type".into(), non_null[0].clone());
        }
    }
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    Value::Object(obj)
}

/// Two variants declare the same property: allowed when the shapes agree; string enums merge.
fn merge_property(name: &str, existing: &mut Value, new: Value) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("description");
            o.remove("enum");
        }
        v
    };
    assert_eq!(
        strip(existing),
        strip(&new),
        "config property `{name}` has different shapes in two variants; rename one"
    );
    if let (Some(a), Some(b)) = (
        existing.get("enum").and_then(Value::as_array).cloned(),
        new.get("enum").and_then(Value::as_array),
    ) {
        let mut all = a;
        for v in b {
            if !all.contains(v) {
                all.push(v.clone());
            }
        }
        existing
            .as_object_mut()
            .expect("object schema")
            .insert("enum".into(), Value::Array(all));
    }
}

/// The object schema of `T` with its properties inline (never a bare `$ref`).
pub(crate) fn object_schema<T: schemars::JsonSchema>(gen: &mut SchemaGenerator) -> Schema {
    T::json_schema(gen)
}
