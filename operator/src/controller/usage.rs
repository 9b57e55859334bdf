//! Which selections are in use: the pods the webhook labelled (`fiso.io/selection`), folded
//! from a watch into per-selection pod counts. Pure bookkeeping, driven by the renderer.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::configmap::SourceKind;
use crate::selection::{Selection, SELECTION_LABEL};

/// A pod by namespace and name.
pub type PodKey = (String, String);

/// What a labelled pod's metadata says it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSelection {
    /// Annotations and label agree.
    Selected(Selection),
    /// The pod does not opt in (any more): it uses nothing.
    None,
    /// The annotations were edited after admission: the pod still mounts the ConfigMap of
    /// `label`, which the annotations no longer describe.
    Mismatch {
        label: String,
        annotations: Option<Selection>,
    },
}

/// Reads a pod's selection; the label (set by the webhook at admission) names the ConfigMap
/// the pod actually mounts, so it has the last word.
pub fn pod_selection(meta: &ObjectMeta) -> PodSelection {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let empty = Default::default();
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let selection = Selection::from_annotations(namespace, annotations);
    let label = meta.labels.as_ref().and_then(|l| l.get(SELECTION_LABEL));
    match (selection, label) {
        (Some(s), Some(l)) if s.id() == *l => PodSelection::Selected(s),
        (s, Some(l)) => PodSelection::Mismatch {
            label: l.clone(),
            annotations: s,
        },
        // Not labelled: the webhook did not inject it, so it mounts nothing of ours.
        (_, None) => PodSelection::None,
    }
}

/// Selections in use and by how many pods.
#[derive(Debug, Default)]
pub struct Usage {
    pods: HashMap<PodKey, Selection>,
    counts: HashMap<Selection, usize>,
    /// Pods seen since the watch (re)started listing; replaces `pods` when the list is done.
    relisting: Option<HashMap<PodKey, Selection>>,
    synced: bool,
}

impl Usage {
    /// Records that `pod` uses `selection`. Returns the selection if no other pod used it
    /// before, i.e. its ConfigMap may not exist yet.
    pub fn apply(&mut self, pod: PodKey, selection: Selection) -> Option<Selection> {
        if self.pods.get(&pod) == Some(&selection) {
            return None;
        }
        self.remove(&pod);
        self.pods.insert(pod, selection.clone());
        let count = self.counts.entry(selection.clone()).or_default();
        *count += 1;
        (*count == 1).then_some(selection)
    }

    /// The pod is gone or uses nothing any more.
    pub fn remove(&mut self, pod: &PodKey) {
        let Some(old) = self.pods.remove(pod) else {
            return;
        };
        if let Some(count) = self.counts.get_mut(&old) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&old);
            }
        }
    }

    /// The watch restarted and relists every pod.
    pub fn relist_started(&mut self) {
        self.relisting = Some(HashMap::new());
    }

    /// A pod of the relist.
    pub fn relisted(&mut self, pod: PodKey, selection: Selection) {
        self.relisting
            .get_or_insert_with(HashMap::new)
            .insert(pod, selection);
    }

    /// The relist is complete: pods not in it are gone. Returns every selection in use, all of
    /// which deserve a render (changes may have been missed while the watch was down).
    pub fn relist_done(&mut self) -> Vec<Selection> {
        let pods = self.relisting.take().unwrap_or_default();
        self.counts.clear();
        for s in pods.values() {
            *self.counts.entry(s.clone()).or_default() += 1;
        }
        self.pods = pods;
        self.synced = true;
        self.selections()
    }

    /// Whether the first complete list of pods has been seen (until then, "unused" means
    /// nothing and no ConfigMap may be pruned).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn in_use(&self, selection: &Selection) -> bool {
        self.counts.contains_key(selection)
    }

    /// Every selection in use, in a stable order.
    pub fn selections(&self) -> Vec<Selection> {
        let set: BTreeSet<&Selection> = self.counts.keys().collect();
        set.into_iter().cloned().collect()
    }

    /// The selections in use in `namespace` that name the resource `name` of `kind`.
    pub fn selecting(&self, kind: SourceKind, namespace: &str, name: &str) -> Vec<Selection> {
        let set: BTreeSet<&Selection> = self
            .counts
            .keys()
            .filter(|s| s.namespace == namespace && kind.selected_by(s, name))
            .collect();
        set.into_iter().cloned().collect()
    }

    /// Whether some pod in `namespace` uses the selection with this id (ConfigMap label).
    pub fn uses_id(&self, namespace: &str, id: &str) -> bool {
        self.counts
            .keys()
            .any(|s| s.namespace == namespace && s.id() == id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::selection::{FLOWS_ANNOTATION, INJECT_ANNOTATION, LINKS_ANNOTATION};

    fn sel(ns: &str, flows: &[&str], links: &[&str]) -> Selection {
        Selection {
            namespace: ns.into(),
            flows: flows.iter().map(|s| (*s).to_owned()).collect(),
            links: links.iter().map(|s| (*s).to_owned()).collect(),
            apps: Default::default(),
        }
    }

    fn pod(k: &str) -> PodKey {
        ("apps".into(), k.into())
    }

    fn meta(flows: &str, label: Option<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some("p".into()),
            namespace: Some("apps".into()),
            annotations: Some(BTreeMap::from([
                (INJECT_ANNOTATION.to_owned(), "true".to_owned()),
                (FLOWS_ANNOTATION.to_owned(), flows.to_owned()),
                (LINKS_ANNOTATION.to_owned(), "crm".to_owned()),
            ])),
            labels: label.map(|l| BTreeMap::from([(SELECTION_LABEL.to_owned(), l)])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn pod_selection_trusts_the_label() {
        let s = sel("apps", &["a", "b"], &["crm"]);
        assert_eq!(
            pod_selection(&meta("b,a", Some(s.id()))),
            PodSelection::Selected(s.clone())
        );
        assert_eq!(pod_selection(&meta("a,b", None)), PodSelection::None);
        assert_eq!(
            pod_selection(&meta("a", Some(s.id()))),
            PodSelection::Mismatch {
                label: s.id(),
                annotations: Some(sel("apps", &["a"], &["crm"]))
            }
        );
    }

    #[test]
    fn first_pod_of_a_selection_asks_for_a_render() {
        let mut u = Usage::default();
        let s = sel("apps", &["a"], &[]);
        assert_eq!(u.apply(pod("p1"), s.clone()), Some(s.clone()));
        assert_eq!(u.apply(pod("p2"), s.clone()), None, "already rendered");
        assert_eq!(
            u.apply(pod("p1"), s.clone()),
            None,
            "pod update, same selection"
        );
        u.remove(&pod("p1"));
        assert!(u.in_use(&s));
        u.remove(&pod("p2"));
        assert!(!u.in_use(&s));
        assert_eq!(u.apply(pod("p3"), s.clone()), Some(s));
    }

    #[test]
    fn a_pod_can_move_to_another_selection() {
        let mut u = Usage::default();
        let (a, b) = (sel("apps", &["a"], &[]), sel("apps", &["b"], &[]));
        u.apply(pod("p"), a.clone());
        assert_eq!(u.apply(pod("p"), b.clone()), Some(b.clone()));
        assert!(!u.in_use(&a));
        assert_eq!(u.selections(), vec![b]);
    }

    #[test]
    fn relist_replaces_what_was_known() {
        let mut u = Usage::default();
        let (a, b) = (sel("apps", &["a"], &[]), sel("apps", &["b"], &[]));
        u.apply(pod("gone"), a.clone());
        assert!(!u.is_synced());
        u.relist_started();
        u.relisted(pod("p"), b.clone());
        u.relisted(pod("q"), b.clone());
        assert_eq!(u.relist_done(), vec![b.clone()]);
        assert!(u.is_synced());
        assert!(!u.in_use(&a));
        u.remove(&pod("p"));
        assert!(u.in_use(&b), "q still uses it");
    }

    #[test]
    fn selecting_finds_selections_by_resource() {
        let mut u = Usage::default();
        let ab = sel("apps", &["a", "b"], &["crm"]);
        let b = sel("apps", &["b"], &[]);
        let other = sel("other", &["b"], &[]);
        u.apply(pod("1"), ab.clone());
        u.apply(pod("2"), b.clone());
        u.apply(("other".into(), "3".into()), other.clone());
        assert_eq!(u.selecting(SourceKind::Flow, "apps", "b"), {
            let mut v = vec![ab.clone(), b.clone()];
            v.sort();
            v
        });
        assert_eq!(
            u.selecting(SourceKind::Link, "apps", "crm"),
            vec![ab.clone()]
        );
        assert_eq!(u.selecting(SourceKind::Link, "apps", "b"), vec![]);
        assert!(u.uses_id("apps", &ab.id()));
        assert!(u.uses_id("other", &other.id()));
        // Ids are namespace-local: the same names in another namespace are another ConfigMap.
        assert!(!u.uses_id("other", &ab.id()));
    }
}
