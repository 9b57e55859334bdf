//! The operator against a real API server (kube-apiserver 1.20 + kube-controller-manager from
//! `cargo xtask infra up`). The operator runs as a process beside the API server, its logs and
//! metrics at hand; test pods name an image that does not exist, so they stay Pending and
//! injection is asserted on the Pod object (`tests/pods.rs` runs everything in pods, from
//! images). Each test installs the chart's manifests into its own namespaces and runs the
//! `fiso-operator` binary with the chart's environment and RBAC (see `fiso_e2e::operator`).

use std::collections::BTreeMap;

use fiso_config::crd::{FlowDefinition, LinkTarget, Phase, ResourceStatus, WasmApp};
use fiso_e2e::cluster::{wait_for, K8S_DEADLINE};
use fiso_e2e::fiso_bin;
use fiso_e2e::infra::{chart_dir, kubectl, run};
use fiso_e2e::operator::{
    create, flow_yaml, install_with_webhook, is_injected, mounted_configmap, pod, wait_for_phase,
    Install, OperatorProcess,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::ResourceExt;
use serde_json::{json, Value};

fn link_yaml(name: &str, secret: &str) -> String {
    format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: LinkTarget
metadata:
  name: {name}
spec:
  protocol: https
  host: api.{name}.example.com
  auth:
    type: bearer
    secretRef:
      name: {secret}
      key: token
"#
    )
}

fn condition<'a>(
    status: &'a ResourceStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {status:?}"))
}

/// Events about `name` (events.k8s.io/v1, as kube-runtime's recorder publishes them).
async fn events_about(client: &kube::Client, namespace: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// A FlowDefinition the API server admits but whose spec is no flow: the CRD's `source.config`
/// lists the fields of every source type (`topic` is Kafka's, not HTTP's), an int-or-string
/// size is untyped, a duration is any string.
const UNDECODABLE_FLOW: &str = r#"
apiVersion: fiso.io/v1alpha1
kind: FlowDefinition
metadata:
  name: undecodable
spec:
  source:
    type: http
    config:
      listenAddr: ":8081"
      path: /undecodable
      topic: orders
      maxBodySize: true
  sink:
    type: http
    config:
      url: http://localhost:8080/undecodable
      timeout: 5 parsecs
"#;

/// The status of a resource read untyped, once `phase` is reached for its generation.
async fn wait_for_dynamic_phase(
    api: &Api<DynamicObject>,
    name: &str,
    phase: &str,
) -> ResourceStatus {
    let found = wait_for(
        api,
        name,
        &format!("phase {phase} for its generation"),
        move |o: Option<&DynamicObject>| {
            o.is_some_and(|o| {
                o.data["status"]["phase"] == phase
                    && o.data["status"]["observedGeneration"].as_i64() == o.metadata.generation
            })
        },
    )
    .await
    .expect("resource");
    serde_json::from_value(found.data["status"].clone()).expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_and_invalid_resources_get_ready_or_error_status() {
    let install = Install::new("status", &[]).await;
    let ns = &install.app.name;
    let flows: Api<FlowDefinition> = Api::namespaced(install.client.clone(), ns);
    let links: Api<LinkTarget> = Api::namespaced(install.client.clone(), ns);
    // Admitted, yet not a FlowDefinition the typed spec can hold. It exists before the
    // operator starts, as after any restart or leader change: the first list holds it.
    let undecodable = Api::<DynamicObject>::namespaced_with(
        install.client.clone(),
        ns,
        &ApiResource::erase::<FlowDefinition>(&()),
    );
    create(&undecodable, UNDECODABLE_FLOW).await;
    let operator = install.start_operator("fiso-operator-0").await;
    install.wait_for_ca_bundle().await;
    install.register_webhook(operator.webhook_addr).await;

    create(&flows, &flow_yaml("orders", "http://localhost:8080/orders")).await;
    create(&links, &link_yaml("crm", "crm-token")).await;
    let bad_flow = flow_yaml("broken", "http://localhost:8080/x").replace(
        "  sink:",
        "  transform:\n    fields:\n      total: \"data.price *\"\n  sink:",
    );
    create(&flows, &bad_flow).await;
    create(
        &links,
        "apiVersion: fiso.io/v1alpha1\nkind: LinkTarget\nmetadata: {name: nohost}\nspec: {protocol: https}\n",
    )
    .await;

    let ready = wait_for_phase(&flows, "orders", Phase::Ready).await;
    assert_eq!(ready.observed_generation, Some(1));
    let valid = condition(&ready, "Valid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("True", "Valid")
    );
    assert_eq!(valid.observed_generation, Some(1));
    condition(&ready, "Rendered");
    let ready = wait_for_phase(&links, "crm", Phase::Ready).await;
    assert_eq!(condition(&ready, "Valid").status, "True");

    let error = wait_for_phase(&flows, "broken", Phase::Error).await;
    let message = error.message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.transform.fields.total"),
        "the message names the field: {message}"
    );
    let valid = condition(&error, "Valid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "Invalid")
    );
    let error = wait_for_phase(&links, "nohost", Phase::Error).await;
    assert!(
        error
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("spec.host"),
        "{error:?}"
    );

    // The one that does not decode is reported like any invalid resource, every finding
    // named by its field path, and never stops the others (above, and rendering below).
    let error = wait_for_dynamic_phase(&undecodable, "undecodable", "Error").await;
    let message = error.message.clone().unwrap_or_default();
    for finding in [
        "spec.source.config.topic: unknown field `topic`",
        "spec.source.config.maxBodySize: expected a size: an integer or a string such as \"1MiB\"",
        "spec.sink.config.timeout: ",
    ] {
        assert!(message.contains(finding), "{finding} in: {message}");
    }
    assert!(message.contains("parsecs"), "says what is wrong: {message}");
    let valid = condition(&error, "Valid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "Invalid")
    );
    assert!(
        valid.message.contains("spec.source.config.topic"),
        "{valid:?}"
    );

    // A pod selecting it runs the others: their files are rendered; the undecodable flow's
    // file is rendered as written, as any invalid flow's is, so the sidecar refuses it with the
    // same findings and keeps what it ran.
    let injected = Api::<Pod>::namespaced(install.client.clone(), ns)
        .create(
            &PostParams::default(),
            &pod(
                "app",
                &[
                    ("fiso.io/inject", "true"),
                    ("fiso.io/flows", "orders,undecodable"),
                    ("fiso.io/links", "crm"),
                ],
            ),
        )
        .await
        .expect("creating the pod");
    let configmaps: Api<ConfigMap> = Api::namespaced(install.client.clone(), ns);
    let rendered_from = "FlowDefinition/orders@1,FlowDefinition/undecodable@1,LinkTarget/crm@1";
    let cm = wait_for(
        &configmaps,
        &mounted_configmap(&injected),
        &format!("rendered from {rendered_from}"),
        |c: Option<&ConfigMap>| {
            c.is_some_and(|c| {
                c.annotations()
                    .get("fiso.io/rendered-from")
                    .map(String::as_str)
                    == Some(rendered_from)
            })
        },
    )
    .await
    .expect("ConfigMap");
    let data = cm.data.clone().expect("data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "flow-orders.yaml",
            "flow-undecodable.yaml",
            "link-config.yaml"
        ],
        "{cm:?}"
    );
    let flow_file: Value = serde_yaml_ng::from_str(&data["flow-orders.yaml"]).expect("flow YAML");
    assert_eq!(flow_file["name"], "orders");
    let flow_file: Value =
        serde_yaml_ng::from_str(&data["flow-undecodable.yaml"]).expect("flow YAML");
    assert_eq!(flow_file["name"], "undecodable");
    assert_eq!(flow_file["source"]["config"]["topic"], "orders");
    let link_file: Value = serde_yaml_ng::from_str(&data["link-config.yaml"]).expect("link YAML");
    assert_eq!(link_file["targets"][0]["name"], "crm");

    // Fixing it is a new generation that decodes.
    undecodable
        .patch(
            "undecodable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "source": {"config": {"topic": null, "maxBodySize": "1MiB"}},
                "sink": {"config": {"timeout": "5s"}},
            }})),
        )
        .await
        .expect("fixing the flow");
    let fixed = wait_for_phase(&flows, "undecodable", Phase::Ready).await;
    assert_eq!(fixed.observed_generation, Some(2));

    // Fixing the spec is a new generation, which the status follows.
    flows
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"transform": {"fields": {"total": "data.price * 2"}}}})),
        )
        .await
        .expect("fixing the flow");
    let fixed = wait_for_phase(&flows, "broken", Phase::Ready).await;
    assert_eq!(fixed.observed_generation, Some(2));

    // Transitions are Kubernetes events: the failure a Warning, the fix Normal. The operator
    // publishes them after the status write the wait above saw, so they are waited for too.
    let reasons = |events: &[Event]| -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let expected = [("Warning", "Invalid"), ("Normal", "Valid")];
    let events = fiso_e2e::eventually(K8S_DEADLINE, || async {
        let events = events_about(&install.client, ns, "broken").await;
        let seen = reasons(&events);
        expected
            .iter()
            .all(|(t, r)| seen.iter().any(|(st, sr)| st == t && sr == r))
            .then_some(events)
    })
    .await;
    let events = match events {
        Some(events) => events,
        None => panic!(
            "expected {expected:?}, got {:?}",
            reasons(&events_about(&install.client, ns, "broken").await)
        ),
    };
    assert!(events
        .iter()
        .all(|e| e.reporting_controller.as_deref() == Some("fiso-operator")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_the_operator_ca_injects_opted_in_pods_once() {
    let install = Install::new("webhook", &[]).await;
    let operator = install.start_operator("fiso-operator-0").await;
    // Registered through the chart's own MutatingWebhookConfiguration, whose caBundle the
    // operator filled with the CA it generated and stored in its Secret.
    let ca = install.wait_for_ca_bundle().await;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    install.register_webhook(operator.webhook_addr).await;
    let mwc = install
        .webhook_configurations()
        .get(&install.fullname())
        .await
        .expect("webhook configuration");
    let hook = &mwc.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(
        hook.client_config.ca_bundle.as_ref().map(|b| &b.0),
        Some(&ca.clone().into_bytes()),
        "re-applying the chart kept the caBundle"
    );
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));

    let ns = &install.app.name;
    let client = &install.client;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "crm-token"},
                "stringData": {"token": "s3cret"}
            }))
            .unwrap(),
        )
        .await
        .expect("secret");
    create(
        &Api::<LinkTarget>::namespaced(client.clone(), ns),
        &link_yaml("crm", "crm-token"),
    )
    .await;
    create(
        &Api::<FlowDefinition>::namespaced(client.clone(), ns),
        &flow_yaml("orders", "http://localhost:8080/orders"),
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let annotated = pods
        .create(
            &PostParams::default(),
            &pod(
                "app",
                &[
                    ("fiso.io/inject", "true"),
                    ("fiso.io/flows", "orders"),
                    ("fiso.io/links", "crm"),
                ],
            ),
        )
        .await
        .expect("creating the annotated pod");
    assert!(
        is_injected(&annotated),
        "{:?}",
        annotated.metadata.annotations
    );
    let spec = annotated.spec.as_ref().expect("spec");
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["app", "fiso"],
        "1.20: the sidecar is a regular container"
    );
    let sidecar = &spec.containers[1];
    assert_eq!(
        sidecar.image.as_deref(),
        Some("ghcr.io/lsm/fiso:0.1.0"),
        "FISO_LINK_IMAGE from the chart"
    );
    let ports: Vec<(Option<&str>, i32)> = sidecar
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(ports, [(Some("proxy"), 3500), (Some("metrics"), 9090)]);
    let env: BTreeMap<&str, &str> = sidecar
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
        .collect();
    assert_eq!(env.get("FISO_CONFIG_DIR"), Some(&"/etc/fiso/flows"));
    assert_eq!(
        env.get("FISO_LINK_CONFIG"),
        Some(&"/etc/fiso/link/config.yaml")
    );
    let volumes = spec.volumes.as_ref().expect("volumes");
    let config_volume = volumes
        .iter()
        .find_map(|v| v.config_map.as_ref())
        .expect("a ConfigMap volume");
    let configmap = config_volume.name.clone();
    assert!(configmap.starts_with("fiso-"), "{configmap}");
    assert!(
        volumes
            .iter()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("crm-token")),
        "the LinkTarget's Secret is mounted: {volumes:?}"
    );
    let mounts: Vec<&str> = sidecar
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/etc/fiso/flows"), "{mounts:?}");
    assert!(mounts.contains(&"/etc/fiso/link"), "{mounts:?}");
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("/etc/fiso/secrets/crm-token")),
        "{mounts:?}"
    );
    assert!(annotated.labels().contains_key("fiso.io/selection"));
    // Its image does not exist: the pod is only an object.
    assert_eq!(
        annotated.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );

    let plain = pods
        .create(&PostParams::default(), &pod("plain", &[]))
        .await
        .expect("creating a pod without the annotation");
    assert!(!is_injected(&plain));
    assert_eq!(plain.spec.as_ref().unwrap().containers.len(), 1);
    assert!(plain
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .all(|v| v.config_map.is_none()));

    // A second admission of the injected pod (re-created from what the API server stored) is
    // a no-op: still exactly one sidecar and its two config volumes (flows, link config).
    let mut again = serde_json::to_value(&annotated).unwrap();
    let meta = again["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(k);
    }
    meta.insert("name".into(), "app-again".into());
    again.as_object_mut().unwrap().remove("status");
    let again: Pod = serde_json::from_value(again).unwrap();
    let again = pods
        .create(&PostParams::default(), &again)
        .await
        .expect("re-creating the injected pod");
    let spec = again.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers.iter().filter(|c| c.name == "fiso").count(),
        1
    );
    assert_eq!(
        spec.volumes
            .iter()
            .flatten()
            .filter(|v| v.config_map.is_some())
            .count(),
        2
    );

    let metrics = operator.metrics().await;
    assert!(
        metrics.value("fiso_webhook_admissions_total", &[("result", "injected")]) >= 1.0,
        "webhook metrics count the injection"
    );
}

/// `sidecar.mode=auto` (the chart's default) reads the API server's `/version` at start: this
/// 1.20 server has no native sidecars, so pods get a regular container. `native` forced on it
/// is refused at start with the reason, before the webhook serves anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_mode_follows_the_api_server() {
    let (install, operator) = install_with_webhook("mode").await;
    let listening = operator
        .logs()
        .lines()
        .into_iter()
        .find(|l| l.is("sidecar-injection webhook listening"))
        .expect("the webhook logged how it listens");
    assert_eq!(
        listening.str_field("requested_mode"),
        Some("auto"),
        "{}",
        listening.raw
    );
    assert_eq!(
        listening.str_field("mode"),
        Some("container"),
        "{}",
        listening.raw
    );
    assert!(
        listening
            .str_field("server")
            .is_some_and(|v| v.starts_with("v1.20.")),
        "{}",
        listening.raw
    );

    let pods: Api<Pod> = Api::namespaced(install.client.clone(), &install.app.name);
    let injected = pods
        .create(
            &PostParams::default(),
            &pod("app", &[("fiso.io/inject", "true")]),
        )
        .await
        .expect("the annotated pod is admitted");
    assert!(is_injected(&injected));
    let spec = injected.spec.as_ref().expect("spec");
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app", "fiso"], "a regular container");
    assert!(spec.init_containers.is_none(), "{:?}", spec.init_containers);
    assert_eq!(spec.containers[1].restart_policy, None);

    let (status, logs) = install
        .run_operator_to_exit("fiso-operator-native", &["sidecar.mode=native"])
        .await;
    assert_eq!(status.code(), Some(1), "{}", logs.tail(20));
    let stopped = logs
        .lines()
        .into_iter()
        .find(|l| l.is("fiso-operator stopped"))
        .unwrap_or_else(|| panic!("no `fiso-operator stopped` line:\n{}", logs.tail(20)));
    assert_eq!(stopped.level(), Some("ERROR"));
    let error = stopped.str_field("error").unwrap_or_default();
    for part in ["FISO_SIDECAR_MODE is `native`", "v1.20.", "1.29", "`auto`"] {
        assert!(error.contains(part), "`{part}` in: {error}");
    }
    assert!(
        !logs
            .lines()
            .iter()
            .any(|l| l.is("webhook listening (POST /mutate)")),
        "nothing was served:\n{}",
        logs.tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmaps_are_rendered_owned_rerendered_and_garbage_collected() {
    let (install, operator) = install_with_webhook("render").await;
    let ns = &install.app.name;
    let client = &install.client;
    let flows: Api<FlowDefinition> = Api::namespaced(client.clone(), ns);
    let links: Api<LinkTarget> = Api::namespaced(client.clone(), ns);
    let flow = create(&flows, &flow_yaml("orders", "http://localhost:8080/orders")).await;
    let link = create(&links, &link_yaml("crm", "crm-token")).await;

    let injected = Api::<Pod>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &pod(
                "app",
                &[
                    ("fiso.io/inject", "true"),
                    ("fiso.io/flows", "orders"),
                    ("fiso.io/links", "crm"),
                ],
            ),
        )
        .await
        .expect("creating the pod");
    let name = mounted_configmap(&injected);

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = wait_for(&configmaps, &name, "rendered", |c: Option<&ConfigMap>| {
        c.is_some()
    })
    .await
    .expect("ConfigMap");
    let data = cm.data.clone().expect("data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["flow-orders.yaml", "link-config.yaml"]);
    let flow_file: Value = serde_yaml_ng::from_str(&data["flow-orders.yaml"]).expect("flow YAML");
    assert_eq!(flow_file["name"], "orders");
    assert_eq!(
        flow_file["sink"]["config"]["url"],
        "http://localhost:8080/orders"
    );
    let link_file: Value = serde_yaml_ng::from_str(&data["link-config.yaml"]).expect("link YAML");
    let target = &link_file["targets"][0];
    assert_eq!(target["name"], "crm");
    assert_eq!(
        target["auth"]["secretRef"],
        json!({"filePath": "/etc/fiso/secrets/crm-token/token"}),
        "the Secret is referenced as a mounted file, never copied"
    );
    assert!(!data.values().any(|v| v.contains("s3cret")));
    // The rendered files are exactly what the data plane loads: `fiso validate` accepts them.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("link")).unwrap();
    std::fs::write(
        dir.path().join("flows/orders.yaml"),
        &data["flow-orders.yaml"],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("link/config.yaml"),
        &data["link-config.yaml"],
    )
    .unwrap();
    run(
        std::process::Command::new(fiso_bin())
            .arg("validate")
            .arg(dir.path()),
        None,
    );

    let mut owners: Vec<(String, String, String)> = cm
        .owner_references()
        .iter()
        .map(|o| (o.api_version.clone(), o.kind.clone(), o.uid.clone()))
        .collect();
    owners.sort();
    let mut expected = vec![
        (
            "fiso.io/v1alpha1".to_owned(),
            "FlowDefinition".to_owned(),
            flow.uid().unwrap(),
        ),
        (
            "fiso.io/v1alpha1".to_owned(),
            "LinkTarget".to_owned(),
            link.uid().unwrap(),
        ),
    ];
    expected.sort();
    assert_eq!(owners, expected);

    // The FlowDefinition says it was rendered.
    let status = wait_for(
        &flows,
        "orders",
        "Rendered",
        |f: Option<&FlowDefinition>| {
            f.and_then(|f| f.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Rendered" && c.status == "True")
            })
        },
    )
    .await;
    assert!(status.is_some());

    // A spec change re-renders every ConfigMap that includes the resource.
    flows
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"sink": {"config": {"url": "http://localhost:9999/v2"}}}}),
            ),
        )
        .await
        .expect("changing the flow");
    wait_for(
        &configmaps,
        &name,
        "re-rendered with the new sink",
        |c: Option<&ConfigMap>| {
            c.and_then(|c| c.data.as_ref())
                .and_then(|d| d.get("flow-orders.yaml"))
                .is_some_and(|f| f.contains("http://localhost:9999/v2"))
        },
    )
    .await;

    // With the operator stopped, only the garbage collector (kube-controller-manager) can
    // remove the ConfigMap: it does once every owner is gone.
    assert!(operator.terminate().await.success());
    flows
        .delete("orders", &DeleteParams::default())
        .await
        .expect("deleting the flow");
    links
        .delete("crm", &DeleteParams::default())
        .await
        .expect("deleting the link target");
    wait_for(
        &configmaps,
        &name,
        "garbage-collected",
        |c: Option<&ConfigMap>| c.is_none(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_leader_reconciles() {
    let install = Install::new("leader", &[]).await;
    let a = install.start_operator("fiso-operator-a").await;
    let b = install.start_operator("fiso-operator-b").await;
    let leases: Api<Lease> = Api::namespaced(install.client.clone(), install.release());
    let lease_name = format!("{}-leader", install.fullname());
    let holder = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default()
    };
    let lease = wait_for(&leases, &lease_name, "held", |l: Option<&Lease>| {
        l.is_some_and(|l| !holder(l).is_empty())
    })
    .await
    .expect("lease");
    let (leader, follower) = if holder(&lease).starts_with("fiso-operator-a-") {
        (a, b)
    } else {
        (b, a)
    };
    assert!(holder(&lease).starts_with(&format!("{}-", leader.pod_name)));
    wait_leader_gauge(&leader, true).await;
    assert!(!follower.is_leader().await);

    let ns = &install.app.name;
    let flows: Api<FlowDefinition> = Api::namespaced(install.client.clone(), ns);
    create(&flows, &flow_yaml("orders", "http://localhost:8080/orders")).await;
    wait_for_phase(&flows, "orders", Phase::Ready).await;

    let reconciles = |m: &fiso_e2e::Metrics| {
        m.value(
            "fiso_operator_reconcile_total",
            &[("kind", "FlowDefinition"), ("result", "success")],
        )
    };
    assert!(reconciles(&leader.metrics().await) >= 1.0);
    assert_eq!(
        reconciles(&follower.metrics().await),
        0.0,
        "the follower reconciles nothing"
    );
    let events = events_about(&install.client, ns, "orders").await;
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(
            e.reporting_instance.as_deref(),
            Some(leader.pod_name.as_str()),
            "{e:?}"
        );
    }

    // The leader steps down on SIGTERM and releases the Lease; the follower takes over and
    // reconciles the next change.
    let old_leader = leader.pod_name.clone();
    assert!(leader.terminate().await.success());
    let prefix = format!("{}-", follower.pod_name);
    wait_for(
        &leases,
        &lease_name,
        "taken over",
        move |l: Option<&Lease>| l.is_some_and(|l| holder(l).starts_with(&prefix)),
    )
    .await;
    wait_leader_gauge(&follower, true).await;
    flows
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"sink": {"config": {"url": "http://localhost:8080/v2"}}}}),
            ),
        )
        .await
        .expect("changing the flow");
    let status = wait_for_phase(&flows, "orders", Phase::Ready).await;
    assert_eq!(status.observed_generation, Some(2));
    assert!(reconciles(&follower.metrics().await) >= 1.0);
    assert_ne!(old_leader, follower.pod_name);
}

async fn wait_leader_gauge(operator: &OperatorProcess, leader: bool) {
    let reached = fiso_e2e::eventually(K8S_DEADLINE, || async {
        (operator.is_leader().await == leader).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "{} never reported leader={leader}",
        operator.pod_name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fiso_export_output_applies_and_becomes_ready() {
    let install = Install::new("export", &[]).await;
    let _operator = install.start_operator("fiso-operator-0").await;
    let ns = &install.app.name;
    let project = tempfile::tempdir().unwrap();
    run(
        std::process::Command::new(fiso_bin())
            .args(["init", "--defaults"])
            .current_dir(project.path()),
        None,
    );
    // An app: its module is shipped in a ConfigMap next to its WasmApp.
    let apps_dir = project.path().join("fiso/apps");
    std::fs::create_dir_all(&apps_dir).unwrap();
    std::fs::copy(fiso_e2e::guests::build("fn", &[]), apps_dir.join("fn.wasm")).unwrap();
    std::fs::write(
        apps_dir.join("apps.yaml"),
        "apps:\n  - {name: enrich, module: fn.wasm, execution: pooled}\n",
    )
    .unwrap();
    let manifests = run(
        std::process::Command::new(fiso_bin())
            .args(["export", "--namespace", ns])
            .current_dir(project.path()),
        None,
    );
    // As a user would: client-side `kubectl apply`, with kubectl's schema validation.
    let applied = run(kubectl().args(["apply", "-f", "-"]), Some(&manifests));
    assert!(
        applied.contains("flowdefinition.fiso.io/example-flow created"),
        "{applied}"
    );
    assert!(
        applied.contains("linktarget.fiso.io/external-api created"),
        "{applied}"
    );

    let flows: Api<FlowDefinition> = Api::namespaced(install.client.clone(), ns);
    let links: Api<LinkTarget> = Api::namespaced(install.client.clone(), ns);
    wait_for_phase(&flows, "example-flow", Phase::Ready).await;
    wait_for_phase(&links, "external-api", Phase::Ready).await;
    assert!(
        applied.contains("configmap/enrich-module created"),
        "{applied}"
    );
    let apps: Api<WasmApp> = Api::namespaced(install.client.clone(), ns);
    wait_for_phase(&apps, "enrich", Phase::Ready).await;
    let module = Api::<ConfigMap>::namespaced(install.client.clone(), ns)
        .get("enrich-module")
        .await
        .unwrap();
    assert_eq!(
        module.binary_data.unwrap()["module.wasm"].0,
        std::fs::read(apps_dir.join("fn.wasm")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_examples_work_together() {
    let (install, _operator) = install_with_webhook("examples").await;
    let ns = &install.app.name;
    let out = run(
        kubectl()
            .args(["apply", "--namespace", ns, "-f"])
            .arg(chart_dir().join("examples")),
        None,
    );
    assert!(
        out.contains("deployment.apps/order-service created"),
        "{out}"
    );

    let client = &install.client;
    wait_for_phase(
        &Api::<FlowDefinition>::namespaced(client.clone(), ns),
        "order-events",
        Phase::Ready,
    )
    .await;
    wait_for_phase(
        &Api::<LinkTarget>::namespaced(client.clone(), ns),
        "crm-api",
        Phase::Ready,
    )
    .await;

    // kube-controller-manager turns the Deployment into a ReplicaSet and a Pod, which the
    // webhook injects on creation.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = fiso_e2e::eventually(K8S_DEADLINE, || async {
        pods.list(&ListParams::default().labels("app=order-service"))
            .await
            .ok()
            .and_then(|l| l.items.into_iter().next())
    })
    .await
    .expect("the Deployment's pod is created");
    assert!(is_injected(&pod));
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.containers.iter().any(|c| c.name == "fiso"));
    assert!(spec.volumes.iter().flatten().any(|v| v
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
        == Some("crm-api-token")));
    let cm_name = spec
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .expect("config volume");
    let cm = wait_for(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &cm_name,
        "rendered",
        |c: Option<&ConfigMap>| c.is_some(),
    )
    .await
    .expect("ConfigMap");
    let data = cm.data.expect("data");
    assert!(data["flow-order-events.yaml"].contains("order_id"));
    assert!(data["link-config.yaml"].contains("/etc/fiso/secrets/crm-api-token/token"));
}

/// A WasmApp is validated like the other kinds, rendered into the ConfigMap of the pods that
/// select it (`fiso.io/apps`) as an apps file `fiso validate` accepts, and its module
/// ConfigMap is mounted into the sidecar where that file says the module is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_apps_are_validated_rendered_and_their_modules_mounted() {
    let (install, _operator) = install_with_webhook("apps").await;
    let ns = &install.app.name;
    let client = &install.client;
    let apps: Api<WasmApp> = Api::namespaced(client.clone(), ns);
    create(
        &apps,
        "apiVersion: fiso.io/v1alpha1\nkind: WasmApp\nmetadata: {name: enrich}\nspec:\n  moduleConfigMap: {name: enrich-wasm, key: app.wasm}\n  memoryMB: 32\n  healthCheck: /health\n",
    )
    .await;
    create(
        &apps,
        "apiVersion: fiso.io/v1alpha1\nkind: WasmApp\nmetadata: {name: nomodule}\nspec: {execution: pooled}\n",
    )
    .await;
    wait_for_phase(&apps, "enrich", Phase::Ready).await;
    let error = wait_for_phase(&apps, "nomodule", Phase::Error).await;
    assert!(
        error
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("the WasmApp has no module"),
        "{error:?}"
    );

    let injected = Api::<Pod>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &pod(
                "app",
                &[("fiso.io/inject", "true"), ("fiso.io/apps", "enrich")],
            ),
        )
        .await
        .expect("creating the pod");
    let spec = serde_json::to_value(injected.spec.as_ref().expect("spec")).unwrap();
    let module_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "fiso-module-enrich")
        .unwrap_or_else(|| panic!("no module volume in {spec:#}"));
    assert_eq!(
        module_volume["configMap"],
        json!({"name": "enrich-wasm", "items": [{"key": "app.wasm", "path": "app.wasm"}], "optional": false, "defaultMode": 420})
    );
    let sidecar = spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten()
        .find(|c| c["name"] == "fiso")
        .expect("the sidecar");
    assert!(
        sidecar["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "FISO_APPS_CONFIG", "value": "/etc/fiso/apps/config.yaml"})),
        "{sidecar:#}"
    );
    assert_eq!(
        sidecar["image"], "ghcr.io/lsm/fiso-wasmer:0.1.0",
        "an app runs on the Wasmer build (FISO_WASMER_IMAGE from the chart)"
    );

    let name = mounted_configmap(&injected);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = wait_for(&configmaps, &name, "rendered", |c: Option<&ConfigMap>| {
        c.is_some()
    })
    .await
    .expect("ConfigMap");
    let data = cm.data.clone().expect("data");
    let apps_file: Value = serde_yaml_ng::from_str(&data["apps-config.yaml"]).expect("apps YAML");
    assert_eq!(apps_file["apps"][0]["name"], "enrich");
    assert_eq!(
        apps_file["apps"][0]["module"],
        "/etc/fiso/modules/enrich/app.wasm"
    );
    assert_eq!(cm.annotations()["fiso.io/apps"], "enrich");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps/apps.yaml"), &data["apps-config.yaml"]).unwrap();
    run(
        std::process::Command::new(fiso_bin())
            .arg("validate")
            .arg(dir.path()),
        None,
    );
}
