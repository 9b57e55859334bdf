//! The config reference in the README, generated from the same schema the CRDs use, so the
//! documentation cannot drift from the types (a test compares the README with [`markdown`]).

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::flow::FlowConfig;
use crate::link::LinkConfig;

/// Markdown tables: every field of a flow file and of the link config.
pub fn markdown() -> String {
    let mut out = String::new();
    table::<FlowConfig>(
        &mut out,
        "Flow file (`fiso/flows/*.yaml`, `FlowDefinition.spec`)",
    );
    table::<LinkConfig>(
        &mut out,
        "Link config (`fiso/link/config.yaml`; a `LinkTarget.spec` is one `targets[]` entry)",
    );
    out
}

/// The schema of `T` the reference is written from (subschemas inlined).
pub fn schema<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    serde_json::to_value(&schema).expect("schema is JSON")
}

/// What the reference says about one field of a [`schema`]: its type as the reference writes it
/// (`string`, `int or string`, `` `http` | `kafka` ``) and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDoc {
    pub ty: String,
    pub description: String,
}

/// The reference entry of the field at `path` (map keys, and `None` for a list index):
/// `transform.fields.total` is the entry `transform.fields.<name>`.
pub fn describe<'a>(
    schema: &Value,
    path: impl IntoIterator<Item = Option<&'a str>>,
) -> Option<FieldDoc> {
    let mut node = schema;
    for step in path {
        let here = unwrap_nullable(node);
        node = match step {
            Some(key) => here
                .get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| here.get("additionalProperties").filter(|v| v.is_object()))?,
            None => here.get("items")?,
        };
    }
    let node = unwrap_nullable(node);
    Some(FieldDoc {
        ty: type_of(node).replace(" \\| ", " | "),
        description: node
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " "),
    })
}

fn table<T: JsonSchema>(out: &mut String, title: &str) {
    let value = schema::<T>();
    out.push_str(&format!(
        "#### {title}\n\n| Field | Type | Description |\n|---|---|---|\n"
    ));
    walk(out, &value, "");
    out.push('\n');
}

fn walk(out: &mut String, node: &Value, path: &str) {
    let node = unwrap_nullable(node);
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let prop = unwrap_nullable(prop);
        let mut ty = type_of(prop);
        if required.contains(&name.as_str()) {
            ty.push_str(", required");
        }
        let desc = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        out.push_str(&format!("| `{full}` | {ty} | {desc} |\n"));
        walk(out, prop, &full);
        if let Some(items) = prop.get("items") {
            walk(out, items, &format!("{full}[]"));
        }
        if let Some(values) = prop.get("additionalProperties").filter(|v| v.is_object()) {
            walk(out, values, &format!("{full}.<name>"));
        }
    }
}

fn unwrap_nullable(node: &Value) -> &Value {
    if let Some([only]) = node
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return only;
    }
    node.get("anyOf")
        .and_then(Value::as_array)
        .and_then(|alts| {
            alts.iter()
                .find(|a| a.get("type") != Some(&Value::from("null")))
        })
        .unwrap_or(node)
}

fn type_of(prop: &Value) -> String {
    if prop.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".into();
    }
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        let vs: Vec<String> = values
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect();
        return vs.join(" \\| ");
    }
    if let Some(alts) = prop.get("oneOf").and_then(Value::as_array) {
        let consts: Vec<String> = alts
            .iter()
            .filter_map(|a| a.get("const")?.as_str().map(|c| format!("`{c}`")))
            .collect();
        if !consts.is_empty() {
            return consts.join(" \\| ");
        }
    }
    match prop.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let inner = prop
                .get("items")
                .map(|i| type_of(unwrap_nullable(i)))
                .unwrap_or_default();
            format!("list of {inner}")
        }
        Some(Value::String(t))
            if t == "object"
                && prop
                    .get("additionalProperties")
                    .is_some_and(Value::is_object) =>
        {
            format!(
                "map of {}",
                type_of(unwrap_nullable(&prop["additionalProperties"]))
            )
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

/// The text between `<!-- {marker}:start -->` and `<!-- {marker}:end -->` (trimmed of the
/// newlines that frame it).
pub fn section<'a>(doc: &'a str, marker: &str) -> Option<&'a str> {
    let start = format!("<!-- {marker}:start -->\n");
    let end = format!("<!-- {marker}:end -->");
    let from = doc.find(&start)? + start.len();
    let to = from + doc[from..].find(&end)?;
    Some(&doc[from..to])
}

/// `doc` with the marked section replaced by `body`.
pub fn replace_section(doc: &str, marker: &str, body: &str) -> Option<String> {
    let current = section(doc, marker)?;
    let from = current.as_ptr() as usize - doc.as_ptr() as usize;
    Some(format!(
        "{}{}{}",
        &doc[..from],
        body,
        &doc[from + current.len()..]
    ))
}
