//! The node of `cargo xtask infra up` (containerd, CNI bridge, kubelet, kube-proxy,
//! kube-scheduler joined to the test control plane): pods run from the busybox image built on
//! this machine, their IPs and ClusterIP Services answer from the host and from other pods,
//! pods reach the API server in-cluster (the `kubernetes` Service and their ServiceAccount
//! token), and `kubectl logs` / `kubectl exec` go through the API server to the kubelet.

use std::time::Duration;

use fiso_e2e::cluster::{self, apply, wait_for, TestNamespace};
use fiso_e2e::infra::{kubeconfig_path, kubectl, run, var, BUSYBOX_IMAGE_VAR, NODE_VAR};
use fiso_e2e::{eventually, DEADLINE};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// What the web pod serves.
const PAGE: &str = "hello from the web pod";

fn pod_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_finished(pod: Option<&Pod>) -> bool {
    let phase = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Runs `script` (busybox `sh -c`) in a pod of `namespace` until it exits; returns its output,
/// read back with `kubectl logs`. Panics with the output when it fails.
async fn run_in_pod(client: &kube::Client, namespace: &str, name: &str, script: &str) -> String {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": var(BUSYBOX_IMAGE_VAR),
                "command": ["/bin/busybox", "sh", "-c", script],
            }],
        },
    });
    apply(namespace, &pod.to_string());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let done = wait_for(&pods, name, "finished", pod_finished)
        .await
        .expect("the pod exists");
    let logs = run(kubectl().args(["logs", "-n", namespace, name]), None);
    let phase = done.status.and_then(|s| s.phase);
    assert_eq!(
        phase.as_deref(),
        Some("Succeeded"),
        "pod {name} failed; its output:\n{logs}"
    );
    logs
}

#[tokio::test]
async fn a_pod_answers_on_its_ip_and_through_a_service_from_the_host_and_from_pods() {
    let client = cluster::client().await;
    let ns = TestNamespace::create(&client, "node-web").await;
    let image = var(BUSYBOX_IMAGE_VAR);
    let script = format!(
        "mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && echo serving && \
         exec /bin/busybox httpd -f -p 8080 -h /tmp/www"
    );
    apply(
        &ns.name,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {image}
    command: [/bin/busybox, sh, -c, "{script}"]
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{protocol: TCP, port: 80, targetPort: 8080}}]
"#
        ),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let web = wait_for(&pods, "web", "Ready", pod_ready)
        .await
        .expect("the pod exists");
    assert_eq!(
        web.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(var(NODE_VAR).as_str()),
        "scheduled onto the node"
    );
    let pod_ip = web
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a Ready pod has an IP");
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let cluster_ip = services
        .get("web")
        .await
        .expect("reading the Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP Service has an IP");

    // Until kube-proxy has programmed a ClusterIP, connections to it follow the default route,
    // where they may hang or be answered by whatever is there: each attempt on a new
    // connection, given up after a second.
    let http = fiso_e2e::client_builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())?
                .text()
                .await
        }
    };
    let url = format!("http://{pod_ip}:8080/");
    let body = get(url.clone())
        .await
        .unwrap_or_else(|e| panic!("GET {url} from the host: {e}"));
    assert_eq!(body.trim(), PAGE, "the pod IP from the host");
    // kube-proxy programs the Service some time after the endpoint turns ready; nothing in
    // the API says when, so the Service itself is asked until it answers.
    let url = format!("http://{cluster_ip}/");
    let body = eventually(DEADLINE, || async { get(url.clone()).await.ok() })
        .await
        .unwrap_or_else(|| panic!("GET {url} from the host: no answer within {DEADLINE:?}"));
    assert_eq!(body.trim(), PAGE, "the Service from the host");

    let from_pod = run_in_pod(
        &client,
        &ns.name,
        "client",
        &format!("/bin/busybox wget -q -O - http://{cluster_ip}/"),
    )
    .await;
    assert_eq!(from_pod.trim(), PAGE, "the Service from another pod");

    // Both go from the API server to the kubelet (InternalIP, client certificates both ways).
    let logs = run(kubectl().args(["logs", "-n", &ns.name, "web"]), None);
    assert_eq!(logs.trim(), "serving", "kubectl logs");
    let exec = run(
        kubectl().args(["exec", "-n", &ns.name, "web", "--"]).args([
            "/bin/busybox",
            "cat",
            "/tmp/www/index.html",
        ]),
        None,
    );
    assert_eq!(exec.trim(), PAGE, "kubectl exec");
}

#[tokio::test]
async fn pods_reach_the_api_server_through_the_kubernetes_service() {
    let client = cluster::client().await;
    let ns = TestNamespace::create(&client, "node-api").await;
    // The pod's ServiceAccount may read pods, and nothing else.
    apply(
        &ns.name,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: default}]
"#,
    );
    // What an in-cluster client does: the Service's address from the environment, the token
    // from the mounted ServiceAccount volume. (busybox's wget checks no certificates, and
    // crashes on HTTPS with `-T`; the serving certificate's validity for 10.0.0.1 is checked
    // from the host below.)
    let script = format!(
        "token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token) && \
         echo \"service: $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\" && \
         /bin/busybox wget -q -O - --no-check-certificate \
           --header \"Authorization: Bearer $token\" \
           https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/{}/pods/api-client",
        ns.name
    );
    let out = run_in_pod(&client, &ns.name, "api-client", &script).await;
    let (service, body) = out.split_once('\n').expect("two parts of output");
    assert_eq!(service, "service: 10.0.0.1:443");
    let pod: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(pod["metadata"]["name"], "api-client", "{pod}");
    assert_eq!(
        pod["spec"]["serviceAccountName"], "default",
        "the token is the pod's own"
    );

    // From the host through the same Service, verifying the serving certificate.
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("reading the kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("the kubeconfig");
    config.cluster_url = "https://10.0.0.1:443".parse().expect("a URL");
    let via_service = kube::Client::try_from(config).expect("a client");
    let version = via_service
        .apiserver_version()
        .await
        .expect("the API server through https://10.0.0.1, its certificate valid for it");
    assert_eq!(version.git_version, "v1.20.2");
}
