//! The FlowDefinition / LinkTarget reconcile against a fake API server: status by server-side
//! apply, events, metrics, errors.

use std::sync::Arc;
use std::time::Duration;

use fiso_config::crd::{FlowDefinition, ResourceStatus};
use fiso_runtime::MetricsRegistry;
use http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::configmap::configmap;
use crate::controller::Settings;
use crate::metrics::Metrics;
use crate::selection::Selection;
use crate::testing::{fake_api, flow, not_found, render, undecoded, Seen};

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
        apps: Default::default(),
    };
    let cm = configmap(&sel, &render(&sel, [&orders(generation)], [], []).unwrap());
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
            not_found()
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

    let action = reconcile(Arc::new(undecoded(&orders(2))), ctx.clone())
        .await
        .unwrap();
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
    assert!(metrics
        .contains("fiso_operator_reconcile_duration_seconds_count{kind=\"FlowDefinition\"} 1\n"));
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    // First reconcile: learn the status the operator writes.
    let (client, log) = fake_api(api_server(rendered(2)));
    let registry = MetricsRegistry::new();
    reconcile(Arc::new(undecoded(&orders(2))), context(client, &registry))
        .await
        .unwrap();
    let written: ResourceStatus =
        serde_json::from_value(log.lock().unwrap()[1].body["status"].clone()).unwrap();

    // Second reconcile of the object carrying that status: read only.
    let (client, log) = fake_api(api_server(rendered(2)));
    let mut fd = orders(2);
    fd.status = Some(written);
    reconcile(
        Arc::new(undecoded(&fd)),
        context(client, &MetricsRegistry::new()),
    )
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
        Arc::new(undecoded(&orders(2))),
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
async fn a_spec_that_does_not_decode_gets_an_error_status_naming_the_field() {
    let (client, log) = fake_api(api_server(rendered(2)));
    let mut fd = undecoded(&orders(2));
    fd.spec["sink"]["config"]["timeout"] = "5 parsecs".into();
    reconcile(Arc::new(fd), context(client, &MetricsRegistry::new()))
        .await
        .unwrap();
    let seen = log.lock().unwrap().clone();
    let status = &seen[1].body["status"];
    assert_eq!(status["phase"], "Error");
    let valid = &status["conditions"][0];
    assert_eq!(
        (&valid["type"], &valid["status"], &valid["reason"]),
        (&json!("Valid"), &json!("False"), &json!("Invalid"))
    );
    let message = valid["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "spec.sink.config.timeout: invalid value: string \"5 parsecs\", expected a duration"
        ),
        "{message}"
    );
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
    let fd = Arc::new(undecoded(&orders(2)));
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
