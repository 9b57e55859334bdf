//! The renderer's I/O half against a fake API server: the requests one reconcile of a
//! selection makes, and what it does with the answers (remembering what it applied, reporting
//! omissions, retrying failures with backoff).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fiso_runtime::MetricsRegistry;
use http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::controller::Settings;
use crate::metrics::Metrics;
use crate::selection::flow_key;
use crate::testing::{fake_api, flow, not_found, status_failure, undecoded, Log, Seen};

fn selection(flows: &[&str]) -> Selection {
    Selection {
        namespace: "apps".into(),
        flows: flows.iter().map(|s| (*s).to_owned()).collect(),
        links: Default::default(),
        apps: Default::default(),
    }
}

/// What the API server answers to the renderer's requests: an apply returns the ConfigMap with
/// a resourceVersion, an event is accepted, anything else is not found.
fn api_server(s: &Seen) -> (StatusCode, Value) {
    if s.method == "PATCH"
        && s.uri
            .starts_with("/api/v1/namespaces/apps/configmaps/fiso-")
    {
        let mut cm = s.body.clone();
        cm["metadata"]["resourceVersion"] = json!("7");
        cm["metadata"]["uid"] = json!("uid-cm");
        (StatusCode::OK, cm)
    } else if s.method == "POST"
        && s.uri
            .starts_with("/apis/events.k8s.io/v1/namespaces/apps/events")
    {
        (StatusCode::CREATED, s.body.clone())
    } else {
        not_found()
    }
}

/// A renderer whose stores hold `flows` and whose only pod uses `uses`, talking to `respond`.
struct Fixture {
    renderer: Renderer,
    flows: reflector::store::Writer<Undecoded<FlowDefinition>>,
    log: Log,
    scheduled: mpsc::UnboundedReceiver<ScheduleRequest<Selection>>,
    registry: MetricsRegistry,
}

impl Fixture {
    fn new(
        flows: Vec<FlowDefinition>,
        uses: &Selection,
        respond: impl Fn(&Seen) -> (StatusCode, Value) + Send + Sync + 'static,
    ) -> Self {
        let (client, log) = fake_api(respond);
        let registry = MetricsRegistry::new();
        let settings = Settings {
            metrics: Metrics::register(&registry).unwrap(),
            ..Settings::default()
        };
        let (flow_store, mut flow_writer) = reflector::store::<Undecoded<FlowDefinition>>();
        for fd in flows {
            flow_writer.apply_watcher_event(&Event::Apply(undecoded(&fd)));
        }
        let (link_store, _) = reflector::store::<Undecoded<LinkTarget>>();
        let (app_store, _) = reflector::store::<Undecoded<WasmApp>>();
        let (queue, scheduled) = mpsc::unbounded();
        let mut renderer = Renderer::new(
            Context::new(client, settings),
            flow_store,
            link_store,
            app_store,
            queue,
        );
        renderer
            .usage
            .apply(("apps".into(), "web-1".into()), uses.clone());
        Fixture {
            renderer,
            flows: flow_writer,
            log,
            scheduled,
            registry,
        }
    }

    /// The requests made since the last call.
    fn requests(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// The retry the last reconcile scheduled, as a delay from `since`.
    fn retry_after(&mut self, since: Instant) -> Option<Duration> {
        let request = self.scheduled.try_recv().ok()?;
        Some(request.run_at.duration_since(since))
    }
}

#[tokio::test]
async fn a_selection_is_rendered_by_server_side_apply_owned_by_its_resources() {
    let sel = selection(&["orders"]);
    let mut f = Fixture::new(
        vec![flow("orders", "http://orders:8080/in")],
        &sel,
        api_server,
    );

    f.renderer.reconcile(sel.clone()).await;

    let seen = f.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let apply = &seen[0];
    assert_eq!(apply.method, "PATCH");
    let path = format!(
        "/api/v1/namespaces/apps/configmaps/{}?",
        sel.configmap_name()
    );
    assert!(apply.uri.starts_with(&path), "{}", apply.uri);
    assert!(
        apply.uri.contains("fieldManager=fiso-operator") && apply.uri.contains("force=true"),
        "{}",
        apply.uri
    );
    let cm = &apply.body;
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["labels"][SELECTION_LABEL], sel.id());
    let owners = cm["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["kind"], "FlowDefinition");
    assert_eq!(owners[0]["name"], "orders");
    assert_eq!(owners[0]["uid"], "uid-orders");
    assert!(cm["data"][flow_key("orders")].is_string(), "{cm:#}");

    assert!(f.retry_after(Instant::now()).is_none());
    assert_eq!(
        f.renderer.applied[&sel].resource_version.as_deref(),
        Some("7")
    );
    let metrics = f.registry.encode();
    assert!(
        metrics
            .contains("fiso_operator_reconcile_total{kind=\"ConfigMap\",result=\"success\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_missing_resource_is_left_out_and_reported_once() {
    let sel = selection(&["orders", "gone"]);
    let mut f = Fixture::new(
        vec![flow("orders", "http://orders:8080/in")],
        &sel,
        api_server,
    );

    f.renderer.reconcile(sel.clone()).await;

    let seen = f.requests();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["PATCH", "POST"], "{seen:#?}");
    let data = &seen[0].body["data"];
    assert!(data[flow_key("orders")].is_string());
    assert!(data.get(flow_key("gone")).is_none(), "{data:#}");
    let event = &seen[1].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "RenderIncomplete");
    assert_eq!(event["regarding"]["kind"], "ConfigMap");
    assert_eq!(event["regarding"]["name"], sel.configmap_name());
    let note = event["note"].as_str().unwrap();
    assert!(
        note.starts_with("rendered with problems: ") && note.contains("gone"),
        "{note}"
    );

    // The same problems after a change elsewhere are not reported again.
    f.flows.apply_watcher_event(&Event::Apply(undecoded(&flow(
        "orders",
        "http://orders:8080/v2",
    ))));
    f.renderer.reconcile(sel).await;
    let methods: Vec<String> = f.requests().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["PATCH"]);
}

#[tokio::test]
async fn a_selection_of_nothing_that_exists_deletes_its_configmap_once() {
    let sel = selection(&["gone"]);
    let mut f = Fixture::new(vec![], &sel, api_server);

    f.renderer.reconcile(sel.clone()).await;

    let seen = f.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "DELETE");
    assert!(seen[0].uri.starts_with(&format!(
        "/api/v1/namespaces/apps/configmaps/{}",
        sel.configmap_name()
    )));
    // Not found is what was wanted: no error, no retry.
    assert!(f.retry_after(Instant::now()).is_none());
    assert_eq!(f.renderer.applied[&sel].fingerprint, ABSENT);

    f.renderer.reconcile(sel).await;
    assert!(f.requests().is_empty(), "already known to be absent");
}

#[tokio::test]
async fn an_unchanged_render_is_not_applied_again() {
    let sel = selection(&["orders"]);
    let mut f = Fixture::new(
        vec![flow("orders", "http://orders:8080/in")],
        &sel,
        api_server,
    );

    f.renderer.reconcile(sel.clone()).await;
    assert_eq!(f.requests().len(), 1);
    f.renderer.reconcile(sel.clone()).await;
    assert!(f.requests().is_empty(), "same render: no request");

    f.flows.apply_watcher_event(&Event::Apply(undecoded(&flow(
        "orders",
        "http://orders:8080/v2",
    ))));
    f.renderer.reconcile(sel).await;
    let seen = f.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body["data"][flow_key("orders")]
        .as_str()
        .unwrap()
        .contains("/v2"));
}

#[tokio::test]
async fn a_selection_no_pod_uses_is_not_rendered() {
    let mut f = Fixture::new(
        vec![flow("orders", "http://orders:8080/in")],
        &selection(&["other"]),
        api_server,
    );
    f.renderer.reconcile(selection(&["orders"])).await;
    assert!(f.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_api_error_is_counted_and_retried_with_backoff() {
    let sel = selection(&["orders"]);
    let failures_left = Arc::new(AtomicUsize::new(2));
    let left = Arc::clone(&failures_left);
    let mut f = Fixture::new(
        vec![flow("orders", "http://orders:8080/in")],
        &sel,
        move |s| {
            if s.method == "PATCH" && left.load(Ordering::SeqCst) > 0 {
                left.fetch_sub(1, Ordering::SeqCst);
                status_failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "etcd timed out",
                )
            } else {
                api_server(s)
            }
        },
    );

    for expected in [5, 10] {
        let now = Instant::now();
        f.renderer.reconcile(sel.clone()).await;
        assert_eq!(
            f.retry_after(now),
            Some(Duration::from_secs(expected)),
            "retried after the doubling delay"
        );
        assert!(!f.renderer.applied.contains_key(&sel));
    }
    let metrics = f.registry.encode();
    assert!(
        metrics.contains(
            "fiso_operator_reconcile_errors_total{kind=\"ConfigMap\",error=\"KUBE_API\"} 2\n"
        ),
        "{metrics}"
    );

    f.renderer.reconcile(sel.clone()).await;
    assert!(f.retry_after(Instant::now()).is_none());
    assert!(f.renderer.applied.contains_key(&sel));
    assert!(
        f.renderer.failures.is_empty(),
        "a success resets the backoff"
    );
    assert_eq!(f.requests().len(), 3);
}

#[test]
fn retry_backoff_doubles_up_to_the_cap() {
    let settings = Settings::default();
    let (base, max) = (settings.retry, settings.max_retry);
    assert_eq!(
        (base, max),
        (Duration::from_secs(5), Duration::from_secs(300))
    );
    let mut retry = Restart::new(base, max);
    let delays: Vec<Duration> = (0..100).map(|_| retry.next_delay()).collect();
    assert_eq!(delays[0], Duration::from_secs(5));
    assert_eq!(delays[1], Duration::from_secs(10));
    assert_eq!(delays[3], Duration::from_secs(40));
    assert_eq!(delays[9], max);
    assert_eq!(delays[99], max);
}
