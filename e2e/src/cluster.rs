//! The Kubernetes test cluster of `cargo xtask infra up` (etcd + kube-apiserver 1.20 +
//! kube-controller-manager, and the node's kubelet): a client, per-test namespaces, the CRDs, and waits on
//! object conditions with deadlines (watch-based, never sleeps).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, Condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::infra::{kubeconfig_path, kubectl, run, workspace_root};

/// How long a cluster-side effect may take before a test gives up (garbage collection and
/// leader changes involve controllers' own resync and lease periods). A deadline, not an
/// expectation.
pub const K8S_DEADLINE: Duration = Duration::from_secs(90);

/// Label on every namespace a test creates; its value is the namespace's own name, so a
/// webhook registered by a test can select exactly its test's namespace.
pub const TEST_LABEL: &str = "fiso-e2e";

/// Field manager of the tests' own server-side applies.
pub const FIELD_MANAGER: &str = "fiso-e2e";

/// A client for the test cluster, as the cluster admin.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    Client::try_from(config).expect("building the Kubernetes client")
}

/// `e2e-<prefix>-<random>`: a DNS-1123 label unique per test run.
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = (0..6)
        .map(|_| char::from_digit(rand_u32() % 36, 36).expect("digit < 36"))
        .collect();
    format!("e2e-{prefix}-{suffix}")
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per instance: enough for unique names.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish() as u32
}

/// Installs the CRDs from `crds/` (server-side apply, so concurrent tests agree) and waits
/// until all are established.
pub fn install_crds() {
    let dir = workspace_root().join("crds");
    run(
        kubectl()
            .args(["apply", "--server-side", "--force-conflicts"])
            .args(["--field-manager", FIELD_MANAGER, "-f"])
            .arg(&dir),
        None,
    );
    run(
        kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/flowdefinitions.fiso.io",
            "crd/linktargets.fiso.io",
            "crd/wasmapps.fiso.io",
        ]),
        None,
    );
}

/// `kubectl apply --server-side` of `yaml` (namespaced objects without a namespace go to
/// `namespace`).
pub fn apply(namespace: &str, yaml: &str) -> String {
    run(
        kubectl()
            .args(["apply", "--server-side", "--field-manager", FIELD_MANAGER])
            .args(["--namespace", namespace, "-f", "-"]),
        Some(yaml),
    )
}

/// A namespace for one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` labelled `fiso-e2e=<name>`, and waits for its `default`
    /// ServiceAccount (created by kube-controller-manager; Pods cannot be created before).
    pub async fn create(client: &Client, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(TEST_LABEL.to_owned(), name.clone())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let ns = TestNamespace { name };
        wait_for(
            &Api::<ServiceAccount>::namespaced(client.clone(), &ns.name),
            "default",
            "the default ServiceAccount exists",
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await;
        ns
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        delete_quietly(&["namespace", &self.name]);
    }
}

/// `kubectl delete <args> --ignore-not-found --wait=false`, ignoring failures (cleanup).
pub fn delete_quietly(args: &[&str]) {
    let _ = kubectl()
        .arg("delete")
        .args(args)
        .args(["--ignore-not-found", "--wait=false"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Waits (watching the object) until `cond` holds for `name`, up to [`K8S_DEADLINE`]; returns
/// the object (`None` when the condition was about its absence). Panics with the object's
/// last state otherwise.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + serde::Serialize + 'static,
{
    let started = std::time::Instant::now();
    match tokio::time::timeout(K8S_DEADLINE, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(found)) => {
            eprintln!("{name}: `{what}` after {:.1?}", started.elapsed());
            found
        }
        Ok(Err(e)) => panic!("watching {name} for `{what}`: {e}"),
        Err(_) => {
            let last = api
                .get_opt(name)
                .await
                .map(|o| {
                    o.map_or("<absent>".to_owned(), |o| {
                        serde_json::to_string_pretty(&o).unwrap_or_default()
                    })
                })
                .unwrap_or_else(|e| format!("<cannot read: {e}>"));
            panic!("{name}: not `{what}` within {K8S_DEADLINE:?}; last state:\n{last}")
        }
    }
}
