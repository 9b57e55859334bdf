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

/// Walks every schema node: each has a type (or is int-or-string), and none uses constructs
/// that make a schema non-structural or free-form.
fn assert_structural(node: &Value, path: &str) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    for banned in [
        "$ref",
        "oneOf",
        "allOf",
        "not",
        "x-kubernetes-preserve-unknown-fields",
    ] {
        assert!(!obj.contains_key(banned), "{path}: uses `{banned}`");
    }
    if obj.get("anyOf").is_some() {
        panic!("{path}: anyOf");
    }
    if let Some(Value::Array(values)) = obj.get("enum") {
        assert!(
            !values.iter().any(Value::is_null),
            "{path}: `null` in enum (kube-apiserver < 1.25 rejects the whole CRD)"
        );
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    assert!(obj.contains_key("type") || int_or_string, "{path}: no type");
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

#[test]
fn short_names() {
    let names: Vec<Vec<String>> = fiso_config::crd::all()
        .into_iter()
        .map(|c| c.spec.names.short_names.unwrap_or_default())
        .collect();
    assert_eq!(names, vec![vec!["fd".to_owned()], vec!["lt".to_owned()]]);
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
