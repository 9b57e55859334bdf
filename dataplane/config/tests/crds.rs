//! The CRDs are generated from the config types: the checked-in YAML must match them, and the
//! schema must be structural (Kubernetes rejects anything else) and complete (no free-form maps).

use serde_json::Value;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn checked_in_crds_match_types() {
    for dir in ["crds", "charts/fiso/crds"] {
        for (name, yaml) in fiso_config::crd::rendered() {
            let path = root().join(dir).join(&name);
            let on_disk = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crds`", path.display()));
            assert!(
                on_disk == yaml,
                "{} is stale: run `cargo xtask crds` and commit the result",
                path.display()
            );
        }
    }
}

/// Whether `obj` is how the CRDs write an int-or-string field: an untyped leaf that keeps
/// whatever value it is given (see `fiso_config::crd::all`).
fn is_untyped_leaf(obj: &serde_json::Map<String, Value>) -> bool {
    obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && ["type", "properties", "items", "additionalProperties"]
            .iter()
            .all(|k| !obj.contains_key(*k))
}

/// Walks every schema node: each has a type (or is an untyped int-or-string leaf), and none
/// uses constructs that make a schema non-structural or free-form, or that kube-apiserver 1.20
/// cannot publish (`x-kubernetes-int-or-string`).
fn assert_structural(node: &Value, path: &str) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    for banned in [
        "$ref",
        "oneOf",
        "allOf",
        "not",
        "x-kubernetes-int-or-string",
    ] {
        assert!(!obj.contains_key(banned), "{path}: uses `{banned}`");
    }
    let untyped_leaf = is_untyped_leaf(obj);
    assert!(
        untyped_leaf || !obj.contains_key("x-kubernetes-preserve-unknown-fields"),
        "{path}: free-form (x-kubernetes-preserve-unknown-fields on a typed node)"
    );
    if obj.get("anyOf").is_some() {
        panic!("{path}: anyOf");
    }
    if let Some(Value::Array(values)) = obj.get("enum") {
        assert!(
            !values.iter().any(Value::is_null),
            "{path}: `null` in enum (kube-apiserver < 1.25 rejects the whole CRD)"
        );
    }
    assert!(obj.contains_key("type") || untyped_leaf, "{path}: no type");
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    match obj.get("additionalProperties") {
        Some(Value::Object(_)) => {
            assert_structural(&obj["additionalProperties"], &format!("{path}.*"))
        }
        Some(other) => panic!("{path}: additionalProperties {other}"),
        None => {}
    }
    if obj.get("type") == Some(&Value::from("object")) && path.ends_with(".config") {
        let n = obj
            .get("properties")
            .and_then(Value::as_object)
            .map_or(0, |p| p.len());
        assert!(n > 0, "{path}: free-form config");
    }
}

#[test]
fn schemas_are_structural_and_complete() {
    for crd in fiso_config::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}: status subresource"
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{name}: printer columns"
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let schema =
            serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        let spec = &schema["properties"]["spec"];
        assert_structural(spec, &format!("{name}.spec"));
    }
}

/// The schema nodes under `node` (with their paths) for which `pick` holds.
fn nodes_where<'a>(
    node: &'a Value,
    path: &str,
    pick: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
) -> Vec<(String, &'a Value)> {
    let Some(obj) = node.as_object() else {
        return vec![];
    };
    let mut found = Vec::new();
    if pick(obj) {
        found.push((path.to_owned(), node));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            found.extend(nodes_where(v, &format!("{path}.{k}"), pick));
        }
    }
    if let Some(items) = obj.get("items") {
        found.extend(nodes_where(items, &format!("{path}[]"), pick));
    }
    if let Some(additional) = obj.get("additionalProperties") {
        found.extend(nodes_where(additional, &format!("{path}.*"), pick));
    }
    found
}

/// The untyped leaves are exactly the int-or-string fields of the config types (sizes in both
/// kinds, the Kafka start offset in flows), and keep their description (what `kubectl explain`
/// shows) and nullability.
#[test]
fn only_int_or_string_fields_are_untyped() {
    use kube_core::CustomResourceExt;
    let derived = [
        fiso_config::crd::FlowDefinition::crd(),
        fiso_config::crd::LinkTarget::crd(),
    ];
    for (published, derived) in fiso_config::crd::all().iter().zip(&derived) {
        let schema = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            let version = &crd.spec.versions[0];
            serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
        };
        let (published, derived) = (schema(published), schema(derived));
        let untyped = nodes_where(&published, "", &is_untyped_leaf);
        let int_or_string = nodes_where(&derived, "", &|o| {
            o.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        });
        let paths = |nodes: &[(String, &Value)]| -> Vec<String> {
            nodes.iter().map(|(p, _)| p.clone()).collect()
        };
        assert_eq!(paths(&untyped), paths(&int_or_string));
        assert!(
            untyped.iter().any(|(p, _)| p.ends_with(".maxOutputSize")),
            "{:?}",
            paths(&untyped)
        );
        for ((path, node), (_, original)) in untyped.iter().zip(&int_or_string) {
            assert_eq!(node["description"], original["description"], "{path}");
            assert_eq!(node["nullable"], original["nullable"], "{path}");
        }
    }
}

#[test]
fn short_names() {
    let names: Vec<Vec<String>> = fiso_config::crd::all()
        .into_iter()
        .map(|c| c.spec.names.short_names.unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["fd".to_owned()],
            vec!["lt".to_owned()],
            vec!["wapp".to_owned()]
        ]
    );
}

/// The operator reads CRs as the API server sends them: JSON with sorted keys, so `config` comes
/// before `type` and serde buffers the adjacently tagged sink before reading it. The workspace's
/// serde_json has `arbitrary_precision`, which hands a buffered decimal over as a map: no number
/// in a buffered part of the schema may be one that breaks (integers are read as integers).
#[test]
fn custom_resources_with_sorted_keys_and_numbers_deserialize() {
    let flow: fiso_config::crd::FlowDefinition = serde_json::from_str(
        r#"{"apiVersion":"fiso.io/v1alpha1","kind":"FlowDefinition","metadata":{"name":"f"},
            "spec":{"errorHandling":{"maxRetries":3},
                    "sink":{"config":{"maxResponseBodySize":65536,"timeout":"5s","url":"http://x:1"},"type":"http"},
                    "source":{"config":{"cluster":"c","startOffset":42,"topic":"t"},"type":"kafka"}}}"#,
    )
    .expect("a FlowDefinition as the API server sends it");
    let sink = serde_json::to_value(&flow.spec.sink).expect("serialises");
    assert_eq!(sink["config"]["maxResponseBodySize"], "64KiB");
    let link: fiso_config::crd::LinkTarget = serde_json::from_str(
        r#"{"apiVersion":"fiso.io/v1alpha1","kind":"LinkTarget","metadata":{"name":"api"},
            "spec":{"host":"api.example.com","protocol":"https",
                    "rateLimit":{"burst":2,"requestsPerSecond":0.5},
                    "retry":{"jitter":0.25,"maxAttempts":2}}}"#,
    )
    .expect("a LinkTarget as the API server sends it");
    let spec = serde_json::to_value(&link.spec).expect("serialises");
    assert_eq!(spec["rateLimit"]["requestsPerSecond"], 0.5);
    assert_eq!(spec["retry"]["jitter"], 0.25);
}
