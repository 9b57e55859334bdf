//! The custom resources `FlowDefinition` and `LinkTarget` (`fiso.io/v1alpha1`).
//!
//! Both are derived (`kube::CustomResource`) from the very types a local file loads:
//! `FlowDefinition.spec` is a [`FlowConfig`](crate::flow::FlowConfig) and `LinkTarget.spec` a
//! [`TargetConfig`](crate::link::TargetConfig).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// `.status` of both kinds, written by the operator.
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

/// Both CRDs, in a stable order, for `cargo xtask crds` and the drift test.
pub fn all(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube_core::CustomResourceExt;
    vec![FlowDefinition::crd(), LinkTarget::crd()]
        .into_iter()
        .map(without_null_enum_values)
        .collect()
}

/// schemars lists `null` among the `enum` values of an optional enum (next to
/// `nullable: true`). kube-apiserver < 1.25 cannot decode a `null` enum value and rejects the
/// whole CRD with a misleading error; `nullable: true` alone already admits `null`.
fn without_null_enum_values(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|e| !e.is_null());
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(&crd).expect("CRD serialises");
    strip(&mut json);
    serde_json::from_value(json).expect("CRD deserialises")
}

/// The checked-in YAML file name of each CRD, paired with its rendered text.
pub fn rendered() -> Vec<(String, String)> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_yaml_ng::to_string(&crd).expect("CRD serialises");
            (format!("{name}.yaml"), yaml)
        })
        .collect()
}
