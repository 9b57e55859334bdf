//! Fiso as it is deployed: images in the test node's containerd, the chart installed with
//! `helm install`, pods run by kubelet. Used by `tests/pods.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::OnceLock;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::wait::Condition;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::Value;

use crate::bin::cargo_command;
use crate::cluster::K8S_DEADLINE;
use crate::infra::{chart_dir, helm, run};

/// The images' tag: the workspace version, which is also the chart's appVersion.
pub const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");
/// The test kit (`e2e/testkit`): upstream, sink and application of the suite's pods.
pub const TESTKIT_IMAGE: &str = concat!("fiso.local/fiso-testkit:", env!("CARGO_PKG_VERSION"));

/// Builds the data-plane, operator and test-kit images from this workspace's binaries (the
/// tests' profile) and imports them into the node, once per test binary.
pub fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Under `cargo xtask ci`, that xtask and the binaries its build made; else cargo builds
        // both.
        let mut cmd = match std::env::var_os("FISO_E2E_XTASK") {
            Some(xtask) => {
                let mut cmd = std::process::Command::new(xtask);
                cmd.current_dir(crate::infra::workspace_root()).arg("image");
                cmd
            }
            None => {
                let mut cmd = cargo_command();
                cmd.args(["run", "--quiet", "-p", "xtask", "--", "image"]);
                cmd
            }
        };
        match std::env::var_os(crate::bin::BIN_DIR_ENV) {
            Some(dir) => cmd.arg("--bin-dir").arg(dir),
            None => cmd.args(["--profile", &crate::bin::test_profile()]),
        };
        cmd.args(["fiso", "operator", "testkit"])
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running cargo xtask image: {e}"));
        assert!(
            out.status.success(),
            "cargo xtask image failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
    });
}

/// A `helm install` of the chart, uninstalled (waiting for its pods to go) when dropped, so the
/// next test binary's operators are the only ones reconciling.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Release {
    /// `helm install <name> charts/fiso -n <namespace> --wait` with the images of [`images`].
    pub fn install(name: &str, namespace: &str, values: &[String]) -> Release {
        let mut cmd = helm();
        cmd.args(["install", name])
            .arg(chart_dir())
            .args(["--namespace", namespace, "--wait", "--timeout", "180s"])
            .args(["--set", "image.repository=fiso.local/fiso-operator"])
            .args(["--set", "sidecar.image.repository=fiso.local/fiso"]);
        for v in values {
            cmd.args(["--set", v]);
        }
        run(&mut cmd, None);
        Release {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm()
            .args(["uninstall", &self.name, "--namespace", &self.namespace])
            .args(["--wait", "--timeout", "60s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The pods of `namespace` matching `selector`.
pub async fn pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap_or_else(|e| panic!("listing pods {selector} in {namespace}: {e}"))
        .items
}

/// Waits (watching the label selection) until a pod matching `selector` satisfies `cond`;
/// returns it. Panics with the pods' last states after [`K8S_DEADLINE`].
pub async fn wait_for_pod(
    client: &Client,
    namespace: &str,
    selector: &str,
    what: &str,
    cond: impl Fn(&Pod) -> bool,
) -> Pod {
    let started = std::time::Instant::now();
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let changes = watcher(api, watcher::Config::default().labels(selector)).applied_objects();
    let found = tokio::time::timeout(K8S_DEADLINE, async {
        let mut changes = std::pin::pin!(changes);
        while let Some(pod) = changes.try_next().await.expect("watching pods") {
            if cond(&pod) {
                return pod;
            }
        }
        unreachable!("a pod watch does not end")
    })
    .await;
    match found {
        Ok(pod) => {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            eprintln!("pod {name}: `{what}` after {:.1?}", started.elapsed());
            pod
        }
        Err(_) => {
            let states: Vec<Value> = pods(client, namespace, selector)
                .await
                .iter()
                .map(|p| serde_json::json!({"name": p.metadata.name, "status": p.status}))
                .collect();
            panic!(
                "{selector} in {namespace}: no pod `{what}` within {K8S_DEADLINE:?}; pods:\n{}",
                serde_json::to_string_pretty(&states).unwrap_or_default()
            )
        }
    }
}

/// Kubernetes' `Ready` condition of a pod.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The container named `name` is running.
pub fn is_running(pod: &Pod, name: &str) -> bool {
    container_statuses(pod)
        .get(name)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// Restart counts by container.
pub fn restarts(pod: &Pod) -> BTreeMap<String, i32> {
    container_statuses(pod)
        .into_iter()
        .map(|(name, s)| (name, s.restart_count))
        .collect()
}

fn container_statuses(pod: &Pod) -> BTreeMap<String, k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|s| (s.name.clone(), s.clone()))
        .collect()
}

/// `podIP:port`.
pub fn pod_addr(pod: &Pod, port: u16) -> SocketAddr {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or_else(|| panic!("pod {:?} has no IP", pod.metadata.name));
    SocketAddr::new(ip.parse().expect("a pod IP"), port)
}

/// What a test-kit pod recorded (see `e2e/testkit`).
pub async fn recorded(http: &reqwest::Client, kit: SocketAddr) -> Vec<Value> {
    let answer = http
        .get(format!("http://{kit}/_recorded"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("reading what {kit} recorded: {e}"));
    let body = answer.bytes().await.expect("reading what the kit recorded");
    serde_json::from_slice(&body).expect("a JSON array")
}

/// Condition: a Deployment has all its replicas ready.
pub fn deployment_ready() -> impl Condition<k8s_openapi::api::apps::v1::Deployment> {
    |d: Option<&k8s_openapi::api::apps::v1::Deployment>| {
        d.is_some_and(|d| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                == want
        })
    }
}
