//! Operator timings for `cargo xtask bench` (issue: "time from `kubectl apply` of a
//! FlowDefinition to its ConfigMap existing and status `Ready`; webhook admission latency"),
//! against the real API server of `cargo xtask infra up`. `cargo test` runs it with a few
//! resources (every one must become Ready and rendered); the bench runs it with 50
//! (`FISO_RELIABILITY=full`) and reads the figures from `<FISO_RELIABILITY_DIR>/operator.json`.

use std::time::{Duration, Instant};

use fiso_config::crd::{FlowDefinition, Phase};
use fiso_e2e::cluster::wait_for;
use fiso_e2e::operator::{
    create, flow_yaml, install_with_webhook, is_injected, mounted_configmap, pod, wait_for_phase,
};
use fiso_e2e::reliability::{record, Scale};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

/// `p`-th percentile (nearest rank) of `samples`, in milliseconds.
fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_definitions_become_ready_and_rendered() {
    let scale = Scale::from_env();
    let n = scale.pick(5, 50);
    let (install, _operator) = install_with_webhook("timings").await;
    let ns = &install.app.name;
    let client = &install.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let flows: Api<FlowDefinition> = Api::namespaced(client.clone(), ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);

    // Admission: creating an opted-in pod (the webhook mutates it) against a plain pod (the
    // API server alone), alternating.
    let (mut injected_create, mut plain_create) = (Vec::new(), Vec::new());
    let mut configmap_of = Vec::new();
    for i in 0..n {
        let flow = format!("flow-{i}");
        let started = Instant::now();
        let created = pods
            .create(
                &PostParams::default(),
                &pod(
                    &format!("app-{i}"),
                    &[("fiso.io/inject", "true"), ("fiso.io/flows", &flow)],
                ),
            )
            .await
            .expect("creating an opted-in pod");
        injected_create.push(started.elapsed());
        assert!(is_injected(&created), "app-{i} was not injected");
        configmap_of.push(mounted_configmap(&created));
        let started = Instant::now();
        pods.create(&PostParams::default(), &pod(&format!("plain-{i}"), &[]))
            .await
            .expect("creating a plain pod");
        plain_create.push(started.elapsed());
    }

    // Apply → Ready and rendered into the pod's ConfigMap.
    let mut ready = Vec::new();
    let mut rendered = Vec::new();
    for (i, cm) in configmap_of.iter().enumerate() {
        let name = format!("flow-{i}");
        let started = Instant::now();
        create(&flows, &flow_yaml(&name, "http://localhost:8080/in")).await;
        wait_for_phase(&flows, &name, Phase::Ready).await;
        ready.push(started.elapsed());
        let key = format!("flow-{name}.yaml");
        wait_for(
            &configmaps,
            cm,
            "renders the flow",
            |c: Option<&ConfigMap>| {
                c.and_then(|c| c.data.as_ref())
                    .is_some_and(|d| d.contains_key(&key))
            },
        )
        .await
        .expect("ConfigMap");
        rendered.push(started.elapsed());
    }
    record(
        "operator",
        scale,
        json!({
            "resources": n,
            "apply_to_ready_ms": {"p50": percentile_ms(&ready, 50.0), "p99": percentile_ms(&ready, 99.0)},
            "apply_to_configmap_ms": {"p50": percentile_ms(&rendered, 50.0), "p99": percentile_ms(&rendered, 99.0)},
            "pod_create_injected_ms": {"p50": percentile_ms(&injected_create, 50.0), "p99": percentile_ms(&injected_create, 99.0)},
            "pod_create_plain_ms": {"p50": percentile_ms(&plain_create, 50.0), "p99": percentile_ms(&plain_create, 99.0)},
        }),
    );
}
