//! Local project ⇄ Kubernetes manifests (`fiso export`, and the operator's rendering back).
//!
//! Export is fail-closed: anything a custom resource cannot carry is an error with its field path.
//! [`import`] is the exact inverse for everything export accepts, so a round trip is lossless.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde::Deserialize;

use crate::apps::{AppConfig, AppsConfig, ConfigMapKey};
use crate::crd::{FlowDefinition, LinkTarget, WasmApp};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::flow::FlowConfig;
use crate::kafka::{KafkaCluster, KafkaConfig};
use crate::link::{LinkConfig, Protocol, TargetConfig, DEFAULT_LISTEN_ADDR, DEFAULT_METRICS_ADDR};
use crate::validate::{LoadedApps, Project};

/// The largest module `fiso export` ships in a ConfigMap: the API server refuses a ConfigMap
/// whose values add up to more than 1 MiB.
pub const MAX_CONFIGMAP_MODULE: usize = 1024 * 1024;
/// The key of an exported module in its ConfigMap's `binaryData`.
pub const MODULE_KEY: &str = "module.wasm";

/// The custom resources of one project.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub flows: Vec<FlowDefinition>,
    pub targets: Vec<LinkTarget>,
    pub apps: Vec<WasmApp>,
    /// The ConfigMaps the apps' modules are shipped in (`<app>-module`).
    pub modules: Vec<ConfigMap>,
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
    for file in &project.apps {
        export_apps(file, namespace, &mut out, &mut diags);
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(out)
    }
}

/// The apps of one apps file as WasmApps, each module read from this machine into a ConfigMap
/// of its own (`moduleConfigMap`), which the operator mounts into the pods that use the app.
fn export_apps(file: &LoadedApps, namespace: &str, out: &mut Manifests, diags: &mut Diagnostics) {
    let mut error = |path: String, message: String, hint: &str| {
        let mut d = Diagnostic::error(path, message).hint(hint.to_owned());
        d.file = Some(file.file.clone());
        diags.push(d);
    };
    let cfg = &file.config;
    let defaults = AppsConfig::default();
    if cfg.default_port_range != defaults.default_port_range {
        error(
            "defaultPortRange".into(),
            "a port range cannot be expressed in a WasmApp: the sidecar gives apps ports from the default range".into(),
            "remove defaultPortRange, or give each app its `port`",
        );
    }
    if cfg.listen_host != defaults.listen_host {
        error(
            "listenHost".into(),
            format!("`{}` cannot be expressed in a WasmApp: apps in a pod listen on loopback, reached through the sidecar", cfg.listen_host),
            "remove listenHost before exporting",
        );
    }
    if cfg.metrics_addr != defaults.metrics_addr {
        error(
            "metricsAddr".into(),
            format!("`{}` cannot be expressed in a WasmApp: the sidecar's metrics port is set by the operator", cfg.metrics_addr),
            "remove metricsAddr before exporting",
        );
    }
    let dir = Path::new(&file.file).parent().unwrap_or(Path::new(""));
    for (i, app) in cfg.apps.iter().enumerate() {
        let path = format!("apps[{i}]");
        if !app.preopens.is_empty() {
            error(
                format!("{path}.preopens"),
                "directories of this machine cannot be carried into the cluster".into(),
                "remove preopens, or write a WasmApp of your own whose preopens name directories the pod mounts",
            );
        }
        let module = dir.join(&app.module);
        let bytes = match read_at_most(&module, MAX_CONFIGMAP_MODULE) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(size)) => {
                error(
                    format!("{path}.module"),
                    format!(
                        "{} is {size} bytes; a ConfigMap holds at most {MAX_CONFIGMAP_MODULE}",
                        module.display()
                    ),
                    "ship the module in the image (or an image volume) and write a WasmApp of your own with `module: <its path in the pod>`",
                );
                continue;
            }
            Err(e) => {
                error(
                    format!("{path}.module"),
                    format!("cannot read {}: {e}", module.display()),
                    "build the module before exporting",
                );
                continue;
            }
        };
        let config_map = format!("{}-module", app.name);
        let mut wasm_app = WasmApp::new(
            &app.name,
            AppConfig {
                name: String::new(),
                module: String::new(),
                module_config_map: Some(ConfigMapKey {
                    name: config_map.clone(),
                    key: MODULE_KEY.to_owned(),
                }),
                ..app.clone()
            },
        );
        wasm_app.metadata.namespace = Some(namespace.to_owned());
        out.apps.push(wasm_app);
        out.modules.push(ConfigMap {
            metadata: ObjectMeta {
                name: Some(config_map),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    "fiso.io/app".to_owned(),
                    app.name.clone(),
                )])),
                ..ObjectMeta::default()
            },
            binary_data: Some(BTreeMap::from([(MODULE_KEY.to_owned(), ByteString(bytes))])),
            ..ConfigMap::default()
        });
    }
}

/// The bytes of `path` when it holds at most `limit`, else its size: a module too large for a
/// ConfigMap is refused without being read into memory.
fn read_at_most(path: &Path, limit: usize) -> std::io::Result<Result<Vec<u8>, u64>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > limit as u64 {
        return Ok(Err(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    // The file grew after its size was read.
    if bytes.len() > limit {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
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
    for module in &m.modules {
        docs.push(serde_yaml_ng::to_string(module)?);
    }
    for app in &m.apps {
        docs.push(serde_yaml_ng::to_string(app)?);
    }
    Ok(docs.join("---\n"))
}

/// The resources as one kubectl `List` (what `kubectl get -o json` prints and `kubectl apply`
/// takes), in [`to_yaml`]'s order.
pub fn to_json(m: &Manifests) -> Result<serde_json::Value, serde_json::Error> {
    let mut items = Vec::new();
    for fd in &m.flows {
        items.push(serde_json::to_value(fd)?);
    }
    for lt in &m.targets {
        items.push(serde_json::to_value(lt)?);
    }
    for module in &m.modules {
        items.push(serde_json::to_value(module)?);
    }
    for app in &m.apps {
        items.push(serde_json::to_value(app)?);
    }
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
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
            "ConfigMap" => out
                .modules
                .push(serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?),
            other => return Err(format!("unexpected kind `{other}`")),
        }
    }
    Ok(out)
}
