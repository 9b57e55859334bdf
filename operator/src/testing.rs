//! Fixtures for unit tests: custom resources as `kubectl apply` would send them.

use fiso_config::crd::{FlowDefinition, LinkTarget};

/// Parses a FlowDefinition / LinkTarget manifest and fills in what the API server adds.
pub fn resource<K: serde::de::DeserializeOwned + kube::Resource>(yaml: &str) -> K {
    let mut k: K = serde_yaml_ng::from_str(yaml).expect("fixture parses");
    let meta = k.meta_mut();
    let name = meta.name.clone().unwrap_or_default();
    meta.namespace.get_or_insert_with(|| "apps".to_owned());
    meta.uid.get_or_insert_with(|| format!("uid-{name}"));
    meta.generation.get_or_insert(1);
    k
}

/// An HTTP → HTTP FlowDefinition in namespace `apps`.
pub fn flow(name: &str, sink_url: &str) -> FlowDefinition {
    resource(&format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: FlowDefinition
metadata:
  name: {name}
spec:
  source:
    type: http
    config:
      listenAddr: ":8081"
      path: /{name}
  sink:
    type: http
    config:
      url: "{sink_url}"
"#
    ))
}

/// An https LinkTarget in namespace `apps`.
pub fn link(name: &str, host: &str) -> LinkTarget {
    resource(&format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: LinkTarget
metadata:
  name: {name}
spec:
  protocol: https
  host: "{host}"
"#
    ))
}
