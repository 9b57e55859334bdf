//! The custom resources `FlowDefinition`, `LinkTarget` and `WasmApp` (`fiso.io/v1alpha1`).
//!
//! Each is derived (`kube::CustomResource`) from the very type a local file loads:
//! `FlowDefinition.spec` is a [`FlowConfig`](crate::flow::FlowConfig), `LinkTarget.spec` a
//! [`TargetConfig`](crate::link::TargetConfig) and `WasmApp.spec` an
//! [`AppConfig`](crate::apps::AppConfig) (one entry of an apps file).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::apps::WasmApp;
pub use crate::flow::FlowDefinition;
pub use crate::link::LinkTarget;

pub const API_GROUP: &str = "fiso.io";
pub const API_VERSION: &str = "v1alpha1";
pub const API_GROUP_VERSION: &str = "fiso.io/v1alpha1";

/// Reconciliation outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Ready,
    Error,
}

/// `.status` of every kind, written by the operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Human-readable summary: every validation problem when `phase` is `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Valid` and `Rendered`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Every CRD, in a stable order, for `cargo xtask crds` and the drift test.
pub fn all(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube_core::CustomResourceExt;
    vec![FlowDefinition::crd(), LinkTarget::crd(), WasmApp::crd()]
        .into_iter()
        .map(for_every_api_server)
        .collect()
}

/// Rewrites the derived schema into one that every supported API server (1.20 to current)
/// accepts and publishes without errors, node by node:
///
/// - schemars lists `null` among the `enum` values of an optional enum (next to
///   `nullable: true`). kube-apiserver < 1.25 cannot decode a `null` enum value and rejects the
///   whole CRD with a misleading error; `nullable: true` alone already admits `null`.
/// - `x-kubernetes-int-or-string: true` (sizes, Kafka start offsets) becomes
///   `x-kubernetes-preserve-unknown-fields: true`. kube-apiserver 1.20 builds a CRD's
///   server-side-apply models by stripping value validations and *then* unfolding every
///   int-or-string node into `anyOf: [{type: integer}, {type: string}]`. The models are an
///   OpenAPI v2 document, where `anyOf` is invalid, so the CRD gets none ("error building
///   openapi models ... has invalid property: anyOf") and server-side apply merges it untyped.
///   1.21 unfolds first (kubernetes/kubernetes#97172); on 1.20 only leaving the extension out
///   avoids it, and preserve-unknown-fields is the one other structural way to leave `type` out.
///   Every server publishes both as an untyped field. The API server then admits a value that
///   is neither an integer nor a string (say `true`); deserialisation refuses it, and the
///   operator reports it in the resource's status like any other invalid value.
fn for_every_api_server(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    fn rewrite(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|e| !e.is_null());
                }
                if map.remove(INT_OR_STRING) == Some(serde_json::Value::Bool(true)) {
                    map.insert(PRESERVE_UNKNOWN_FIELDS.into(), true.into());
                }
                map.values_mut().for_each(rewrite);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(&crd).expect("CRD serialises");
    rewrite(&mut json);
    serde_json::from_value(json).expect("CRD deserialises")
}

/// The marker the config types' schema uses (and the reference docs show as "int or string").
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const PRESERVE_UNKNOWN_FIELDS: &str = "x-kubernetes-preserve-unknown-fields";

/// The checked-in YAML file name of each CRD, paired with its rendered text.
pub fn rendered() -> Vec<(String, String)> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let json = serde_json::to_value(&crd).expect("CRD serialises");
            let yaml = yaml_text(json).expect("CRD serialises");
            (format!("{name}.yaml"), yaml)
        })
        .collect()
}

/// A JSON value (a CRD, or a spec as the API server sends it) as YAML text.
pub fn yaml_text(value: serde_json::Value) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&yaml_value(value))
}

/// `value` as YAML. Numbers are converted by value: serde_json's `arbitrary_precision` (on in
/// this workspace) hands a number to any other serializer as a one-entry map, which would put
/// `{$serde_json::private::Number: '0'}` where a schema says `default: 0`.
fn yaml_value(value: serde_json::Value) -> serde_yaml_ng::Value {
    use serde_json::Value as J;
    use serde_yaml_ng::Value as Y;
    match value {
        J::Null => Y::Null,
        J::Bool(b) => Y::Bool(b),
        J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Y::Number(u.into()),
            (_, Some(i), _) => Y::Number(i.into()),
            (_, _, Some(f)) => Y::Number(f.into()),
            _ => Y::String(n.to_string()),
        },
        J::String(s) => Y::String(s),
        J::Array(items) => Y::Sequence(items.into_iter().map(yaml_value).collect()),
        J::Object(map) => Y::Mapping(
            map.into_iter()
                .map(|(k, v)| (Y::String(k), yaml_value(v)))
                .collect(),
        ),
    }
}
