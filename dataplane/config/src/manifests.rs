//! Local project ⇄ Kubernetes manifests (`fiso export`, and the operator's rendering back).
//!
//! Export is fail-closed: anything a custom resource cannot carry is an error with its field path.
//! [`import`] is the exact inverse for everything export accepts, so a round trip is lossless.

use indexmap::IndexMap;
use serde::Deserialize;

use crate::apps::AppConfig;
use crate::crd::{FlowDefinition, LinkTarget, WasmApp};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::flow::FlowConfig;
use crate::kafka::{KafkaCluster, KafkaConfig};
use crate::link::{LinkConfig, Protocol, TargetConfig, DEFAULT_LISTEN_ADDR, DEFAULT_METRICS_ADDR};
use crate::validate::Project;

/// The custom resources of one project.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub flows: Vec<FlowDefinition>,
    pub targets: Vec<LinkTarget>,
    pub apps: Vec<WasmApp>,
}

/// Turns a validated project into custom resources in `namespace`.
pub fn export(project: &Project, namespace: &str) -> Result<Manifests, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut out = Manifests::default();
    for f in &project.flows {
        let Some(name) = f.config.name.clone() else {
            let mut d = Diagnostic::error("name", "a flow needs a name to become a FlowDefinition");
            d.file = Some(f.file.clone());
            diags.push(d);
            continue;
        };
        let spec = FlowConfig {
            name: None,
            ..f.config.clone()
        };
        let mut fd = FlowDefinition::new(&name, spec);
        fd.metadata.namespace = Some(namespace.to_owned());
        out.flows.push(fd);
    }
    if let Some(link) = &project.link {
        let located = |d: Diagnostic| Diagnostic {
            file: Some(link.file.clone()),
            ..d
        };
        let cfg = &link.config;
        if cfg.listen_addr != DEFAULT_LISTEN_ADDR {
            diags.push(located(
                Diagnostic::error(
                    "listenAddr",
                    format!("`{}` cannot be expressed in a LinkTarget: the injected sidecar always listens on {DEFAULT_LISTEN_ADDR}", cfg.listen_addr),
                )
                .hint(format!("remove listenAddr (default {DEFAULT_LISTEN_ADDR}) before exporting")),
            ));
        }
        if cfg.metrics_addr != DEFAULT_METRICS_ADDR {
            diags.push(located(
                Diagnostic::error(
                    "metricsAddr",
                    format!("`{}` cannot be expressed in a LinkTarget: the sidecar's metrics port is set by the operator", cfg.metrics_addr),
                )
                .hint("remove metricsAddr before exporting"),
            ));
        }
        let clusters = cfg.kafka.as_ref().map(|k| &k.clusters);
        for (i, t) in cfg.targets.iter().enumerate() {
            let path = format!("targets[{i}]");
            let env_secret = t
                .auth
                .as_ref()
                .and_then(|a| a.secret_ref.as_ref())
                .and_then(|s| s.env_var.as_ref());
            if let Some(var) = env_secret {
                diags.push(located(
                    Diagnostic::error(
                        format!("{path}.auth.secretRef.envVar"),
                        format!("the environment variable `{var}` of this machine cannot be carried into the cluster"),
                    )
                    .hint("store the secret in a Kubernetes Secret and reference it with secretRef {name, key}"),
                ));
                continue;
            }
            let Some(name) = t.name.clone() else { continue };
            let mut spec = TargetConfig {
                name: None,
                ..t.clone()
            };
            if let Some(k) = spec.kafka.as_mut() {
                if k.cluster_config.is_none() {
                    k.cluster_config = clusters.and_then(|c| c.get(&k.cluster)).cloned();
                }
            }
            let mut lt = LinkTarget::new(&name, spec);
            lt.metadata.namespace = Some(namespace.to_owned());
            out.targets.push(lt);
        }
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(out)
    }
}

/// Custom resources back to local configs: flows named after their resource, and a link
/// config whose `kafka.clusters` collects the clusters the targets carry inline.
pub fn import(manifests: &Manifests) -> (Vec<FlowConfig>, LinkConfig) {
    let flows = manifests
        .flows
        .iter()
        .map(|fd| FlowConfig {
            name: fd.spec.name.clone().or_else(|| fd.metadata.name.clone()),
            ..fd.spec.clone()
        })
        .collect();
    let mut clusters: IndexMap<String, KafkaCluster> = IndexMap::new();
    let targets = manifests
        .targets
        .iter()
        .map(|lt| {
            let mut t = TargetConfig {
                name: lt.spec.name.clone().or_else(|| lt.metadata.name.clone()),
                ..lt.spec.clone()
            };
            if t.protocol == Protocol::Kafka {
                if let Some(k) = t.kafka.as_mut() {
                    if let Some(c) = k.cluster_config.take() {
                        clusters.entry(k.cluster.clone()).or_insert(c);
                    }
                }
            }
            t
        })
        .collect();
    let link = LinkConfig {
        kafka: (!clusters.is_empty()).then_some(KafkaConfig { clusters }),
        targets,
        ..LinkConfig::default()
    };
    (flows, link)
}

/// The app a WasmApp stands for, named after its resource unless `spec.name` says otherwise.
/// `moduleConfigMap` stays as it is: where the module appears is the operator's business.
pub fn import_app(app: &WasmApp) -> AppConfig {
    let mut config = app.spec.clone();
    if config.name.is_empty() {
        config.name = app.metadata.name.clone().unwrap_or_default();
    }
    config
}

/// Multi-document YAML, flows first, each document in `kubectl apply` form.
pub fn to_yaml(m: &Manifests) -> Result<String, serde_yaml_ng::Error> {
    let mut docs = Vec::new();
    for fd in &m.flows {
        docs.push(serde_yaml_ng::to_string(fd)?);
    }
    for lt in &m.targets {
        docs.push(serde_yaml_ng::to_string(lt)?);
    }
    for app in &m.apps {
        docs.push(serde_yaml_ng::to_string(app)?);
    }
    Ok(docs.join("---\n"))
}

/// Reads the output of [`to_yaml`] (or any multi-document file of these kinds).
pub fn from_yaml(text: &str) -> Result<Manifests, String> {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
    }
    let mut out = Manifests::default();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        let head: Head = serde_yaml_ng::from_value(value.clone()).map_err(|e| e.to_string())?;
        match head.kind.as_str() {
            "FlowDefinition" => out
                .flows
                .push(serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?),
            "LinkTarget" => out
                .targets
                .push(serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?),
            "WasmApp" => out
                .apps
                .push(serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?),
            other => return Err(format!("unexpected kind `{other}`")),
        }
    }
    Ok(out)
}
