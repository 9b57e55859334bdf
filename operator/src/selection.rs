//! What a pod asks the data plane to run, and every name derived from it. The webhook (which
//! mounts the ConfigMap) and the controllers (which render it) both use these functions, so they
//! always agree on names, keys and paths.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// `"true"` opts a pod into sidecar injection.
pub const INJECT_ANNOTATION: &str = "fiso.io/inject";
/// Comma-separated FlowDefinition names (same namespace).
pub const FLOWS_ANNOTATION: &str = "fiso.io/flows";
/// Comma-separated LinkTarget names (same namespace).
pub const LINKS_ANNOTATION: &str = "fiso.io/links";
/// Comma-separated WasmApp names (same namespace).
pub const APPS_ANNOTATION: &str = "fiso.io/apps";
/// Set to `injected` by the webhook; a second admission is a no-op.
pub const STATUS_ANNOTATION: &str = "fiso.io/status";
pub const STATUS_INJECTED: &str = "injected";
/// Label the webhook puts on injected pods (value: [`Selection::id`]) so the operator can watch
/// exactly those pods with a label selector.
pub const SELECTION_LABEL: &str = "fiso.io/selection";
/// Label on every ConfigMap the operator renders.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "fiso-operator");

/// `FISO_CONFIG_DIR` of the sidecar: the rendered ConfigMap's flow files are mounted here.
pub const FLOWS_DIR: &str = "/etc/fiso/flows";
/// Where the rendered ConfigMap's link config is mounted (as [`LINK_CONFIG_FILE`]).
pub const LINK_DIR: &str = "/etc/fiso/link";
/// File name of the link config in [`LINK_DIR`].
pub const LINK_CONFIG_FILE: &str = "config.yaml";
/// `FISO_LINK_CONFIG` of the sidecar.
pub const LINK_CONFIG_PATH: &str = "/etc/fiso/link/config.yaml";
/// Kubernetes Secrets referenced by LinkTargets are mounted under `<this>/<secret name>/`.
pub const SECRETS_MOUNT_ROOT: &str = "/etc/fiso/secrets";

/// ConfigMap key of the link config (keys cannot contain `/`; the volumes' `items` map keys to
/// the file names the data plane loads).
pub const LINK_CONFIG_KEY: &str = "link-config.yaml";
/// ConfigMap key of the apps file (only when the pod selects apps).
pub const APPS_CONFIG_KEY: &str = "apps-config.yaml";
/// Where the rendered ConfigMap's apps file is mounted (as [`APPS_CONFIG_FILE`]).
pub const APPS_DIR: &str = "/etc/fiso/apps";
pub const APPS_CONFIG_FILE: &str = "config.yaml";
/// `FISO_APPS_CONFIG` of the sidecar.
pub const APPS_CONFIG_PATH: &str = "/etc/fiso/apps/config.yaml";
/// A WasmApp's `moduleConfigMap` is mounted under `<this>/<app name>/`.
pub const MODULES_MOUNT_ROOT: &str = "/etc/fiso/modules";

/// The flows, link targets and apps one pod runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Selection {
    pub namespace: String,
    pub flows: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub apps: BTreeSet<String>,
}

impl Selection {
    /// The selection of a pod that opted in (`fiso.io/inject: "true"`), else `None`.
    pub fn from_annotations(
        namespace: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Option<Self> {
        if annotations.get(INJECT_ANNOTATION).map(String::as_str) != Some("true") {
            return None;
        }
        let names = |key: &str| -> BTreeSet<String> {
            annotations
                .get(key)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Selection {
            namespace: namespace.to_owned(),
            flows: names(FLOWS_ANNOTATION),
            links: names(LINKS_ANNOTATION),
            apps: names(APPS_ANNOTATION),
        })
    }

    /// Stable id of the selection (namespace-local): the first 10 hex digits of a SHA-256 of the
    /// sorted names. Same selection, same id — across pods, restarts and operator replicas.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"flows=");
        h.update(
            self.flows
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
                .as_bytes(),
        );
        h.update(b";links=");
        h.update(
            self.links
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
                .as_bytes(),
        );
        // Only when there are apps: a selection without apps keeps the id (and ConfigMap) it
        // had before apps existed.
        if !self.apps.is_empty() {
            h.update(b";apps=");
            h.update(
                self.apps
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
                    .as_bytes(),
            );
        }
        let digest = h.finalize();
        digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
    }

    /// Name of the rendered ConfigMap.
    pub fn configmap_name(&self) -> String {
        format!("fiso-{}", self.id())
    }

    pub fn includes_flow(&self, name: &str) -> bool {
        self.flows.contains(name)
    }

    pub fn includes_link(&self, name: &str) -> bool {
        self.links.contains(name)
    }

    pub fn includes_app(&self, name: &str) -> bool {
        self.apps.contains(name)
    }
}

/// ConfigMap key of a flow's file.
pub fn flow_key(flow: &str) -> String {
    format!("flow-{flow}.yaml")
}

/// File name of a flow in [`FLOWS_DIR`].
pub fn flow_file(flow: &str) -> String {
    format!("{flow}.yaml")
}

/// A flow's file as a local project names it (`flows/<name>.yaml`), in diagnostics.
pub fn flow_path(flow: &str) -> String {
    format!("flows/{}", flow_file(flow))
}

/// Where the module of WasmApp `app` (ConfigMap key `key`) appears in the sidecar.
pub fn module_file(app: &str, key: &str) -> String {
    format!("{MODULES_MOUNT_ROOT}/{app}/{key}")
}

/// Where a Secret key referenced by a LinkTarget appears in the sidecar.
pub fn secret_file(secret: &str, key: &str) -> String {
    format!("{SECRETS_MOUNT_ROOT}/{secret}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn opt_in_and_parsing() {
        assert!(Selection::from_annotations("ns", &ann(&[(FLOWS_ANNOTATION, "a")])).is_none());
        assert!(Selection::from_annotations("ns", &ann(&[(INJECT_ANNOTATION, "false")])).is_none());
        let s = Selection::from_annotations(
            "ns",
            &ann(&[
                (INJECT_ANNOTATION, "true"),
                (FLOWS_ANNOTATION, " b, a,,"),
                (LINKS_ANNOTATION, "crm"),
            ]),
        )
        .unwrap();
        assert_eq!(s.flows.iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(s.links.iter().collect::<Vec<_>>(), vec!["crm"]);
    }

    #[test]
    fn names_are_deterministic_and_order_independent() {
        let a = Selection::from_annotations(
            "ns",
            &ann(&[(INJECT_ANNOTATION, "true"), (FLOWS_ANNOTATION, "x,y")]),
        )
        .unwrap();
        let b = Selection::from_annotations(
            "ns",
            &ann(&[(INJECT_ANNOTATION, "true"), (FLOWS_ANNOTATION, "y,x")]),
        )
        .unwrap();
        assert_eq!(a.configmap_name(), b.configmap_name());
        assert_eq!(a.id().len(), 10);
        let c = Selection::from_annotations(
            "ns",
            &ann(&[(INJECT_ANNOTATION, "true"), (LINKS_ANNOTATION, "x,y")]),
        )
        .unwrap();
        assert_ne!(a.id(), c.id(), "flows and links with the same names differ");
        let d = Selection::from_annotations(
            "ns",
            &ann(&[
                (INJECT_ANNOTATION, "true"),
                (FLOWS_ANNOTATION, "x,y"),
                (APPS_ANNOTATION, "enrich"),
            ]),
        )
        .unwrap();
        assert_eq!(d.apps.iter().collect::<Vec<_>>(), vec!["enrich"]);
        assert_ne!(a.id(), d.id(), "apps are part of the selection");
    }

    #[test]
    fn ids_of_selections_without_apps_are_unchanged() {
        // The id a pod selecting flow `orders` and link `crm` had before apps existed: its
        // ConfigMap keeps its name across the upgrade.
        let s = Selection {
            namespace: "ns".into(),
            flows: ["orders".into()].into(),
            links: ["crm".into()].into(),
            apps: Default::default(),
        };
        let mut h = Sha256::new();
        h.update(b"flows=orders;links=crm");
        let digest = h.finalize();
        let old: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        assert_eq!(s.id(), old);
    }
}
