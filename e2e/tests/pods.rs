//! The closed loop in pods, on the test node (`cargo xtask infra up` starts containerd,
//! kubelet, kube-proxy and the scheduler beside the API server): the chart installed with
//! `helm install` runs two operator replicas from their image, the API server calls the webhook
//! through its Service, and the chart's examples run as they would on any cluster, with the
//! data-plane sidecar injected into the application's pod.
//!
//! The examples are applied as shipped except for what only this cluster can say: the
//! application's image (the test kit), and where the flow's sink and the Link's upstream are
//! (a test-kit "world" Service in the cluster, by ClusterIP: the node runs no DNS).
//!
//! One test, in order, because every step builds on the pod the previous one started: the
//! first requests, a FlowDefinition edit reaching the running sidecar through kubelet's
//! ConfigMap update, a Secret rotation reaching the Link, the flow's deletion, and a pod whose
//! flow is invalid. The times from each change to the new behaviour are printed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fiso_config::crd::{FlowDefinition, Phase};
use fiso_e2e::cluster::{self, wait_for, TestNamespace, K8S_DEADLINE};
use fiso_e2e::infra::{chart_dir, kubectl, run};
use fiso_e2e::operator::wait_for_phase;
use fiso_e2e::pods::{
    images, is_ready, is_running, pod_addr, recorded, restarts, wait_for_pod, Release, IMAGE_TAG,
    TESTKIT_IMAGE,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

const WORLD_PORT: u16 = 8080;
const FLOW_PORT: u16 = 8081;
const SIDECAR_HEALTH_PORT: u16 = 9090;
const APP: &str = "app=order-service";

/// The chart's example files, as YAML documents.
fn examples() -> Vec<Value> {
    let dir = chart_dir().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            serde_yaml_ng::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).expect("example YAML"))
                .filter(|v: &Value| !v.is_null())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn find<'a>(docs: &'a mut [Value], kind: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("the examples have no {kind}"))
}

/// A test-kit Deployment + Service named `name` (the flow's sink and the Link's upstream).
fn world(name: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: kit
          image: {TESTKIT_IMAGE}
          imagePullPolicy: IfNotPresent
          readinessProbe: {{httpGet: {{path: /_healthz, port: {WORLD_PORT}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {WORLD_PORT}, targetPort: {WORLD_PORT}, protocol: TCP}}]
"#
    )
}

/// `kubectl apply -f -` as a user applies the examples (client-side).
fn kubectl_apply(namespace: &str, docs: &[Value]) {
    run(
        kubectl().args(["apply", "--namespace", namespace, "-f", "-"]),
        Some(&as_list(docs)),
    );
}

/// `name`'s Deployment runs the test kit as the application.
fn as_testkit(deployment: &mut Value) {
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    container["image"] = json!(TESTKIT_IMAGE);
    container["imagePullPolicy"] = json!("IfNotPresent");
}

/// The documents as one `v1/List` in JSON (YAML through serde would print the workspace's
/// arbitrary-precision numbers as maps).
fn as_list(docs: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}

/// Posts an order to the pod's flow; `None` when the flow does not answer 2xx.
async fn post_order(http: &reqwest::Client, app: SocketAddr, id: &str) -> Option<()> {
    let answer = http
        .post(format!("http://{app}/orders"))
        .header("content-type", "application/json")
        .body(json!({"legacy_id": id, "price": 2.5, "quantity": 4}).to_string())
        .send()
        .await
        .ok()?;
    answer.status().is_success().then_some(())
}

/// The CloudEvent the world received for order `id`, if any.
async fn delivered(http: &reqwest::Client, world: SocketAddr, id: &str) -> Option<Value> {
    recorded(http, world)
        .await
        .into_iter()
        .filter(|r| r["path"] == "/orders")
        .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
        .find(|event| event["data"]["order_id"] == id)
}

/// The `Authorization` the world saw on the Link call numbered `n`.
async fn link_call(
    http: &reqwest::Client,
    app: SocketAddr,
    world: SocketAddr,
    n: usize,
) -> Option<String> {
    let path = format!("/v1/customers/{n}");
    let answer = http
        .get(format!("http://{app}/_call/crm-api{path}"))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    recorded(http, world)
        .await
        .into_iter()
        .find(|r| r["path"] == path.as_str())
        .and_then(|r| r["headers"]["authorization"].as_str().map(str::to_owned))
}

/// Repeats `attempt` (numbered from 1) until it yields, up to [`K8S_DEADLINE`]; prints the time
/// since `since` and returns the value.
async fn until<T, F, Fut>(what: &str, since: Instant, mut attempt: F) -> T
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let mut n = 0;
    let found = fiso_e2e::eventually(K8S_DEADLINE, || {
        n += 1;
        attempt(n)
    })
    .await
    .unwrap_or_else(|| panic!("not within {K8S_DEADLINE:?}: {what}"));
    eprintln!("{what}: {:.1?}", since.elapsed());
    found
}

/// The sidecar's `/readyz` at `addr`, when it has a warning naming `file` and `problem`.
async fn readyz_warning(
    http: &reqwest::Client,
    addr: SocketAddr,
    file: &str,
    problem: &str,
) -> Option<Value> {
    let answer = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .ok()?;
    let body: Value = serde_json::from_slice(&answer.bytes().await.ok()?).ok()?;
    let warnings = body["warnings"].to_string();
    (warnings.contains(file) && warnings.contains(problem)).then_some(body)
}

async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_and_its_examples_run_the_loop_in_pods() {
    images();
    cluster::install_crds();
    let client = cluster::client().await;
    let system = TestNamespace::create(&client, "pods").await;
    let app_ns = TestNamespace::create(&client, "pods-app").await;
    let ns = app_ns.name.as_str();
    let release = Release::install(
        &system.name,
        &system.name,
        &[
            "replicaCount=2".into(),
            "webhook.failurePolicy=Fail".into(),
            format!("webhook.namespaceSelector.matchLabels.fiso-e2e={ns}"),
        ],
    );
    let fullname = format!("{}-operator", release.name);
    let http = fiso_e2e::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Two operator replicas from the operator image, one of which holds the Lease.
    let operators = fiso_e2e::pods::pods(
        &client,
        &system.name,
        &format!("app.kubernetes.io/instance={}", system.name),
    )
    .await;
    assert_eq!(operators.len(), 2, "two replicas");
    for pod in &operators {
        assert!(is_ready(pod), "{:?} is Ready", pod.metadata.name);
        let image = &pod.spec.as_ref().unwrap().containers[0].image;
        assert_eq!(
            image.as_deref(),
            Some(format!("fiso.local/fiso-operator:{IMAGE_TAG}").as_str())
        );
    }
    let lease = format!("{fullname}-leader");
    let leader = until("a replica holds the Lease", Instant::now(), |_| {
        let (client, system, lease) = (client.clone(), system.name.clone(), lease.clone());
        async move { lease_holder(&client, &system, &lease).await }
    })
    .await;
    // The holder identity is the pod's name plus a suffix unique to the process.
    let leader_pod = operators
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|name| leader.starts_with(name.as_str()))
        .unwrap_or_else(|| panic!("{leader} names none of the replicas"));

    // The world: the flow's sink and the Link's upstream.
    cluster::apply(ns, &world("world"));
    let world_pod = wait_for_pod(&client, ns, "app=world", "Ready", is_ready).await;
    let world = pod_addr(&world_pod, WORLD_PORT);
    let service_ip = Api::<Service>::namespaced(client.clone(), ns)
        .get("world")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");

    // The chart's examples, pointed at the world.
    let mut docs = examples();
    let link = find(&mut docs, "LinkTarget");
    link["spec"]["protocol"] = json!("http");
    link["spec"]["host"] = json!(service_ip);
    link["spec"]["port"] = json!(WORLD_PORT);
    find(&mut docs, "Secret")["stringData"]["token"] = json!("token-1");
    find(&mut docs, "FlowDefinition")["spec"]["sink"]["config"]["url"] =
        json!(format!("http://{service_ip}:{WORLD_PORT}/orders"));
    as_testkit(find(&mut docs, "Deployment"));
    kubectl_apply(ns, &docs);

    let app_pod = wait_for_pod(&client, ns, APP, "Ready", is_ready).await;
    let containers: Vec<&str> = app_pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        containers,
        ["order-service", "fiso"],
        "on a 1.20 API server the sidecar is a regular container (sidecar.mode auto)"
    );
    let uid = app_pod.metadata.uid.clone();
    let restarts_before = restarts(&app_pod);
    let app_flow = pod_addr(&app_pod, FLOW_PORT);
    let app = pod_addr(&app_pod, WORLD_PORT);

    // An order through the flow reaches the world, transformed and wrapped. The pod can be
    // Ready before its ConfigMap is rendered (the volume is optional; kubelet fills it in on a
    // later sync), so the flow's first appearance is waited for.
    let event = until("the first order delivered", Instant::now(), |n| {
        let (http, id) = (http.clone(), format!("A-{n}"));
        async move {
            post_order(&http, app_flow, &id).await?;
            fiso_e2e::eventually(Duration::from_secs(5), || delivered(&http, world, &id)).await
        }
    })
    .await;
    assert_eq!(event["type"], "order.created");
    assert_eq!(event["source"], "shop/order-events");
    let data = &event["data"];
    assert_eq!(
        (&data["status"], data["total"].as_f64()),
        (&json!("pending"), Some(10.0)),
        "{data}"
    );

    // The application calls the Link; the upstream gets the Secret's credential.
    let auth = until("the first Link call", Instant::now(), |n| {
        link_call(&http, app, world, n)
    })
    .await;
    assert_eq!(auth, "Bearer token-1");

    // Leader failover: the other replica takes the Lease and keeps reconciling (the edits
    // below are rendered by it).
    Api::<Pod>::namespaced(client.clone(), &system.name)
        .delete(&leader_pod, &DeleteParams::default())
        .await
        .expect("deleting the leader");
    let new_leader = until("the other replica takes the Lease", Instant::now(), |_| {
        let (client, system, lease, leader) = (
            client.clone(),
            system.name.clone(),
            lease.clone(),
            leader.clone(),
        );
        async move {
            lease_holder(&client, &system, &lease)
                .await
                .filter(|h| *h != leader)
        }
    })
    .await;
    eprintln!("lease moved from {leader} to {new_leader}");

    // Editing the flow reaches the running sidecar: operator → ConfigMap → kubelet's volume
    // update → hot reload. No restart.
    let flows: Api<FlowDefinition> = Api::namespaced(client.clone(), ns);
    let edited = Instant::now();
    flows
        .patch(
            "order-events",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"transform": {"fields": {"status": "\"confirmed\""}}}})),
        )
        .await
        .expect("editing the FlowDefinition");
    let event = until(
        "FlowDefinition edit → new transform in the running pod",
        edited,
        |n| {
            let (http, id) = (http.clone(), format!("B-{n}"));
            async move {
                post_order(&http, app_flow, &id).await?;
                let event =
                    fiso_e2e::eventually(Duration::from_secs(5), || delivered(&http, world, &id))
                        .await?;
                (event["data"]["status"] == "confirmed").then_some(event)
            }
        },
    )
    .await;
    assert_eq!(event["data"]["total"].as_f64(), Some(10.0));

    // Rotating the Secret reaches the Link without a restart.
    let rotated = Instant::now();
    run(
        kubectl().args([
            "patch",
            "secret",
            "crm-api-token",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"stringData":{"token":"token-2"}}"#,
        ]),
        None,
    );
    until(
        "Secret rotation → new credential upstream",
        rotated,
        |n| {
            let http = http.clone();
            async move {
                link_call(&http, app, world, 1000 + n)
                    .await
                    .filter(|a| a == "Bearer token-2")
            }
        },
    )
    .await;

    // Breaking the flow keeps its last good version running; the sidecar says why.
    flows
        .patch(
            "order-events",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"transform": {"fields": {"total": "data.price *"}}}})),
        )
        .await
        .expect("breaking the FlowDefinition");
    let app_health = pod_addr(&app_pod, SIDECAR_HEALTH_PORT);
    until(
        "broken edit → reported on /readyz",
        Instant::now(),
        |_| readyz_warning(&http, app_health, "order-events", "transform.fields.total"),
    )
    .await;
    post_order(&http, app_flow, "D-1")
        .await
        .expect("the last good version still serves");
    let event = fiso_e2e::eventually(K8S_DEADLINE, || delivered(&http, world, "D-1"))
        .await
        .expect("delivered by the last good version");
    assert_eq!(event["data"]["status"], "confirmed");

    // Deleting the flow removes it from the running sidecar.
    let deleted = Instant::now();
    flows
        .delete("order-events", &DeleteParams::default())
        .await
        .expect("deleting the FlowDefinition");
    until(
        "FlowDefinition deleted → flow gone from the pod",
        deleted,
        |n| {
            let http = http.clone();
            async move {
                post_order(&http, app_flow, &format!("C-{n}"))
                    .await
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;

    let after = wait_for_pod(&client, ns, APP, "still the same pod", |p| {
        p.metadata.uid == uid
    })
    .await;
    assert_eq!(restarts(&after), restarts_before, "no container restarted");
    assert!(
        link_call(&http, app, world, 5000).await.is_some(),
        "the Link still serves"
    );

    // A pod whose flow is invalid: the application runs, the sidecar says why on /readyz and
    // the FlowDefinition's status says so too.
    cluster::apply(
        ns,
        r#"
apiVersion: fiso.io/v1alpha1
kind: FlowDefinition
metadata: {name: broken-events}
spec:
  source: {type: http, config: {listenAddr: ":8081", path: /broken}}
  transform: {fields: {total: "data.price *"}}
  sink: {type: http, config: {url: "http://127.0.0.1:8080/broken"}}
"#,
    );
    let mut broken = find(&mut examples(), "Deployment").clone();
    broken["metadata"]["name"] = json!("broken-service");
    broken["spec"]["selector"]["matchLabels"]["app"] = json!("broken-service");
    let template = &mut broken["spec"]["template"];
    template["metadata"]["labels"]["app"] = json!("broken-service");
    template["metadata"]["annotations"]["fiso.io/flows"] = json!("broken-events");
    as_testkit(&mut broken);
    kubectl_apply(ns, &[broken]);
    let broken_pod = wait_for_pod(&client, ns, "app=broken-service", "the app runs", |p| {
        is_running(p, "order-service") && is_running(p, "fiso")
    })
    .await;
    let readyz = pod_addr(&broken_pod, SIDECAR_HEALTH_PORT);
    let report = until(
        "the sidecar reports the invalid flow",
        Instant::now(),
        |_| readyz_warning(&http, readyz, "broken-events", "transform.fields.total"),
    )
    .await;
    eprintln!("/readyz of the pod with an invalid flow: {report}");
    let status = wait_for_phase(&flows, "broken-events", Phase::Error).await;
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("spec.transform.fields.total"),
        "{status:?}"
    );

    wait_for(
        &Api::<Deployment>::namespaced(client.clone(), &system.name),
        &fullname,
        "both replicas ready again",
        fiso_e2e::pods::deployment_ready(),
    )
    .await;
    drop(release);
}
