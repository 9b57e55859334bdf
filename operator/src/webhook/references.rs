//! What a pod's selected resources reference, read through the API at admission time so the
//! webhook can mount it: the Kubernetes Secrets of its LinkTargets (`spec.auth.secretRef.name`)
//! and the module ConfigMaps of its WasmApps (`spec.moduleConfigMap`); and whether they need
//! the data plane built with Wasmer (a WasmApp, or a `runtime: wasmer` or `wasmer-app`
//! interceptor of a flow or LinkTarget), so the webhook injects that image.
//!
//! The resources are read as untyped objects: one written by a newer CRD version, or one that
//! fails validation, still tells what it needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use fiso_config::apps::ConfigMapKey;
use fiso_config::crd::{FlowDefinition, LinkTarget, WasmApp};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::Client;
use serde_json::Value;

use crate::selection::Selection;

/// How long all reads of one admission may take; the API server's webhook timeout is 10 s by
/// default.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// What to mount, and what the requester should hear about selected resources that were missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Secrets referenced by the LinkTargets.
    pub secrets: BTreeSet<String>,
    /// App name → the ConfigMap key holding its module.
    pub modules: BTreeMap<String, ConfigMapKey>,
    /// The pod runs Wasmer: it selects an app, or a selected resource has a Wasmer interceptor.
    pub wasmer: bool,
    pub warnings: Vec<String>,
}

/// Reading a selected resource failed for a reason other than it not existing.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cannot read {kind} {namespace}/{name}: {source}")]
    Api {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading the resources the pod selects took longer than {0:?}")]
    Timeout(Duration),
}

/// The Secret a LinkTarget `spec` references, if any.
pub fn secret_of(spec: &Value) -> Option<String> {
    spec.pointer("/auth/secretRef/name")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The module ConfigMap key a WasmApp `spec` references, if any.
pub fn module_of(spec: &Value) -> Option<ConfigMapKey> {
    let cm = spec.get("moduleConfigMap")?;
    let field = |f: &str| {
        cm.get(f)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some(ConfigMapKey {
        name: field("name")?,
        key: field("key")?,
    })
}

/// Whether a flow or LinkTarget `spec` has an interceptor that runs on Wasmer.
pub fn needs_wasmer(spec: &Value) -> bool {
    let interceptors = spec.get("interceptors").and_then(Value::as_array);
    interceptors.into_iter().flatten().any(|i| {
        i.get("type").and_then(Value::as_str) == Some("wasmer-app")
            || i.pointer("/config/runtime").and_then(Value::as_str) == Some("wasmer")
    })
}

fn missing(kind: &str, selection: &Selection, name: &str, what: &str) -> String {
    format!(
        "fiso: {kind} {}/{name} does not exist; {what} it references are not mounted until the pod is recreated",
        selection.namespace
    )
}

/// Collects what the selected resources reference, given each one's `spec` (`None`: the
/// resource does not exist). A selected app needs Wasmer even before it exists.
pub fn collect<'a>(
    selection: &Selection,
    flows: impl IntoIterator<Item = &'a Value>,
    links: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
    apps: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
) -> References {
    let mut out = References {
        wasmer: !selection.apps.is_empty(),
        ..References::default()
    };
    out.wasmer |= flows.into_iter().any(needs_wasmer);
    for (name, spec) in links {
        match spec {
            Some(spec) => {
                out.secrets.extend(secret_of(spec));
                out.wasmer |= needs_wasmer(spec);
            }
            None => out
                .warnings
                .push(missing("LinkTarget", selection, name, "Secrets")),
        }
    }
    for (name, spec) in apps {
        match spec {
            Some(spec) => {
                if let Some(module) = module_of(spec) {
                    out.modules.insert(name.to_owned(), module);
                }
            }
            None => out
                .warnings
                .push(missing("WasmApp", selection, name, "module ConfigMaps")),
        }
    }
    out
}

/// Reads the flows, LinkTargets and WasmApps `selection` names and returns what they reference. A
/// missing resource is a warning (it may be created later); any other API failure is an error,
/// so the admission is refused and retried rather than the pod starting without its
/// credentials or modules.
pub async fn resolve(client: &Client, selection: &Selection) -> Result<References, LookupError> {
    let reads = async {
        let flows = specs::<FlowDefinition>(client, selection, &selection.flows).await?;
        let links = specs::<LinkTarget>(client, selection, &selection.links).await?;
        let apps = specs::<WasmApp>(client, selection, &selection.apps).await?;
        Ok::<_, LookupError>((flows, links, apps))
    };
    let (flows, links, apps) = tokio::time::timeout(LOOKUP_TIMEOUT, reads)
        .await
        .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))??;
    fn found<'a>(
        specs: &'a HashMap<String, Option<Value>>,
        names: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a str, Option<&'a Value>)> {
        names
            .iter()
            .map(|name| (name.as_str(), specs.get(name).and_then(Option::as_ref)))
    }
    Ok(collect(
        selection,
        flows.values().flatten(),
        found(&links, &selection.links),
        found(&apps, &selection.apps),
    ))
}

/// The `spec` of each of `names` (of kind `K` in the selection's namespace); `None` when absent.
async fn specs<K>(
    client: &Client,
    selection: &Selection,
    names: &BTreeSet<String>,
) -> Result<HashMap<String, Option<Value>>, LookupError>
where
    K: kube::Resource<DynamicType = ()>,
{
    let mut specs = HashMap::new();
    if names.is_empty() {
        return Ok(specs);
    }
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &selection.namespace, &resource);
    for name in names {
        let found = api.get_opt(name).await.map_err(|source| LookupError::Api {
            kind: K::kind(&()).into_owned(),
            namespace: selection.namespace.clone(),
            name: name.clone(),
            source: Box::new(source),
        })?;
        specs.insert(name.clone(), found.map(|o| o.data["spec"].clone()));
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_come_from_secret_refs_and_missing_targets_warn() {
        let selection = Selection {
            namespace: "shop".into(),
            flows: Default::default(),
            links: ["crm".into(), "erp".into(), "ghost".into(), "open".into()].into(),
            apps: Default::default(),
        };
        let crm = json!({"host": "crm", "auth": {"type": "bearer", "secretRef": {"name": "crm-token", "key": "token"}}});
        let erp =
            json!({"host": "erp", "auth": {"type": "apikey", "secretRef": {"filePath": "/x"}}});
        let open = json!({"host": "open"});
        let out = collect(
            &selection,
            [],
            [
                ("crm", Some(&crm)),
                ("erp", Some(&erp)),
                ("ghost", None),
                ("open", Some(&open)),
            ],
            [],
        );
        assert_eq!(out.secrets, ["crm-token".to_owned()].into());
        assert_eq!(out.warnings.len(), 1);
        assert!(!out.wasmer, "no app, no Wasmer interceptor");
        assert!(
            out.warnings[0].contains("shop/ghost"),
            "{}",
            out.warnings[0]
        );
    }

    #[test]
    fn modules_come_from_module_config_maps_and_missing_apps_warn() {
        let selection = Selection {
            namespace: "shop".into(),
            apps: ["enrich".into(), "ghost".into(), "local".into()].into(),
            ..Default::default()
        };
        let enrich = json!({"moduleConfigMap": {"name": "enrich-wasm", "key": "app.wasm"}});
        let local = json!({"module": "/opt/apps/local.wasm"});
        let out = collect(
            &selection,
            [],
            [],
            [
                ("enrich", Some(&enrich)),
                ("ghost", None),
                ("local", Some(&local)),
            ],
        );
        assert_eq!(
            out.modules,
            [(
                "enrich".to_owned(),
                ConfigMapKey {
                    name: "enrich-wasm".into(),
                    key: "app.wasm".into()
                }
            )]
            .into()
        );
        assert_eq!(out.warnings.len(), 1);
        assert!(out.wasmer, "a selected app runs on Wasmer");
        assert!(
            out.warnings[0].contains("WasmApp shop/ghost"),
            "{}",
            out.warnings[0]
        );
    }

    #[test]
    fn wasmer_interceptors_of_flows_and_targets_need_the_wasmer_image() {
        let selection = Selection {
            namespace: "shop".into(),
            links: ["crm".into()].into(),
            ..Default::default()
        };
        let wasmtime = json!({"interceptors": [{"type": "wasm", "config": {"module": "/m.wasm"}}]});
        let wasmer = json!({"interceptors": [
            {"type": "wasm", "config": {"module": "/a.wasm"}},
            {"type": "wasm", "config": {"module": "/b.wasm", "runtime": "wasmer"}}
        ]});
        let app = json!({"interceptors": [{"type": "wasmer-app", "config": {"app": "enrich"}}]});
        assert!(!needs_wasmer(&wasmtime));
        assert!(!needs_wasmer(&json!({"source": {"type": "http"}})));
        assert!(needs_wasmer(&wasmer));
        assert!(needs_wasmer(&app));
        let plain = collect(&selection, [&wasmtime], [("crm", Some(&wasmtime))], []);
        assert!(!plain.wasmer);
        assert!(collect(&selection, [&app], [("crm", Some(&wasmtime))], []).wasmer);
        assert!(collect(&selection, [], [("crm", Some(&wasmer))], []).wasmer);
    }
}
