//! The reconciler both kinds share: validate with `fiso-config`, read where the resource is
//! rendered, apply the status (server-side, field manager `fiso-operator`), publish events for
//! transitions. Modelled on kube-rs' controller-rs.

use std::fmt::Debug;
use std::sync::Arc;

use fiso_config::crd::{Phase, ResourceStatus};
use fiso_config::Diagnostic;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Event;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::status::{self, Validity};
use super::{managed_selector, Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::metrics::Kind;
use crate::render::{configmap_selection, SourceKind};
use crate::validation::{error_lines, warning_lines};

/// What the shared reconciler needs to know about a kind.
pub trait FisoResource:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const SOURCE: SourceKind;
    const METRIC: Kind;

    /// Every validation finding, with `spec.` paths.
    fn check(&self) -> Vec<Diagnostic>;

    fn status(&self) -> Option<&ResourceStatus>;
}

/// Runs the controller of `K` until `shutdown`.
pub async fn run<K: FisoResource>(ctx: Arc<Context>, shutdown: CancellationToken) {
    let resources = Api::<K>::all(ctx.client.clone());
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
fn selected_by<K: FisoResource>(cm: ConfigMap) -> Vec<ObjectRef<K>> {
    let Some(selection) = configmap_selection(&cm) else {
        return Vec::new();
    };
    let names = match K::SOURCE {
        SourceKind::Flow => &selection.flows,
        SourceKind::Link => &selection.links,
    };
    names
        .iter()
        .map(|n| ObjectRef::new(n).within(&selection.namespace))
        .collect()
}

pub async fn reconcile<K: FisoResource>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.settings.metrics.start(K::METRIC);
    timer
        .finish(apply_status(obj.as_ref(), &ctx).await)
        .map(|()| Action::requeue(ctx.settings.requeue))
}

pub fn error_policy<K: FisoResource>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
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

async fn apply_status<K: FisoResource>(obj: &K, ctx: &Context) -> Result<()> {
    let name = obj.name_any();
    let ns = obj.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: K::SOURCE.kind(),
        name: name.clone(),
    })?;
    let generation = obj.meta().generation;

    let findings = obj.check();
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
    let previous = obj.status();
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
    Api::<K>::namespaced(ctx.client.clone(), &ns)
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
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use fiso_config::crd::FlowDefinition;
    use fiso_runtime::MetricsRegistry;
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{json, Value};

    use super::*;
    use crate::controller::Settings;
    use crate::metrics::Metrics;
    use crate::render::{configmap, render};
    use crate::selection::Selection;
    use crate::testing::flow;

    /// One request the fake API server received.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        uri: String,
        body: Value,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// A client whose API server is `respond`; every request is recorded.
    fn fake_api(
        respond: impl Fn(&Seen) -> (StatusCode, Value) + Send + Sync + 'static,
    ) -> (kube::Client, Log) {
        let log: Log = Arc::default();
        let seen = log.clone();
        let respond = Arc::new(respond);
        let service = tower::service_fn(move |req: Request<Body>| {
            let (seen, respond) = (seen.clone(), respond.clone());
            async move {
                let method = req.method().to_string();
                let uri = req.uri().to_string();
                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let s = Seen { method, uri, body };
                let (code, reply) = respond(&s);
                seen.lock().unwrap().push(s);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        (kube::Client::new(service, "default"), log)
    }

    fn orders(generation: i64) -> FlowDefinition {
        let mut fd = flow("orders", "http://orders:8080/in");
        fd.metadata.generation = Some(generation);
        fd
    }

    /// The ConfigMap rendered for a pod selecting `orders` at `generation`.
    fn rendered(generation: i64) -> Value {
        let sel = Selection {
            namespace: "apps".into(),
            flows: ["orders".to_owned()].into(),
            links: Default::default(),
        };
        let cm = configmap(&sel, &render(&sel, [&orders(generation)], []).unwrap());
        json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {}, "items": [cm]})
    }

    /// Answers the three calls a reconcile makes: list ConfigMaps, patch status, post events.
    fn api_server(configmaps: Value) -> impl Fn(&Seen) -> (StatusCode, Value) + Send + Sync {
        move |s: &Seen| {
            if s.method == "GET" && s.uri.starts_with("/api/v1/namespaces/apps/configmaps?") {
                (StatusCode::OK, configmaps.clone())
            } else if s.method == "PATCH" && s.uri.contains("/flowdefinitions/orders/status?") {
                let mut fd = serde_json::to_value(orders(2)).unwrap();
                fd["status"] = s.body["status"].clone();
                (StatusCode::OK, fd)
            } else if s.method == "POST"
                && s.uri
                    .starts_with("/apis/events.k8s.io/v1/namespaces/apps/events")
            {
                (StatusCode::CREATED, s.body.clone())
            } else {
                (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
                )
            }
        }
    }

    fn context(client: kube::Client, registry: &MetricsRegistry) -> Arc<Context> {
        let settings = Settings {
            metrics: Metrics::register(registry).unwrap(),
            ..Settings::default()
        };
        Context::new(client, settings)
    }

    #[tokio::test]
    async fn valid_rendered_flow_gets_ready_status_by_server_side_apply_and_events() {
        let (client, log) = fake_api(api_server(rendered(2)));
        let registry = MetricsRegistry::new();
        let ctx = context(client, &registry);

        let action = reconcile(Arc::new(orders(2)), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(ctx.settings.requeue));

        let seen = log.lock().unwrap().clone();
        let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(methods, ["GET", "PATCH", "POST", "POST"], "{seen:#?}");
        assert!(
            seen[0]
                .uri
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dfiso-operator"),
            "{}",
            seen[0].uri
        );

        let patch = &seen[1];
        assert!(patch
            .uri
            .starts_with("/apis/fiso.io/v1alpha1/namespaces/apps/flowdefinitions/orders/status?"));
        assert!(
            patch.uri.contains("fieldManager=fiso-operator") && patch.uri.contains("force=true"),
            "{}",
            patch.uri
        );
        assert_eq!(patch.body["apiVersion"], "fiso.io/v1alpha1");
        assert_eq!(patch.body["kind"], "FlowDefinition");
        let status = &patch.body["status"];
        assert_eq!(status["phase"], "Ready");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["conditions"][0]["type"], "Valid");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][1]["type"], "Rendered");
        assert_eq!(status["conditions"][1]["status"], "True");
        assert_eq!(status["conditions"][1]["observedGeneration"], 2);

        let reasons: Vec<&Value> = seen[2..].iter().map(|s| &s.body["reason"]).collect();
        assert_eq!(reasons, [&json!("Valid"), &json!("Rendered")]);
        assert_eq!(seen[2].body["regarding"]["name"], "orders");
        assert_eq!(seen[2].body["reportingController"], "fiso-operator");

        let metrics = registry.encode();
        assert!(
            metrics.contains(
                "fiso_operator_reconcile_total{kind=\"FlowDefinition\",result=\"success\"} 1\n"
            ),
            "{metrics}"
        );
        assert!(metrics.contains(
            "fiso_operator_reconcile_duration_seconds_count{kind=\"FlowDefinition\"} 1\n"
        ));
    }

    #[tokio::test]
    async fn unchanged_status_is_not_written_again() {
        // First reconcile: learn the status the operator writes.
        let (client, log) = fake_api(api_server(rendered(2)));
        let registry = MetricsRegistry::new();
        reconcile(Arc::new(orders(2)), context(client, &registry))
            .await
            .unwrap();
        let written: ResourceStatus =
            serde_json::from_value(log.lock().unwrap()[1].body["status"].clone()).unwrap();

        // Second reconcile of the object carrying that status: read only.
        let (client, log) = fake_api(api_server(rendered(2)));
        let mut fd = orders(2);
        fd.status = Some(written);
        reconcile(Arc::new(fd), context(client, &MetricsRegistry::new()))
            .await
            .unwrap();
        let methods: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.method.clone())
            .collect();
        assert_eq!(methods, ["GET"]);
    }

    #[tokio::test]
    async fn new_generation_not_yet_rendered_is_pending() {
        let (client, log) = fake_api(api_server(rendered(1)));
        reconcile(
            Arc::new(orders(2)),
            context(client, &MetricsRegistry::new()),
        )
        .await
        .unwrap();
        let seen = log.lock().unwrap().clone();
        let rendered = &seen[1].body["status"]["conditions"][1];
        assert_eq!(rendered["status"], "False");
        assert_eq!(rendered["reason"], "Pending");
        // Pending is transient: only the Valid event.
        assert_eq!(seen.len(), 3, "{seen:#?}");
    }

    #[tokio::test]
    async fn api_failures_are_errors_with_codes_counted_per_kind() {
        let (client, _) = fake_api(|_| {
            (
                StatusCode::FORBIDDEN,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden", "message": "configmaps is forbidden"}),
            )
        });
        let registry = MetricsRegistry::new();
        let ctx = context(client, &registry);
        let fd = Arc::new(orders(2));
        let err = reconcile(fd.clone(), ctx.clone()).await.unwrap_err();
        assert_eq!(err.code().as_str(), "KUBE_FORBIDDEN");
        assert_eq!(
            error_policy(fd, &err, ctx.clone()),
            Action::requeue(ctx.settings.retry)
        );
        assert_eq!(ctx.settings.retry, Duration::from_secs(5));
        let metrics = registry.encode();
        assert!(
            metrics.contains(
                "fiso_operator_reconcile_total{kind=\"FlowDefinition\",result=\"error\"} 1\n"
            ),
            "{metrics}"
        );
        assert!(metrics.contains("fiso_operator_reconcile_errors_total{kind=\"FlowDefinition\",error=\"KUBE_FORBIDDEN\"} 1\n"));
    }
}
