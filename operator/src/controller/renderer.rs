//! The renderer: the loop that keeps one ConfigMap per selection in use equal to what
//! [`configmap`](crate::configmap) makes of the current FlowDefinitions, LinkTargets and
//! WasmApps. This
//! is the I/O half (watches, work queue, server-side apply, deletes, events, retries); what a
//! ConfigMap holds is decided without I/O in `configmap`.
//!
//! Inputs are four watches — pods labelled `fiso.io/selection` (metadata only), FlowDefinitions,
//! LinkTargets and WasmApps (reflected into stores with their specs undecoded: one spec the
//! typed kind cannot hold must not stop the watch of its kind, see [`crate::undecoded`]) — and a
//! periodic resync. Work items are selections,
//! deduplicated and debounced by kube-runtime's scheduler and rendered one at a time:
//!
//! * a pod whose selection no other pod uses yet → render that selection;
//! * a FlowDefinition / LinkTarget / WasmApp created, changed or deleted → render every selection in use
//!   that names it (a deleted resource drops out of the files; garbage collection removes the
//!   ConfigMap itself only when all of its owners are gone);
//! * resync → re-apply ConfigMaps that were edited or deleted behind our back, and delete
//!   those no pod has used for `prune_after`.
//!
//! Nothing is rendered before every store has their first complete list: rendering from a
//! half-filled store would drop flows from running pods after every operator restart.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use fiso_config::crd::{FlowDefinition, LinkTarget, WasmApp};
use fiso_runtime::backoff::Restart;
use futures::channel::mpsc;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::scheduler::{scheduler, ScheduleRequest};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::usage::{pod_selection, PodKey, PodSelection, Usage};
use super::{managed_selector, Context, FIELD_MANAGER};
use crate::configmap::{configmap, configmap_selection, render, Rendered, SourceKind};
use crate::error::Result;
use crate::metrics::Kind;
use crate::selection::{Selection, SELECTION_LABEL};
use crate::undecoded::Undecoded;

/// One input of the loop.
enum Input {
    Pod(Event<PartialObjectMeta<Pod>>),
    Flow(Event<Undecoded<FlowDefinition>>),
    Link(Event<Undecoded<LinkTarget>>),
    App(Event<Undecoded<WasmApp>>),
    /// A watch failed; it retries with backoff by itself.
    WatchFailed(&'static str, watcher::Error),
}

/// What was last applied for a selection.
struct Applied {
    /// Hash of the ConfigMap sent; an identical render needs no request.
    fingerprint: u64,
    /// The ConfigMap's resourceVersion after our apply: anything else means someone edited or
    /// deleted it, and the resync re-applies.
    resource_version: Option<String>,
    /// Omissions and conflicts last reported (events are published when these change).
    problems: Vec<String>,
}

/// Runs the loop until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let (flows, flow_writer) = reflector::store::<Undecoded<FlowDefinition>>();
    let (links, link_writer) = reflector::store::<Undecoded<LinkTarget>>();
    let (apps, app_writer) = reflector::store::<Undecoded<WasmApp>>();
    let inputs: Vec<BoxStream<'static, Input>> = vec![
        watcher(
            Api::<PartialObjectMeta<Pod>>::all(client.clone()),
            watcher::Config::default().labels(SELECTION_LABEL),
            "Pod",
            Input::Pod,
        ),
        reflected(
            flow_writer,
            Api::all(client.clone()),
            "FlowDefinition",
            Input::Flow,
        ),
        reflected(
            link_writer,
            Api::all(client.clone()),
            "LinkTarget",
            Input::Link,
        ),
        reflected(app_writer, Api::all(client.clone()), "WasmApp", Input::App),
    ];
    let mut inputs = stream::select_all(inputs);

    let (queue_tx, queue_rx) = mpsc::unbounded();
    let mut queue = scheduler(queue_rx);
    let mut resync =
        tokio::time::interval_at(Instant::now() + ctx.settings.resync, ctx.settings.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut r = Renderer::new(ctx, flows, links, apps, queue_tx);
    loop {
        let ready = r.flows_synced && r.links_synced && r.apps_synced;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(input) = inputs.next() => r.handle(input).await,
            Some(selection) = queue.next(), if ready => r.reconcile(selection).await,
            _ = resync.tick(), if ready => r.resync().await,
        }
    }
    tracing::info!("rendering loop stopped");
}

fn watcher<K, F>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    wrap: F,
) -> BoxStream<'static, Input>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(Event<K>) -> Input + Send + 'static,
{
    kube::runtime::watcher(api, config)
        .default_backoff()
        .map(move |r| match r {
            Ok(e) => wrap(e),
            Err(e) => Input::WatchFailed(kind, e),
        })
        .boxed()
}

fn reflected<K, F>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    kind: &'static str,
    wrap: F,
) -> BoxStream<'static, Input>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Event<K>) -> Input + Send + 'static,
{
    reflector::reflector(
        writer,
        kube::runtime::watcher(api, watcher::Config::default()),
    )
    .default_backoff()
    .map(move |r| match r {
        Ok(e) => wrap(e),
        Err(e) => Input::WatchFailed(kind, e),
    })
    .boxed()
}

struct Renderer {
    ctx: Arc<Context>,
    flows: Store<Undecoded<FlowDefinition>>,
    links: Store<Undecoded<LinkTarget>>,
    apps: Store<Undecoded<WasmApp>>,
    queue: mpsc::UnboundedSender<ScheduleRequest<Selection>>,
    usage: Usage,
    applied: HashMap<Selection, Applied>,
    /// Retry backoff per selection that is failing.
    failures: HashMap<Selection, Restart>,
    /// Rendered ConfigMaps (namespace, name) no pod uses, and since when.
    unused_since: HashMap<(String, String), Instant>,
    /// Pods already told that their annotations no longer match their ConfigMap.
    warned_pods: HashSet<String>,
    flows_synced: bool,
    links_synced: bool,
    apps_synced: bool,
}

impl Renderer {
    fn new(
        ctx: Arc<Context>,
        flows: Store<Undecoded<FlowDefinition>>,
        links: Store<Undecoded<LinkTarget>>,
        apps: Store<Undecoded<WasmApp>>,
        queue: mpsc::UnboundedSender<ScheduleRequest<Selection>>,
    ) -> Self {
        Renderer {
            ctx,
            flows,
            links,
            apps,
            queue,
            usage: Usage::default(),
            applied: HashMap::new(),
            failures: HashMap::new(),
            unused_since: HashMap::new(),
            warned_pods: HashSet::new(),
            flows_synced: false,
            links_synced: false,
            apps_synced: false,
        }
    }

    fn schedule(&self, selection: Selection, delay: Duration) {
        // The receiver lives as long as the loop; a send can only fail once it has stopped.
        let _ = self.queue.unbounded_send(ScheduleRequest {
            message: selection,
            run_at: Instant::now() + delay,
        });
    }

    fn schedule_all(&self) {
        for s in self.usage.selections() {
            self.schedule(s, self.ctx.settings.debounce);
        }
    }

    fn schedule_selecting(&self, kind: SourceKind, k: &impl Resource) {
        let (Some(ns), Some(name)) = (k.meta().namespace.as_deref(), k.meta().name.as_deref())
        else {
            return;
        };
        for s in self.usage.selecting(kind, ns, name) {
            self.schedule(s, self.ctx.settings.debounce);
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Pod(event) => self.pod_event(event).await,
            Input::Flow(event) => match event {
                Event::Apply(fd) | Event::Delete(fd) => {
                    self.schedule_selecting(SourceKind::Flow, &fd)
                }
                Event::InitDone => {
                    self.flows_synced = true;
                    self.schedule_all();
                }
                Event::Init | Event::InitApply(_) => {}
            },
            Input::Link(event) => match event {
                Event::Apply(lt) | Event::Delete(lt) => {
                    self.schedule_selecting(SourceKind::Link, &lt)
                }
                Event::InitDone => {
                    self.links_synced = true;
                    self.schedule_all();
                }
                Event::Init | Event::InitApply(_) => {}
            },
            Input::App(event) => match event {
                Event::Apply(app) | Event::Delete(app) => {
                    self.schedule_selecting(SourceKind::App, &app)
                }
                Event::InitDone => {
                    self.apps_synced = true;
                    self.schedule_all();
                }
                Event::Init | Event::InitApply(_) => {}
            },
            Input::WatchFailed(kind, error) => {
                tracing::warn!(kind, error = %error, "watch failed; retrying");
            }
        }
    }

    async fn pod_event(&mut self, event: Event<PartialObjectMeta<Pod>>) {
        match event {
            Event::Init => self.usage.relist_started(),
            Event::InitApply(pod) => {
                if let Some(s) = self.selection_of(&pod).await {
                    self.usage.relisted(key(&pod), s);
                }
            }
            Event::InitDone => {
                for s in self.usage.relist_done() {
                    self.schedule(s, self.ctx.settings.debounce);
                }
            }
            Event::Apply(pod) => match self.selection_of(&pod).await {
                Some(s) => {
                    if let Some(new) = self.usage.apply(key(&pod), s) {
                        tracing::debug!(namespace = %new.namespace, configmap = %new.configmap_name(), "selection in use");
                        self.schedule(new, self.ctx.settings.debounce);
                    }
                }
                None => self.usage.remove(&key(&pod)),
            },
            Event::Delete(pod) => {
                self.usage.remove(&key(&pod));
                self.warned_pods.remove(&pod.uid().unwrap_or_default());
            }
        }
    }

    /// The selection a pod runs. When its annotations were edited after admission, the
    /// ConfigMap its label names (the one it mounts) still says what it runs.
    async fn selection_of(&mut self, pod: &PartialObjectMeta<Pod>) -> Option<Selection> {
        match pod_selection(&pod.metadata) {
            PodSelection::Selected(s) => Some(s),
            PodSelection::None => None,
            PodSelection::Mismatch { label, .. } => {
                let ns = pod.namespace().unwrap_or_default();
                let name = format!("fiso-{label}");
                let found = Api::<ConfigMap>::namespaced(self.ctx.client.clone(), &ns)
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|cm| configmap_selection(&cm))
                    .filter(|s| s.id() == label);
                let uid = pod.uid().unwrap_or_default();
                if self.warned_pods.insert(uid) {
                    let note = format!(
                        "the fiso.io/flows / fiso.io/links annotations changed after the sidecar was injected; the pod keeps running ConfigMap {name}; recreate the pod to run the new selection"
                    );
                    tracing::warn!(namespace = %ns, pod = pod.name_any(), configmap = %name, "pod selection annotations changed after injection");
                    self.publish(
                        &pod.object_ref(&()),
                        EventType::Warning,
                        "SelectionChanged",
                        note,
                    )
                    .await;
                }
                found
            }
        }
    }

    async fn reconcile(&mut self, selection: Selection) {
        if !self.usage.in_use(&selection) {
            // Its pods went away before it was rendered; pruning takes care of the rest.
            return;
        }
        let timer = self.ctx.settings.metrics.start(Kind::ConfigMap);
        match timer.finish(self.render_and_apply(&selection).await) {
            Ok(()) => {
                self.failures.remove(&selection);
            }
            Err(e) => {
                let settings = &self.ctx.settings;
                let delay = self
                    .failures
                    .entry(selection.clone())
                    .or_insert_with(|| Restart::new(settings.retry, settings.max_retry))
                    .next_delay();
                tracing::warn!(
                    namespace = %selection.namespace,
                    configmap = %selection.configmap_name(),
                    code = %e.code(),
                    error = %e,
                    retry_in = ?delay,
                    "rendering failed"
                );
                self.schedule(selection, delay);
            }
        }
    }

    async fn render_and_apply(&mut self, selection: &Selection) -> Result<()> {
        let ns = &selection.namespace;
        let flows: Vec<_> = selection
            .flows
            .iter()
            .filter_map(|n| self.flows.get(&ObjectRef::new(n).within(ns)))
            .collect();
        let links: Vec<_> = selection
            .links
            .iter()
            .filter_map(|n| self.links.get(&ObjectRef::new(n).within(ns)))
            .collect();
        let apps: Vec<_> = selection
            .apps
            .iter()
            .filter_map(|n| self.apps.get(&ObjectRef::new(n).within(ns)))
            .collect();
        let rendered = render(
            selection,
            flows.iter().map(AsRef::as_ref),
            links.iter().map(AsRef::as_ref),
            apps.iter().map(AsRef::as_ref),
        )?;
        if rendered.sources.is_empty() {
            return self.remove(selection, &rendered).await;
        }
        let cm = configmap(selection, &rendered);
        let fingerprint = fingerprint(&cm);
        if self
            .applied
            .get(selection)
            .is_some_and(|a| a.fingerprint == fingerprint)
        {
            return Ok(());
        }

        let name = selection.configmap_name();
        let applied = Api::<ConfigMap>::namespaced(self.ctx.client.clone(), ns)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await?;
        tracing::info!(
            namespace = %ns,
            configmap = %name,
            rendered_from = %crate::configmap::format_sources(&rendered.sources),
            omitted = rendered.omitted.len(),
            "ConfigMap rendered"
        );

        let problems: Vec<String> = rendered
            .omitted
            .iter()
            .map(ToString::to_string)
            .chain(rendered.conflicts.iter().cloned())
            .collect();
        let reported = self.applied.get(selection).map(|a| &a.problems);
        if !problems.is_empty() && reported != Some(&problems) {
            let note = format!("rendered with problems: {}", problems.join("; "));
            self.publish(
                &applied.object_ref(&()),
                EventType::Warning,
                "RenderIncomplete",
                note,
            )
            .await;
        }
        self.applied.insert(
            selection.clone(),
            Applied {
                fingerprint,
                resource_version: applied.resource_version(),
                problems,
            },
        );
        Ok(())
    }

    /// Nothing the selection names exists (or validates): a ConfigMap only exists while one of
    /// the resources it is rendered from does, which is also what garbage collection does once
    /// they are all deleted. Pods mount it `optional`, so kubelet empties their volume.
    async fn remove(&mut self, selection: &Selection, rendered: &Rendered) -> Result<()> {
        if self
            .applied
            .get(selection)
            .is_some_and(|a| a.fingerprint == ABSENT)
        {
            return Ok(());
        }
        let name = selection.configmap_name();
        match Api::<ConfigMap>::namespaced(self.ctx.client.clone(), &selection.namespace)
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %selection.namespace, configmap = %name, "ConfigMap deleted: nothing it selects exists")
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let problems: Vec<String> = rendered.omitted.iter().map(ToString::to_string).collect();
        tracing::warn!(
            namespace = %selection.namespace,
            configmap = %name,
            problems = %problems.join("; "),
            "selection in use renders nothing"
        );
        self.applied.insert(
            selection.clone(),
            Applied {
                fingerprint: ABSENT,
                resource_version: None,
                problems,
            },
        );
        Ok(())
    }

    /// Re-applies ConfigMaps changed behind our back and prunes unused ones.
    async fn resync(&mut self) {
        let timer = self.ctx.settings.metrics.start(Kind::ConfigMap);
        let listed = Api::<ConfigMap>::all(self.ctx.client.clone())
            .list(&ListParams::default().labels(&managed_selector()))
            .await;
        let configmaps = match timer.finish(listed.map_err(Into::into)) {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(code = %e.code(), error = %e, "cannot list rendered ConfigMaps");
                return;
            }
        };
        let live: HashMap<(String, String), Option<String>> = configmaps
            .iter()
            .map(|cm| {
                (
                    (cm.namespace().unwrap_or_default(), cm.name_any()),
                    cm.resource_version(),
                )
            })
            .collect();
        // Forget what was applied where the live object differs, so it is applied again.
        self.applied.retain(|s, a| {
            let live = live.get(&(s.namespace.clone(), s.configmap_name()));
            if a.fingerprint == ABSENT {
                live.is_none()
            } else {
                live == Some(&a.resource_version)
            }
        });
        // Selections without pods keep no bookkeeping (their ConfigMaps are pruned below).
        let usage = &self.usage;
        self.failures.retain(|s, _| usage.in_use(s));
        self.applied.retain(|s, _| usage.in_use(s));
        self.schedule_all();
        if self.usage.is_synced() {
            self.prune(&configmaps).await;
        }
    }

    async fn prune(&mut self, configmaps: &[ConfigMap]) {
        let now = Instant::now();
        let mut seen = HashSet::new();
        for cm in configmaps {
            let (ns, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
            let id = cm
                .labels()
                .get(SELECTION_LABEL)
                .cloned()
                .unwrap_or_default();
            if self.usage.uses_id(&ns, &id) {
                continue;
            }
            let key = (ns.clone(), name.clone());
            seen.insert(key.clone());
            let since = *self.unused_since.entry(key.clone()).or_insert(now);
            if now.duration_since(since) < self.ctx.settings.prune_after {
                continue;
            }
            // The uid precondition keeps a ConfigMap recreated in the meantime.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: cm.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<ConfigMap>::namespaced(self.ctx.client.clone(), &ns)
                .delete(&name, &params)
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %ns, configmap = %name, "deleted ConfigMap no pod uses");
                    seen.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, configmap = %name, error = %e, "cannot delete unused ConfigMap")
                }
            }
        }
        self.unused_since.retain(|k, _| seen.contains(k));
    }

    async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        mut note: String,
    ) {
        if note.len() > 1000 {
            let mut cut = 997;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Render".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&event, reference).await {
            tracing::warn!(reason, error = %e, "cannot publish event");
        }
    }
}

fn key(pod: &PartialObjectMeta<Pod>) -> PodKey {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The fingerprint of "no ConfigMap" (a real one hashing to 0 merely costs one extra apply).
const ABSENT: u64 = 0;

fn fingerprint(cm: &ConfigMap) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(cm).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
