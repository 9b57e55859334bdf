//! The reconciler the kinds share: read the spec and validate it with `fiso-config` (a spec the
//! typed kind cannot hold is a finding like any other, see [`crate::undecoded`]), read where the
//! resource is rendered, apply the status (server-side, field manager `fiso-operator`), publish
//! events for transitions. Modelled on kube-rs' controller-rs.

use std::sync::Arc;

use fiso_config::crd::Phase;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Event;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::status::{self, Validity};
use super::{managed_selector, Context, FIELD_MANAGER};
use crate::configmap::{configmap_selection, SourceKind};
use crate::error::{Error, Result};
use crate::metrics::Kind;
use crate::undecoded::{self, Undecoded};
use crate::validation::{error_lines, warning_lines};

/// What the shared reconciler needs to know about a kind.
pub trait FisoResource: undecoded::Kind {
    const SOURCE: SourceKind;
    const METRIC: Kind;
}

/// Runs the controller of `K` until `shutdown`.
pub async fn run<K: FisoResource>(ctx: Arc<Context>, shutdown: CancellationToken) {
    let resources = Api::<Undecoded<K>>::all(ctx.client.clone());
    let configmaps = Api::<ConfigMap>::all(ctx.client.clone());
    Controller::new(resources, watcher::Config::default())
        // A (re-)rendered or pruned ConfigMap changes the `Rendered` condition of every
        // resource its selection names.
        .watches(
            configmaps,
            watcher::Config::default().labels(&managed_selector()),
            selected_by::<K>,
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => {
                    tracing::debug!(kind = K::SOURCE.kind(), object = %obj, "reconciled")
                }
                // A ConfigMap naming a resource that does not exist: nothing to reconcile.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(object = %obj, "selected resource does not exist")
                }
                // Reconcile failures are logged (and counted) where they happen.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(kind = K::SOURCE.kind(), error = %e, "controller error"),
            }
        })
        .await;
}

/// The resources of kind `K` a rendered ConfigMap's selection names.
fn selected_by<K: FisoResource>(cm: ConfigMap) -> Vec<ObjectRef<Undecoded<K>>> {
    let Some(selection) = configmap_selection(&cm) else {
        return Vec::new();
    };
    let names = match K::SOURCE {
        SourceKind::Flow => &selection.flows,
        SourceKind::Link => &selection.links,
        SourceKind::App => &selection.apps,
    };
    names
        .iter()
        .map(|n| ObjectRef::new(n).within(&selection.namespace))
        .collect()
}

pub async fn reconcile<K: FisoResource>(
    obj: Arc<Undecoded<K>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let timer = ctx.settings.metrics.start(K::METRIC);
    timer
        .finish(apply_status(obj.as_ref(), &ctx).await)
        .map(|()| Action::requeue(ctx.settings.requeue))
}

pub fn error_policy<K: FisoResource>(
    obj: Arc<Undecoded<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(
        kind = K::SOURCE.kind(),
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        code = %error.code(),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(ctx.settings.retry)
}

async fn apply_status<K: FisoResource>(obj: &Undecoded<K>, ctx: &Context) -> Result<()> {
    let name = obj.name_any();
    let ns = obj.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: K::SOURCE.kind(),
        name: name.clone(),
    })?;
    let generation = obj.meta().generation;

    let (_, findings) = obj.checked();
    let validity = Validity::from_lines(error_lines(&findings), warning_lines(&findings));
    let configmaps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&managed_selector()))
        .await?;
    let rendering = status::rendering(
        K::SOURCE,
        &name,
        generation.unwrap_or_default(),
        validity.is_valid(),
        &configmaps.items,
    );
    let previous = obj.status.as_ref();
    let next = status::build(
        K::SOURCE,
        previous,
        generation,
        &validity,
        &rendering,
        Timestamp::now(),
    );
    if previous == Some(&next) {
        return Ok(());
    }

    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": next,
    });
    Api::<Undecoded<K>>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    tracing::info!(
        kind = K::SOURCE.kind(),
        namespace = %ns,
        name = %name,
        generation,
        phase = match next.phase {
            Some(Phase::Ready) => "Ready",
            Some(Phase::Error) => "Error",
            None => "",
        },
        message = next.message.as_deref().unwrap_or_default(),
        "status updated"
    );

    // Events are best effort: the status above is the record, and failing here would only
    // repeat the (already applied) status write.
    let reference = obj.object_ref(&());
    for n in status::notices(previous, &next) {
        let event = Event {
            type_: n.type_,
            reason: n.reason,
            note: Some(n.note),
            action: n.action.to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(kind = K::SOURCE.kind(), name = %name, error = %e, "cannot publish event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
