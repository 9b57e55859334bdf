//! What one selection's ConfigMap holds. Pure: custom resources in, ConfigMap out.
//!
//! * `flow-<name>.yaml` ([`flow_key`]) for every selected FlowDefinition that exists and
//!   validates: byte for byte the `fiso/flows/<name>.yaml` a local project would hold, so the
//!   sidecar loads it with the same parser and checks as `fiso flow`.
//! * `link-config.yaml` ([`LINK_CONFIG_KEY`]): the link config built from the selected, valid
//!   LinkTargets by `fiso_config::manifests::import` — always present (`targets: []` when none
//!   are selected), because the injected sidecar is always pointed at it. A
//!   Kubernetes Secret reference (`auth.secretRef {name, key}`) becomes `filePath:
//!   /etc/fiso/secrets/<name>/<key>` — where the webhook mounts that Secret. Secret values are
//!   never read, let alone copied.
//! * `apps-config.yaml` ([`APPS_CONFIG_KEY`]), only when the pod selects apps: an apps file of
//!   the selected, valid WasmApps. A `moduleConfigMap {name, key}` becomes `module:
//!   /etc/fiso/modules/<app>/<key>` — where the webhook mounts that ConfigMap key.
//!
//! One bad resource never fails the whole ConfigMap; each problem is reported in
//! [`Rendered::omitted`]:
//! * a missing resource is left out;
//! * an invalid FlowDefinition is rendered anyway: the sidecar refuses the file with the same
//!   checks, keeps running the flow's last good version (or nothing, in a new pod), and reports
//!   the problem on `/readyz` — where whoever looks at the pod sees it; one whose spec does not
//!   decode ([`crate::undecoded`]) is rendered as written, for the same reason;
//! * an invalid LinkTarget or WasmApp is left out: the link config and the apps file are one
//!   file each, and one bad entry in it would make the sidecar refuse all of them.

use std::collections::{BTreeMap, BTreeSet};

use fiso_config::apps::AppsConfig;
use fiso_config::crd::{FlowDefinition, LinkTarget, WasmApp};
use fiso_config::link::{AuthType, SecretRef};
use fiso_config::manifests::{import, Manifests};
use fiso_config::validate::{check_project, SourceFile};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::error::Error;
use crate::selection::{
    flow_key, flow_path, secret_file, Selection, APPS_ANNOTATION, APPS_CONFIG_KEY,
    APPS_CONFIG_PATH, FLOWS_ANNOTATION, INJECT_ANNOTATION, LINKS_ANNOTATION, LINK_CONFIG_KEY,
    LINK_CONFIG_PATH, MANAGED_BY_LABEL, SELECTION_LABEL,
};
use crate::undecoded::{Kind, Undecoded};
use crate::validation;

/// ConfigMap annotation listing the resources (and generations) the data was rendered from,
/// e.g. `FlowDefinition/orders@3,LinkTarget/crm@1`. The controllers read it to report whether
/// a resource's current generation has reached every ConfigMap that selects it.
pub const RENDERED_FROM_ANNOTATION: &str = "fiso.io/rendered-from";

/// The kinds a selection names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Flow,
    Link,
    App,
}

impl SourceKind {
    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            SourceKind::Flow => "FlowDefinition",
            SourceKind::Link => "LinkTarget",
            SourceKind::App => "WasmApp",
        }
    }

    fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "FlowDefinition" => Some(SourceKind::Flow),
            "LinkTarget" => Some(SourceKind::Link),
            "WasmApp" => Some(SourceKind::App),
            _ => None,
        }
    }

    /// Whether `selection` names the resource `name` of this kind.
    pub fn selected_by(self, selection: &Selection, name: &str) -> bool {
        match self {
            SourceKind::Flow => selection.includes_flow(name),
            SourceKind::Link => selection.includes_link(name),
            SourceKind::App => selection.includes_app(name),
        }
    }
}

/// A resource whose spec is in a ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub kind: SourceKind,
    pub name: String,
    pub generation: i64,
}

/// Why a selected resource is not in the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Omission {
    /// No such resource in the pod's namespace.
    Missing,
    /// It fails validation; the text lists every error. A FlowDefinition is rendered anyway
    /// (the sidecar refuses it and reports why), a LinkTarget is left out.
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omitted {
    pub kind: SourceKind,
    pub name: String,
    pub why: Omission,
}

impl std::fmt::Display for Omitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.why {
            Omission::Missing => write!(f, "{} `{}` does not exist", self.kind.kind(), self.name),
            Omission::Invalid(why) => {
                write!(f, "{} `{}` is invalid: {why}", self.kind.kind(), self.name)
            }
        }
    }
}

/// The rendered content of one selection's ConfigMap.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    /// ConfigMap data: [`flow_key`] → flow file, [`LINK_CONFIG_KEY`] → link config,
    /// [`APPS_CONFIG_KEY`] → apps file.
    pub data: BTreeMap<String, String>,
    /// One per resource included (`controller: false`), so the ConfigMap is garbage-collected
    /// once every resource it came from is deleted.
    pub owner_references: Vec<OwnerReference>,
    /// The resources included, with the generation rendered.
    pub sources: Vec<Source>,
    /// Selected resources that are missing (left out) or invalid (see the module's header), and
    /// why.
    pub omitted: Vec<Omitted>,
    /// Problems between the included files that `fiso validate` would report for this set as a
    /// project (two flows with one name, two flows on one HTTP path, ...). Rendered anyway: the
    /// data plane reports them too, and leaving resources out would hide the cause.
    pub conflicts: Vec<String>,
}

/// Renders `selection` from the resources of its namespace (others are ignored).
pub fn render<'a>(
    selection: &Selection,
    flows: impl IntoIterator<Item = &'a Undecoded<FlowDefinition>>,
    links: impl IntoIterator<Item = &'a Undecoded<LinkTarget>>,
    apps: impl IntoIterator<Item = &'a Undecoded<WasmApp>>,
) -> Result<Rendered, Error> {
    let ns = selection.namespace.as_str();
    let flows = in_namespace(ns, flows);
    let links = in_namespace(ns, links);
    let apps = in_namespace(ns, apps);

    let mut out = Rendered::default();
    let mut manifests = Manifests::default();
    let mut invalid_flows = BTreeSet::new();
    let mut undecodable_flows = Vec::new();
    for name in &selection.flows {
        let Some(raw) = flows.get(name).copied() else {
            out.omitted.push(Omitted::missing(SourceKind::Flow, name));
            continue;
        };
        out.include(SourceKind::Flow, raw);
        match checked(SourceKind::Flow, name, raw) {
            Ok(fd) => manifests.flows.push(fd),
            Err((decoded, o)) => {
                match decoded {
                    Some(fd) => manifests.flows.push(fd),
                    None => undecodable_flows.push(raw),
                }
                invalid_flows.insert(name.clone());
                out.omitted.push(o);
            }
        }
    }
    for name in &selection.links {
        match pick(SourceKind::Link, name, links.get(name).copied()) {
            Ok((raw, lt)) => {
                out.include(SourceKind::Link, raw);
                manifests.targets.push(lt);
            }
            Err(o) => out.omitted.push(o),
        }
    }

    let (flow_configs, mut link) = import(&manifests);
    let mut flow_files = Vec::new();
    for (fd, config) in manifests.flows.iter().zip(&flow_configs) {
        let name = fd.name_any();
        let text = yaml(&name, config)?;
        if !invalid_flows.contains(&name) {
            flow_files.push(SourceFile {
                path: flow_path(&name),
                text: text.clone(),
            });
        }
        out.data.insert(flow_key(&name), text);
    }
    for raw in undecodable_flows {
        let name = raw.name_any();
        let text = yaml_text(&name, flow_as_written(raw))?;
        out.data.insert(flow_key(&name), text);
    }
    keep_conflicting_clusters(&mut link, &manifests.targets);
    for t in &mut link.targets {
        if let Some(auth) = t.auth.as_mut() {
            rewrite_secret_ref(auth.secret_ref.as_mut());
        }
    }
    let text = yaml(LINK_CONFIG_KEY, &link)?;
    let link_file = SourceFile {
        path: LINK_CONFIG_PATH.to_owned(),
        text: text.clone(),
    };
    out.data.insert(LINK_CONFIG_KEY.to_owned(), text);

    let mut apps_file = AppsConfig::default();
    for name in &selection.apps {
        match pick(SourceKind::App, name, apps.get(name).copied()) {
            Ok((raw, app)) => {
                out.include(SourceKind::App, raw);
                apps_file.apps.push(validation::app_config(&app));
            }
            Err(o) => out.omitted.push(o),
        }
    }
    if !selection.apps.is_empty() {
        out.data.insert(
            APPS_CONFIG_KEY.to_owned(),
            yaml(APPS_CONFIG_PATH, &apps_file)?,
        );
    }

    // Every valid file here validated on its own; what is left are problems between them (an
    // invalid flow's own errors are already in `omitted`).
    let (_, diags) = check_project(&flow_files, Some(&link_file));
    out.conflicts = diags.errors().map(ToString::to_string).collect();
    Ok(out)
}

fn in_namespace<'a, K: Kind>(
    ns: &str,
    resources: impl IntoIterator<Item = &'a Undecoded<K>>,
) -> BTreeMap<String, &'a Undecoded<K>> {
    resources
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns))
        .map(|r| (r.name_any(), r))
        .collect()
}

/// The resource, if it exists, decodes and validates.
fn pick<'a, K: Kind>(
    kind: SourceKind,
    name: &str,
    found: Option<&'a Undecoded<K>>,
) -> Result<(&'a Undecoded<K>, K), Omitted> {
    let raw = found.ok_or_else(|| Omitted::missing(kind, name))?;
    checked(kind, name, raw)
        .map(|k| (raw, k))
        .map_err(|(_, o)| o)
}

/// The resource, if it decodes and validates; else why not, and the resource when only
/// validation failed.
fn checked<K: Kind>(
    kind: SourceKind,
    name: &str,
    raw: &Undecoded<K>,
) -> Result<K, (Option<K>, Omitted)> {
    let (decoded, findings) = raw.checked();
    let errors = validation::error_lines(&findings);
    match decoded {
        Some(k) if errors.is_empty() => Ok(k),
        decoded => Err((
            decoded,
            Omitted {
                kind,
                name: name.to_owned(),
                why: Omission::Invalid(errors.join("; ")),
            },
        )),
    }
}

/// The flow file of a FlowDefinition whose spec does not decode: the spec as written, named as
/// [`validation::flow_config`] names a flow.
fn flow_as_written(fd: &Undecoded<FlowDefinition>) -> serde_json::Value {
    let mut spec = fd.spec.clone();
    if let Some(fields) = spec.as_object_mut() {
        if fields.get("name").is_none_or(serde_json::Value::is_null) {
            fields.insert("name".to_owned(), fd.name_any().into());
        }
    }
    spec
}

impl Omitted {
    fn missing(kind: SourceKind, name: &str) -> Self {
        Omitted {
            kind,
            name: name.to_owned(),
            why: Omission::Missing,
        }
    }
}

impl Rendered {
    fn include<K: kube::Resource<DynamicType = ()>>(&mut self, kind: SourceKind, k: &K) {
        let meta = k.meta();
        self.sources.push(Source {
            kind,
            name: k.name_any(),
            generation: meta.generation.unwrap_or_default(),
        });
        // A resource from the API server always has a uid; without one it cannot own anything.
        if let Some(uid) = &meta.uid {
            self.owner_references.push(OwnerReference {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                name: k.name_any(),
                uid: uid.clone(),
                // Several resources own the ConfigMap; none of them controls it.
                controller: Some(false),
                // Blocking needs delete permission on the owner (OwnerReferencesPermissionEnforcement)
                // and would hold a foreground deletion of the flow on this ConfigMap: not worth it.
                block_owner_deletion: Some(false),
            });
        }
    }
}

/// `import` hoists every inline `kafka.clusterConfig` into the link config's `kafka.clusters`,
/// first one per name winning. Two LinkTargets may use the same cluster name for different
/// clusters: keep the definition inline on the ones that differ (the link config file allows
/// an inline override), so no target silently publishes to another target's brokers.
fn keep_conflicting_clusters(link: &mut fiso_config::LinkConfig, targets: &[LinkTarget]) {
    let Some(clusters) = link.kafka.as_ref().map(|k| k.clusters.clone()) else {
        return;
    };
    for (t, lt) in link.targets.iter_mut().zip(targets) {
        let (Some(k), Some(original)) = (
            t.kafka.as_mut(),
            lt.spec
                .kafka
                .as_ref()
                .and_then(|k| k.cluster_config.as_ref()),
        ) else {
            continue;
        };
        if clusters.get(&k.cluster) != Some(original) {
            k.cluster_config = Some(original.clone());
        }
    }
}

/// A Kubernetes Secret reference becomes the file the webhook mounts it as.
fn rewrite_secret_ref(secret: Option<&mut SecretRef>) {
    let Some(s) = secret else { return };
    if let (Some(name), Some(key)) = (s.name.take(), s.key.take()) {
        s.file_path = Some(secret_file(&name, &key));
    }
}

fn yaml<T: serde::Serialize>(what: &str, value: &T) -> Result<String, Error> {
    serde_yaml_ng::to_string(value).map_err(|e| Error::Render {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

fn yaml_text(what: &str, value: serde_json::Value) -> Result<String, Error> {
    fiso_config::crd::yaml_text(value).map_err(|e| Error::Render {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// The Kubernetes Secrets (name, key) the sidecar needs mounted for these LinkTargets: every
/// `auth.secretRef {name, key}` of a target that injects credentials.
pub fn secrets_for<'a>(
    links: impl IntoIterator<Item = &'a LinkTarget>,
) -> BTreeSet<(String, String)> {
    links
        .into_iter()
        .filter_map(|lt| lt.spec.auth.as_ref())
        .filter(|auth| auth.type_ != AuthType::None)
        .filter_map(|auth| auth.secret_ref.as_ref())
        .filter_map(|s| Some((s.name.clone()?, s.key.clone()?)))
        .collect()
}

/// The ConfigMap to server-side apply for `selection`. Its annotations name the selection
/// (`fiso.io/flows`, `fiso.io/links`, `fiso.io/apps`) and what was rendered ([`RENDERED_FROM_ANNOTATION`]), so
/// it describes itself to `kubectl` users and to the controllers.
pub fn configmap(selection: &Selection, rendered: &Rendered) -> ConfigMap {
    let join = |names: &BTreeSet<String>| names.iter().cloned().collect::<Vec<_>>().join(",");
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.0.to_owned(), MANAGED_BY_LABEL.1.to_owned()),
        (SELECTION_LABEL.to_owned(), selection.id()),
    ]);
    let mut annotations = BTreeMap::from([
        (FLOWS_ANNOTATION.to_owned(), join(&selection.flows)),
        (LINKS_ANNOTATION.to_owned(), join(&selection.links)),
        (
            RENDERED_FROM_ANNOTATION.to_owned(),
            format_sources(&rendered.sources),
        ),
    ]);
    if !selection.apps.is_empty() {
        annotations.insert(APPS_ANNOTATION.to_owned(), join(&selection.apps));
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(selection.configmap_name()),
            namespace: Some(selection.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(rendered.owner_references.clone()),
            ..ObjectMeta::default()
        },
        data: Some(rendered.data.clone()),
        ..ConfigMap::default()
    }
}

/// The selection a rendered ConfigMap was made for (from its annotations).
pub fn configmap_selection(cm: &ConfigMap) -> Option<Selection> {
    // The ConfigMap carries the pod's selection annotations; reuse the pod-side parser.
    let mut annotations = cm.annotations().clone();
    annotations.insert(INJECT_ANNOTATION.to_owned(), "true".to_owned());
    Selection::from_annotations(&cm.namespace()?, &annotations)
}

/// What a rendered ConfigMap was rendered from (empty when the annotation is absent).
pub fn configmap_sources(cm: &ConfigMap) -> Vec<Source> {
    cm.annotations()
        .get(RENDERED_FROM_ANNOTATION)
        .map(|v| parse_sources(v))
        .unwrap_or_default()
}

/// `FlowDefinition/orders@3,LinkTarget/crm@1`.
pub fn format_sources(sources: &[Source]) -> String {
    sources
        .iter()
        .map(|s| format!("{}/{}@{}", s.kind.kind(), s.name, s.generation))
        .collect::<Vec<_>>()
        .join(",")
}

/// Inverse of [`format_sources`]; entries it cannot read are skipped.
pub fn parse_sources(text: &str) -> Vec<Source> {
    text.split(',')
        .filter_map(|entry| {
            let (kind, rest) = entry.trim().split_once('/')?;
            let (name, generation) = rest.rsplit_once('@')?;
            Some(Source {
                kind: SourceKind::from_kind(kind)?,
                name: name.to_owned(),
                generation: generation.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
