//! The operator as the chart deploys it, but as a process of the test: [`Install`] applies the chart's
//! manifests (ServiceAccount, RBAC, Service, MutatingWebhookConfiguration) to a fresh operator
//! namespace, and [`Install::start_operator`] runs the `fiso-operator` binary as a child process
//! with the environment of the chart's Deployment, authenticated as the chart's ServiceAccount
//! (impersonation), so the chart's RBAC is what the operator really gets. The webhook listens on
//! 127.0.0.1:0; [`Install::register_webhook`] points the chart's MutatingWebhookConfiguration
//! at it with `clientConfig.url`, since the process is not behind the chart's Service
//! ([`crate::pods`] installs the chart for real, in pods).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};

use fiso_config::crd::{FlowDefinition, LinkTarget, Phase, ResourceStatus, WasmApp};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::client as http_client;
use crate::cluster::{self, delete_quietly, wait_for, TestNamespace, K8S_DEADLINE, TEST_LABEL};
use crate::infra::{chart_dir, helm, kubeconfig_path, run};
use crate::logs::Logs;
use crate::metrics::Metrics;

/// The chart values every test install uses: the webhook is reached at 127.0.0.1 (so its
/// certificate must name it), and it must only ever see the pods of its own test's application
/// namespace. The sidecar mode is the chart's default (`auto`, which follows the API server).
fn test_values(app_namespace: &str) -> Vec<String> {
    vec![
        "webhook.failurePolicy=Fail".into(),
        "webhook.certs.selfSigned.extraDnsNames={127.0.0.1}".into(),
        format!("webhook.namespaceSelector.matchLabels.{TEST_LABEL}={app_namespace}"),
    ]
}

/// The chart, "installed" for one test: an operator namespace holding the release and an
/// application namespace whose pods the webhook mutates. Cluster-scoped objects are named
/// after the release (the operator namespace's name) and deleted on drop.
///
/// The operator watches every namespace, so two tests' operators would both reconcile each
/// other's resources: an `Install` is exclusive within the test binary (held until dropped).
pub struct Install {
    pub client: Client,
    /// Release name and operator namespace.
    pub namespace: TestNamespace,
    /// Where the tests' FlowDefinitions, LinkTargets and Pods go.
    pub app: TestNamespace,
    /// Extra `--set` values of this install.
    values: Vec<String>,
    /// Kubeconfig impersonating the chart's ServiceAccount.
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _exclusive: OwnedMutexGuard<()>,
}

impl Install {
    /// Installs the CRDs, creates both namespaces and applies the chart's manifests (everything
    /// but the Deployment) with the test values (see `test_values`) plus `values`.
    pub async fn new(prefix: &str, values: &[&str]) -> Install {
        static ONE_AT_A_TIME: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
        // Each test has its own runtime: an async mutex, not a thread-blocking one.
        let exclusive = ONE_AT_A_TIME
            .get_or_init(Arc::default)
            .clone()
            .lock_owned()
            .await;
        cluster::install_crds();
        let client = cluster::client().await;
        let namespace = TestNamespace::create(&client, prefix).await;
        let app = TestNamespace::create(&client, &format!("{prefix}-app")).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut all_values = test_values(&app.name);
        all_values.extend(values.iter().map(|v| (*v).to_owned()));
        let install = Install {
            kubeconfig: dir.path().join("kubeconfig"),
            client,
            namespace,
            app,
            values: all_values,
            _dir: dir,
            _exclusive: exclusive,
        };
        let manifests: Vec<Value> = install
            .render(&[])
            .into_iter()
            .filter(|d| d["kind"] != "Deployment")
            .collect();
        cluster::apply(&install.namespace.name, &to_yaml(&manifests));
        write_impersonating_kubeconfig(
            &kubeconfig_path(),
            &format!(
                "system:serviceaccount:{}:{}",
                install.namespace.name,
                install.fullname()
            ),
            &install.kubeconfig,
        );
        install
    }

    /// The release name.
    pub fn release(&self) -> &str {
        &self.namespace.name
    }

    /// Name of every object of the release (`<release>-operator`).
    pub fn fullname(&self) -> String {
        format!("{}-operator", self.release())
    }

    /// `helm template` of the release with its values plus `extra` `--set` values.
    pub fn render(&self, extra: &[&str]) -> Vec<Value> {
        let mut cmd = helm();
        cmd.args(["template", self.release()])
            .arg(chart_dir())
            .args(["--namespace", self.release()]);
        for v in self
            .values
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            cmd.args(["--set", v]);
        }
        parse_documents(&run(&mut cmd, None))
    }

    /// The operator container's environment from the chart's Deployment (rendered with `extra`
    /// `--set` values), with the downward API resolved for a pod named `pod_name`.
    pub fn deployment_env(&self, pod_name: &str, extra: &[&str]) -> Vec<(String, String)> {
        let docs = self.render(extra);
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the chart renders a Deployment");
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("operator env");
        env.iter()
            .map(|e| {
                let name = e["name"].as_str().expect("env name").to_owned();
                let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                    (Value::String(v), _) => v.clone(),
                    (_, Value::String(path)) if path == "metadata.namespace" => {
                        self.release().to_owned()
                    }
                    (_, Value::String(path)) if path == "metadata.name" => pod_name.to_owned(),
                    (v, from) => panic!("env {name}: unsupported value {v} / {from}"),
                };
                (name, value)
            })
            .collect()
    }

    /// Starts `fiso-operator` as the chart's Deployment would run it in a pod named
    /// `pod_name`, listening on 127.0.0.1 ports chosen by the OS.
    pub async fn start_operator(&self, pod_name: &str) -> OperatorProcess {
        OperatorProcess::start(pod_name, self.operator_env(pod_name, &[])).await
    }

    /// Runs `fiso-operator` as [`Install::start_operator`] would, with `extra` `--set` values,
    /// for a start-up that must fail: waits (up to [`K8S_DEADLINE`]) for the process to exit and
    /// returns its status and logs.
    pub async fn run_operator_to_exit(&self, pod_name: &str, extra: &[&str]) -> (ExitStatus, Logs) {
        let (mut child, _, logs) = spawn_operator(self.operator_env(pod_name, extra));
        match tokio::time::timeout(K8S_DEADLINE, child.wait()).await {
            Ok(status) => (status.expect("waiting for fiso-operator"), logs),
            Err(_) => panic!(
                "fiso-operator {pod_name} was expected to exit but still runs\n{}",
                logs.tail(40)
            ),
        }
    }

    /// The environment of the chart's Deployment for `pod_name`, on 127.0.0.1 ports chosen by
    /// the OS, authenticated as the chart's ServiceAccount.
    fn operator_env(&self, pod_name: &str, extra: &[&str]) -> Vec<(String, String)> {
        let mut env = self.deployment_env(pod_name, extra);
        for (k, v) in [
            ("FISO_WEBHOOK_ADDR", "127.0.0.1:0"),
            ("FISO_HEALTH_ADDR", "127.0.0.1:0"),
            ("FISO_METRICS_ADDR", "127.0.0.1:0"),
        ] {
            let slot = env
                .iter_mut()
                .find(|(name, _)| name == k)
                .unwrap_or_else(|| panic!("the chart's Deployment does not set {k}"));
            slot.1 = v.to_owned();
        }
        env.push(("KUBECONFIG".into(), self.kubeconfig.display().to_string()));
        env
    }

    /// The chart's MutatingWebhookConfiguration.
    pub fn webhook_configurations(&self) -> Api<MutatingWebhookConfiguration> {
        Api::all(self.client.clone())
    }

    /// Waits for the operator to have generated its CA, stored it in the webhook Secret and
    /// written it into the chart's MutatingWebhookConfiguration; returns the CA (PEM).
    pub async fn wait_for_ca_bundle(&self) -> String {
        let secret_name = format!("{}-webhook-tls", self.fullname());
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), self.release());
        let secret = wait_for(
            &secrets,
            &secret_name,
            "holds ca.crt",
            |s: Option<&Secret>| {
                s.and_then(|s| s.data.as_ref())
                    .is_some_and(|d| d.contains_key("ca.crt"))
            },
        )
        .await
        .expect("secret");
        let ca = secret.data.expect("data")["ca.crt"].0.clone();
        let ca = String::from_utf8(ca).expect("PEM is text");
        let expected = ca.clone().into_bytes();
        wait_for(
            &self.webhook_configurations(),
            &self.fullname(),
            "caBundle is the operator's CA",
            move |m: Option<&MutatingWebhookConfiguration>| {
                m.and_then(|m| m.webhooks.as_ref()).is_some_and(|hooks| {
                    !hooks.is_empty()
                        && hooks.iter().all(|h| {
                            h.client_config.ca_bundle.as_ref().map(|b| &b.0) == Some(&expected)
                        })
                })
            },
        )
        .await;
        ca
    }

    /// Re-applies the chart's MutatingWebhookConfiguration rendered with
    /// `webhook.url=https://<addr>/mutate` (as a `helm upgrade` would), then waits until the API
    /// server really calls the webhook: a server-side dry run of an opted-in Pod comes back
    /// injected. The caBundle the operator set must survive the re-apply.
    pub async fn register_webhook(&self, addr: SocketAddr) {
        let url = format!("https://{addr}/mutate");
        let set = format!("webhook.url={url}");
        let docs: Vec<Value> = self
            .render(&[&set])
            .into_iter()
            .filter(|d| d["kind"] == "MutatingWebhookConfiguration")
            .collect();
        assert_eq!(docs.len(), 1, "one MutatingWebhookConfiguration");
        assert_eq!(docs[0]["webhooks"][0]["clientConfig"]["url"], url.as_str());
        cluster::apply(self.release(), &to_yaml(&docs));

        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.app.name);
        let probe: Pod = serde_json::from_value(json!({
            "metadata": {"name": "webhook-probe", "annotations": {"fiso.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
        }))
        .expect("probe pod");
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        // The API server picks the configuration change up asynchronously.
        let deadline = tokio::time::Instant::now() + K8S_DEADLINE;
        loop {
            let outcome = match pods.create(&dry_run, &probe).await {
                Ok(p) if is_injected(&p) => return,
                Ok(_) => "admitted without injection".to_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "the API server never called the webhook at {url}; last dry run: {outcome}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let name = self.fullname();
        for kind in [
            "mutatingwebhookconfiguration",
            "clusterrolebinding",
            "clusterrole",
        ] {
            delete_quietly(&[kind, &name]);
        }
    }
}

/// Whether the webhook injected `pod` (its `fiso.io/status` annotation).
/// The name of the ConfigMap an injected pod mounts (its data-plane config); panics when it
/// mounts none.
pub fn mounted_configmap(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find_map(|v| v.config_map.as_ref()))
        .map(|c| c.name.clone())
        .expect("the pod mounts its ConfigMap")
}

pub fn is_injected(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("fiso.io/status"))
        .is_some_and(|s| s == "injected")
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A multi-document YAML stream of `docs`, each written as JSON (JSON is YAML). Not through
/// `serde_yaml_ng`: with serde_json's `arbitrary_precision` (the workspace's), a
/// `serde_json::Number` serialises to any format but JSON as a map, so a port would become one.
fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("JSON"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A copy of `admin` whose users act as `user` (`as:`, Kubernetes impersonation).
fn write_impersonating_kubeconfig(admin: &Path, user: &str, to: &Path) {
    let text = std::fs::read_to_string(admin).expect("reading the kubeconfig");
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("kubeconfig");
    for u in config["users"].as_sequence_mut().expect("kubeconfig users") {
        u["user"]["as"] = serde_yaml_ng::Value::from(user);
    }
    std::fs::write(to, serde_yaml_ng::to_string(&config).expect("YAML")).expect("writing");
}

/// A running `fiso-operator`; killed when dropped (its logs are printed if the test failed).
pub struct OperatorProcess {
    pub pod_name: String,
    child: Child,
    pid: u32,
    logs: Logs,
    /// `/healthz`, `/readyz` and (the chart's ports collapsed onto one) `/metrics`.
    pub health_addr: SocketAddr,
    /// `POST /mutate` (TLS).
    pub webhook_addr: SocketAddr,
}

/// Spawns `fiso-operator` with exactly `env` (plus PATH and JSON logs), its stderr captured.
fn spawn_operator(env: Vec<(String, String)>) -> (Child, u32, Logs) {
    let mut cmd = Command::new(operator_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .env("FISO_LOG_FORMAT", "json")
        .env("FISO_LOG_LEVEL", "info");
    crate::process::captured(&mut cmd);
    let mut child = cmd.spawn().expect("spawning fiso-operator");
    let pid = child.id().expect("a running child has a pid");
    let logs = Logs::capture(child.stderr.take().expect("stderr is piped"));
    (child, pid, logs)
}

impl OperatorProcess {
    async fn start(pod_name: &str, env: Vec<(String, String)>) -> OperatorProcess {
        let (child, pid, logs) = spawn_operator(env);
        let addr = |message: &'static str| {
            let logs = logs.clone();
            async move {
                logs.wait_for(|l| l.is(message), K8S_DEADLINE)
                    .await
                    .and_then(|l| l.addr())
                    .unwrap_or_else(|e| panic!("fiso-operator did not log `{message}`: {e}"))
            }
        };
        let health_addr = addr("health listening (/healthz, /readyz)").await;
        let webhook_addr = addr("webhook listening (POST /mutate)").await;
        OperatorProcess {
            pod_name: pod_name.to_owned(),
            child,
            pid,
            logs,
            health_addr,
            webhook_addr,
        }
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The current `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let text = http_client()
            .get(format!("http://{}/metrics", self.health_addr))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        Metrics::parse(&text)
    }

    /// `fiso_operator_leader`: 1 while this replica runs the controllers.
    pub async fn is_leader(&self) -> bool {
        self.metrics().await.value("fiso_operator_leader", &[]) == 1.0
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, not
        // reaped before the wait below.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        match tokio::time::timeout(K8S_DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("waiting for fiso-operator"),
            Err(_) => panic!(
                "fiso-operator did not exit after SIGTERM\n{}",
                self.logs.tail(40)
            ),
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fiso-operator {} (pid {}) logs:\n{}",
                self.pod_name,
                self.pid,
                self.logs.tail(200)
            );
        }
    }
}

/// The `fiso-operator` binary, built once per test binary with the tests' profile.
pub fn operator_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| crate::bin::build_bin("fiso-operator", "fiso-operator", &[]))
        .clone()
}

/// A FlowDefinition `name` (HTTP source on `/name`, HTTP sink `sink_url`) as YAML.
pub fn flow_yaml(name: &str, sink_url: &str) -> String {
    format!(
        r#"
apiVersion: fiso.io/v1alpha1
kind: FlowDefinition
metadata:
  name: {name}
spec:
  source:
    type: http
    config:
      listenAddr: ":8081"
      path: /{name}
  sink:
    type: http
    config:
      url: "{sink_url}"
"#
    )
}

/// Creates the object `yaml` describes; panics when the API server refuses it.
pub async fn create<K>(api: &Api<K>, yaml: &str) -> K
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_yaml_ng::from_str(yaml).expect("test manifest");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating {}: {e}",
                obj.meta().name.as_deref().unwrap_or("?")
            )
        })
}

/// A Pod with one app container and `annotations`.
pub fn pod(name: &str, annotations: &[(&str, &str)]) -> Pod {
    let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    }))
    .expect("pod")
}

/// The status once `phase` is reached for the current generation.
pub async fn wait_for_phase<K>(api: &Api<K>, name: &str, phase: Phase) -> ResourceStatus
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + Sync + 'static + HasStatus,
{
    let found = wait_for(
        api,
        name,
        &format!("phase {phase:?} for its generation"),
        move |o: Option<&K>| {
            o.is_some_and(|o| {
                o.status().is_some_and(|s| {
                    s.phase == Some(phase) && s.observed_generation == o.meta().generation
                })
            })
        },
    )
    .await
    .expect("resource");
    found.status().cloned().expect("status")
}

/// Custom resources with a [`ResourceStatus`].
pub trait HasStatus {
    fn status(&self) -> Option<&ResourceStatus>;
}

impl HasStatus for FlowDefinition {
    fn status(&self) -> Option<&ResourceStatus> {
        self.status.as_ref()
    }
}

impl HasStatus for LinkTarget {
    fn status(&self) -> Option<&ResourceStatus> {
        self.status.as_ref()
    }
}

impl HasStatus for WasmApp {
    fn status(&self) -> Option<&ResourceStatus> {
        self.status.as_ref()
    }
}

/// A started install: chart manifests applied, one operator running, webhook registered.
pub async fn install_with_webhook(prefix: &str) -> (Install, OperatorProcess) {
    let install = Install::new(prefix, &[]).await;
    let operator = install.start_operator("fiso-operator-0").await;
    install.wait_for_ca_bundle().await;
    install.register_webhook(operator.webhook_addr).await;
    (install, operator)
}
