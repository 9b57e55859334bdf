//! The custom resources as the API server stores them, their spec not yet read.
//!
//! The CRD schema admits specs the typed kinds cannot hold: `source.config` lists the fields of
//! every source type, an int-or-string size is untyped, a duration is any string. One such
//! object fails a typed list of its kind, and a typed watch retries that list forever, so every
//! other resource of the kind would stop being reconciled and rendered. The controllers and the
//! renderer therefore watch [`Undecoded`] resources, and read each spec on its own with
//! [`Undecoded::decode`], as `fiso validate` reads a file: the typed resource, or every finding
//! with its `spec.` path, reported in the status like any other invalid value.

use std::borrow::Cow;
use std::fmt::Debug;
use std::marker::PhantomData;

use fiso_config::apps::AppConfig;
use fiso_config::crd::{FlowDefinition, LinkTarget, ResourceStatus, WasmApp};
use fiso_config::diagnostic::{join_path, Diagnostic};
use fiso_config::flow::FlowConfig;
use fiso_config::link::TargetConfig;
use fiso_config::parse::parse_value;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::validation;

/// A kind whose spec is one of the config types `fiso-config` reads.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Send + Sync + 'static
{
    type Spec: DeserializeOwned + JsonSchema;

    fn from_parts(metadata: ObjectMeta, spec: Self::Spec, status: Option<ResourceStatus>) -> Self;

    /// Every validation finding, with `spec.` paths.
    fn check(&self) -> Vec<Diagnostic>;
}

impl Kind for FlowDefinition {
    type Spec = FlowConfig;

    fn from_parts(metadata: ObjectMeta, spec: FlowConfig, status: Option<ResourceStatus>) -> Self {
        FlowDefinition {
            metadata,
            spec,
            status,
        }
    }

    fn check(&self) -> Vec<Diagnostic> {
        validation::check_flow(self)
    }
}

impl Kind for LinkTarget {
    type Spec = TargetConfig;

    fn from_parts(
        metadata: ObjectMeta,
        spec: TargetConfig,
        status: Option<ResourceStatus>,
    ) -> Self {
        LinkTarget {
            metadata,
            spec,
            status,
        }
    }

    fn check(&self) -> Vec<Diagnostic> {
        validation::check_target(self)
    }
}

impl Kind for WasmApp {
    type Spec = AppConfig;

    fn from_parts(metadata: ObjectMeta, spec: AppConfig, status: Option<ResourceStatus>) -> Self {
        WasmApp {
            metadata,
            spec,
            status,
        }
    }

    fn check(&self) -> Vec<Diagnostic> {
        validation::check_app(self)
    }
}

/// A resource of kind `K` with its spec as written: this decodes whatever the API server
/// admitted. An unreadable status (only the operator writes it) reads as none.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct Undecoded<K> {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: serde_json::Value,
    #[serde(default, deserialize_with = "status_or_none")]
    pub status: Option<ResourceStatus>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

fn status_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ResourceStatus>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

impl<K: Kind> Undecoded<K> {
    /// The typed resource when its spec reads cleanly. Else every finding: what reading found
    /// (unknown fields, wrong types, values their type refuses), and what the checks find in
    /// the rest of it — exactly what `fiso validate` reports for a file with mistakes.
    pub fn decode(&self) -> Result<K, Vec<Diagnostic>> {
        let mut parsed = parse_value::<K::Spec>("spec", &self.spec);
        let clean = parsed.is_clean();
        let Some(spec) = parsed.config.take() else {
            return Err(in_resource(parsed.diagnostics.0));
        };
        let decoded = K::from_parts(self.metadata.clone(), spec, self.status.clone());
        if clean {
            return Ok(decoded);
        }
        // A finding about a value set aside is about its stand-in, not what the spec says.
        let checks: Vec<Diagnostic> = decoded
            .check()
            .into_iter()
            .filter(|d| {
                let Some(in_spec) = d.path.strip_prefix("spec") else {
                    return true;
                };
                let in_spec = in_spec.strip_prefix('.').unwrap_or(in_spec);
                parsed
                    .locate(Diagnostic::error(in_spec, d.message.clone()))
                    .is_some()
            })
            .collect();
        let mut findings = in_resource(parsed.diagnostics.0);
        findings.extend(checks);
        Err(findings)
    }

    /// The resource when its spec decodes, and every finding about it: what decoding found, or
    /// else what the checks find.
    pub fn checked(&self) -> (Option<K>, Vec<Diagnostic>) {
        match self.decode() {
            Ok(k) => {
                let findings = k.check();
                (Some(k), findings)
            }
            Err(findings) => (None, findings),
        }
    }
}

/// Findings about the spec with resource paths (`spec.source.config.topic`). Their line and
/// column point into the spec as re-written for reading, which nobody sees: dropped.
fn in_resource(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags
        .into_iter()
        .map(|d| Diagnostic {
            path: join_path("spec", &d.path),
            file: None,
            line: None,
            column: None,
            ..d
        })
        .collect()
}

impl<K> Clone for Undecoded<K> {
    fn clone(&self) -> Self {
        Undecoded {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Debug for Undecoded<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(&K::kind(&()))
            .field("metadata", &self.metadata)
            .field("spec", &self.spec)
            .field("status", &self.status)
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Undecoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        K::api_version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use fiso_config::diagnostic::MAX_PER_FILE;
    use serde_json::json;

    use super::*;
    use crate::testing::{flow, undecoded};
    use crate::validation::error_lines;

    /// A FlowDefinition as the API server sends it, with `spec`.
    fn flow_with(spec: serde_json::Value) -> Undecoded<FlowDefinition> {
        let mut fd = undecoded(&flow("orders", "http://svc:8080/x"));
        fd.spec = spec;
        fd
    }

    fn errors<K: Kind>(raw: &Undecoded<K>) -> Vec<String> {
        error_lines(&raw.decode().expect_err("does not decode"))
    }

    #[test]
    fn a_valid_spec_decodes_to_the_typed_resource() {
        let fd = flow("orders", "http://svc:8080/x");
        let decoded = undecoded(&fd).decode().expect("decodes");
        assert_eq!(decoded.spec, fd.spec);
        assert_eq!(decoded.metadata, fd.metadata);
        assert!(decoded.check().is_empty());
    }

    /// What the CRD schema admits and the typed spec refuses, each finding at its path and in
    /// the words `fiso validate` uses; and the rest of the spec is still checked.
    #[test]
    fn what_the_api_server_admits_but_does_not_decode_is_every_finding() {
        let fd = flow_with(json!({
            "source": {"type": "http", "config": {
                "listenAddr": ":8081",
                "path": "/orders",
                // Kafka's, admitted because the schema lists every source's fields.
                "topic": "orders",
                // int-or-string sizes are untyped in the schema.
                "maxBodySize": true,
            }},
            "sink": {"type": "http", "config": {
                "url": "ftp://svc/x",
                "timeout": "5 parsecs",
            }},
        }));
        let errors = errors(&fd);
        pretty_assertions::assert_eq!(
            errors,
            [
                "spec.source.config.topic: unknown field `topic`, expected one of `listenAddr`, `path`, `maxBodySize`, `readHeaderTimeout`, `idleTimeout`, `bodyTimeout` (hint: remove `topic`; allowed here: `listenAddr`, `path`, `maxBodySize`, `readHeaderTimeout`, `idleTimeout`, `bodyTimeout`)",
                "spec.source.config.maxBodySize: expected a size: an integer or a string such as \"1MiB\" (hint: `maxBodySize` takes an int or string: Largest accepted request body (default 1MiB); larger requests get 413; the README's “Configuration reference” lists every field and its type)",
                "spec.sink.config.timeout: invalid value: string \"5 parsecs\", expected a duration (hint: `timeout` takes a string: Per-attempt timeout (default 30s); the README's “Configuration reference” lists every field and its type)",
                // The rest of the spec is still checked.
                "spec.sink.config.url: `ftp://svc/x` is not an http(s) URL (scheme `ftp`) (hint: e.g. http://order-service:8080/events)",
            ]
        );
    }

    #[test]
    fn an_unknown_field_inside_an_untyped_part_does_not_decode() {
        // `startOffset` is int-or-string: the schema keeps whatever is under it.
        let fd = flow_with(json!({
            "source": {"type": "kafka", "config": {
                "cluster": "main", "topic": "orders", "consumerGroup": "g",
                "startOffset": {"offset": 3},
            }},
            "sink": {"type": "http", "config": {"url": "http://svc:8080/x"}},
        }));
        let errors = errors(&fd);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.source.config.startOffset: startOffset must be `earliest`, `latest` or a non-negative integer offset"),
            "{errors:?}"
        );
        assert!(
            errors[1]
                .starts_with("spec.source.config.cluster: Kafka cluster `main` is not defined"),
            "the rest is checked: {errors:?}"
        );
    }

    #[test]
    fn a_link_target_that_does_not_decode_names_its_field() {
        let mut lt = undecoded(&crate::testing::link("crm", "crm.example.com"));
        lt.spec["timeout"] = json!("soon");
        let errors = errors(&lt);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.timeout: invalid value: string \"soon\""),
            "{errors:?}"
        );
    }

    #[test]
    fn the_findings_are_bounded() {
        let mut spec = undecoded(&flow("orders", "http://svc:8080/x")).spec;
        for i in 0..MAX_PER_FILE + 50 {
            spec["source"]["config"][format!("extra{i}")] = json!(1);
        }
        let errors = errors(&flow_with(spec));
        assert_eq!(errors.len(), MAX_PER_FILE + 1, "{errors:?}");
        assert!(errors[MAX_PER_FILE].starts_with("more findings are not listed"));
    }

    #[test]
    fn an_unreadable_status_reads_as_none() {
        let mut value = serde_json::to_value(flow("orders", "http://svc:8080/x")).unwrap();
        value["status"] = json!({"phase": "Sideways", "conditions": 3});
        let fd: Undecoded<FlowDefinition> = serde_json::from_value(value).unwrap();
        assert!(fd.status.is_none());
        assert!(fd.decode().is_ok());
    }
}
