//! The Helm chart (`charts/fiso`): `helm lint`, `helm template` in every configuration, and the
//! rendered manifests accepted by a real API server (`kubectl apply --dry-run=server`).
//! helm, kubectl and the API server come from `cargo xtask infra up`.

use std::collections::BTreeSet;

use fiso_e2e::infra::{chart_dir, helm, kubectl, run};
use serde_json::Value;

/// `helm template <release> charts/fiso -n <namespace> <args>`, parsed into documents.
fn template(release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let out = run(
        helm()
            .args(["template", release])
            .arg(chart_dir())
            .args(["--namespace", namespace])
            .args(args),
        None,
    );
    parse_documents(&out)
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm output is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> BTreeSet<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered; kinds: {:?}", kinds(docs)))
}

fn env_of(deployment: &Value) -> Vec<(String, Value)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("operator env")
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

fn env_value(deployment: &Value, name: &str) -> Option<Value> {
    env_of(deployment)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Every `(apiGroup, resource, verb)` a role grants.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    out.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn grant(group: &str, resource: &str, verb: &str) -> (String, String, String) {
    (group.to_owned(), resource.to_owned(), verb.to_owned())
}

#[test]
fn chart_passes_helm_lint() {
    run(helm().args(["lint", "--strict"]).arg(chart_dir()), None);
    // The documented non-default configurations lint too.
    for set in [
        "operator.mode=webhook-only",
        "webhook.certs.mode=certManager",
        "webhook.certs.mode=secret,webhook.certs.existingSecret=tls,webhook.certs.caBundle=PEM",
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true,dashboards.enabled=true,alerts.enabled=true",
    ] {
        run(
            helm()
                .args(["lint", "--strict"])
                .arg(chart_dir())
                .args(["--set", set]),
            None,
        );
    }
}

#[test]
fn default_install_is_the_seed_layout() {
    let docs = template("fiso", "fiso-system", &[]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "MutatingWebhookConfiguration",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
        .into(),
    );
    for doc in &docs {
        assert_eq!(doc["metadata"]["name"], "fiso-operator", "{doc}");
    }

    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for (name, value) in [
        ("FISO_OPERATOR_MODE", "controller"),
        ("FISO_METRICS_ADDR", ":8080"),
        ("FISO_HEALTH_ADDR", ":9090"),
        ("FISO_ENABLE_LEADER_ELECTION", "true"),
        ("FISO_LINK_IMAGE", "ghcr.io/lsm/fiso:0.1.0"),
        ("FISO_WASMER_IMAGE", "ghcr.io/lsm/fiso-wasmer:0.1.0"),
        ("FISO_WEBHOOK_ADDR", ":8443"),
        ("FISO_SIDECAR_MODE", "auto"),
        ("FISO_WEBHOOK_SELF_SIGNED", "true"),
        ("FISO_WEBHOOK_SERVICE", "fiso-operator"),
        ("FISO_WEBHOOK_CONFIGURATION", "fiso-operator"),
    ] {
        assert_eq!(
            env_value(deployment, name),
            Some(Value::from(value)),
            "{name}"
        );
    }
    assert_eq!(
        env_value(deployment, "FISO_NAMESPACE").unwrap()["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["serviceAccountName"], "fiso-operator");

    let service = find(&docs, "Service");
    let webhook_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .expect("webhook port");
    assert_eq!(webhook_port["port"], 443);
    assert_eq!(webhook_port["targetPort"], "webhook");

    let mwc = find(&docs, "MutatingWebhookConfiguration");
    let webhook = &mwc["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(
        webhook["admissionReviewVersions"],
        serde_json::json!(["v1"])
    );
    assert_eq!(
        webhook["clientConfig"]["service"],
        serde_json::json!({"name": "fiso-operator", "namespace": "fiso-system", "port": 443, "path": "/mutate"})
    );
    assert!(
        webhook["clientConfig"].get("caBundle").is_none(),
        "self-signed: the operator sets the caBundle"
    );
    assert_eq!(
        webhook["rules"],
        serde_json::json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"], "scope": "Namespaced"}])
    );
    let excluded = &webhook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert_eq!(excluded["operator"], "NotIn");
    assert!(excluded["values"]
        .as_array()
        .unwrap()
        .contains(&"fiso-system".into()));

    // The seed's permission table, plus what the controllers and the webhook use; nothing that
    // writes the custom resources themselves.
    let cluster = grants(find(&docs, "ClusterRole"));
    for g in [
        grant("fiso.io", "flowdefinitions", "get"),
        grant("fiso.io", "flowdefinitions", "list"),
        grant("fiso.io", "flowdefinitions", "watch"),
        grant("fiso.io", "linktargets", "get"),
        grant("fiso.io", "linktargets", "list"),
        grant("fiso.io", "linktargets", "watch"),
        grant("fiso.io", "flowdefinitions/status", "patch"),
        grant("fiso.io", "linktargets/status", "patch"),
        grant("", "configmaps", "create"),
        grant("", "configmaps", "patch"),
        grant("", "pods", "list"),
        grant("", "pods", "watch"),
        grant("events.k8s.io", "events", "create"),
        grant(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "update",
        ),
    ] {
        assert!(cluster.contains(&g), "ClusterRole lacks {g:?}: {cluster:?}");
    }
    for (group, resource, verb) in &cluster {
        assert!(
            !(group == "fiso.io"
                && !resource.ends_with("/status")
                && ["create", "update", "patch", "delete"].contains(&verb.as_str())),
            "the operator never writes {resource} ({verb})"
        );
        assert_ne!(
            resource, "secrets",
            "Secrets only through the namespaced Role"
        );
        assert_ne!(verb, "*");
    }
    let mwc_rule = find(&docs, "ClusterRole")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0] == "mutatingwebhookconfigurations")
        .unwrap();
    assert_eq!(
        mwc_rule["resourceNames"],
        serde_json::json!(["fiso-operator"])
    );

    let role = find(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "fiso-system");
    let namespaced = grants(role);
    assert!(namespaced.contains(&grant("coordination.k8s.io", "leases", "update")));
    assert!(namespaced.contains(&grant("", "secrets", "get")));
}

#[test]
fn values_switch_modes() {
    // Webhook outside the cluster (tests) and a namespace opt-in.
    let docs = template(
        "t",
        "ops",
        &[
            "--set",
            "webhook.url=https://127.0.0.1:8443/mutate,webhook.failurePolicy=Fail",
            "--set",
            "webhook.namespaceSelector.matchLabels.team=a,sidecar.mode=container",
        ],
    );
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        webhook["clientConfig"],
        serde_json::json!({"url": "https://127.0.0.1:8443/mutate"})
    );
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(
        webhook["namespaceSelector"]["matchLabels"],
        serde_json::json!({"team": "a"})
    );
    assert_eq!(
        env_value(find(&docs, "Deployment"), "FISO_SIDECAR_MODE"),
        Some("container".into())
    );

    // cert-manager: a Certificate whose Secret the operator mounts; CA injected by annotation.
    let docs = template("t", "ops", &["--set", "webhook.certs.mode=certManager"]);
    assert!(kinds(&docs).is_superset(&["Certificate", "Issuer"].into()));
    let mwc = find(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "ops/t-operator"
    );
    let deployment = find(&docs, "Deployment");
    assert_eq!(
        env_value(deployment, "FISO_TLS_CERT_FILE"),
        Some("/etc/fiso/tls/tls.crt".into())
    );
    assert_eq!(env_value(deployment, "FISO_WEBHOOK_SELF_SIGNED"), None);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        find(&docs, "Certificate")["spec"]["secretName"]
    );
    assert!(
        !grants(find(&docs, "ClusterRole"))
            .iter()
            .any(|(_, r, _)| r == "mutatingwebhookconfigurations"),
        "the operator only touches the webhook in self-signed mode"
    );

    // An existing Secret and its CA.
    let docs = template(
        "t",
        "ops",
        &[
            "--set",
            "webhook.certs.mode=secret,webhook.certs.existingSecret=my-tls",
            "--set-string",
            "webhook.certs.caBundle=-----BEGIN CERTIFICATE-----",
        ],
    );
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        webhook["clientConfig"]["caBundle"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"
    );

    // webhook-only: no controllers, so no leases, ConfigMaps, pods or status.
    let docs = template(
        "t",
        "ops",
        &["--set", "operator.mode=webhook-only,replicaCount=3"],
    );
    let cluster = grants(find(&docs, "ClusterRole"));
    assert!(cluster.contains(&grant("fiso.io", "linktargets", "get")));
    assert!(!cluster
        .iter()
        .any(|(_, r, _)| r == "configmaps" || r == "pods" || r.ends_with("/status")));
    assert!(!grants(find(&docs, "Role"))
        .iter()
        .any(|(_, r, _)| r == "leases"));
    assert_eq!(find(&docs, "Deployment")["spec"]["replicas"], 3);

    let docs = template(
        "t",
        "ops",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    assert_eq!(
        find(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "metrics"
    );
}

/// Dashboards, alerts and the PodMonitor are off by default (see
/// `default_install_is_the_seed_layout`) and follow their values when on; `tests/monitoring.rs`
/// checks what they contain against promtool and a real scrape.
#[test]
fn monitoring_objects_follow_their_values() {
    let docs = template(
        "fiso",
        "fiso-system",
        &[
            "--set",
            "dashboards.enabled=true,dashboards.label=my_dashboards,dashboards.labelValue=yes,dashboards.namespace=grafana,dashboards.annotations.grafana_folder=Fiso",
        ],
    );
    let boards: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
    let names: BTreeSet<&str> = boards
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fiso-operator-dashboard-flow",
            "fiso-operator-dashboard-link",
            "fiso-operator-dashboard-operator",
        ]
        .into()
    );
    for board in &boards {
        let meta = &board["metadata"];
        assert_eq!(meta["namespace"], "grafana");
        assert_eq!(meta["labels"]["my_dashboards"], "yes");
        assert_eq!(meta["annotations"]["grafana_folder"], "Fiso");
        let (key, text) = board["data"].as_object().unwrap().iter().next().unwrap();
        let json: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
        assert_eq!(
            key,
            &format!("{}.json", json["uid"].as_str().unwrap()),
            "one dashboard per ConfigMap, named by its uid"
        );
    }

    // The PodMonitor finds injected pods by the label the webhook adds, and keeps only the
    // sidecar container's port.
    let docs = template(
        "fiso",
        "fiso-system",
        &["--set", "metrics.podMonitor.enabled=true"],
    );
    let monitor = &find(&docs, "PodMonitor")["spec"];
    assert_eq!(
        monitor["selector"]["matchExpressions"],
        serde_json::json!([{"key": "fiso.io/selection", "operator": "Exists"}])
    );
    assert_eq!(
        monitor["namespaceSelector"],
        serde_json::json!({"any": true})
    );
    let endpoint = &monitor["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["relabelings"][0]["regex"], "fiso");
    let docs = template(
        "fiso",
        "fiso-system",
        &[
            "--set",
            "metrics.podMonitor.enabled=true,metrics.podMonitor.namespaces={shop}",
        ],
    );
    assert_eq!(
        find(&docs, "PodMonitor")["spec"]["namespaceSelector"],
        serde_json::json!({"matchNames": ["shop"]})
    );

    let alert_names = |docs: &[Value]| -> BTreeSet<String> {
        find(docs, "PrometheusRule")["spec"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .map(|r| r["alert"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = alert_names(&template(
        "fiso",
        "fiso-system",
        &["--set", "alerts.enabled=true"],
    ));
    assert!(all.contains("FisoFlowDown") && all.contains("FisoOperatorNoLeader"));
    let docs = template(
        "fiso",
        "fiso-system",
        &[
            "--set",
            "alerts.enabled=true,alerts.disabled={FisoFlowDown},alerts.ruleLabels.team=shop,alerts.labels.release=prom",
        ],
    );
    let rule = find(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let names = alert_names(&docs);
    assert_eq!(names.len(), all.len() - 1);
    assert!(!names.contains("FisoFlowDown"));
    for r in rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        assert_eq!(r["labels"]["team"], "shop", "{r}");
        assert!(r["labels"]["severity"].is_string(), "{r}");
    }
    // A webhook-only operator holds no lease: no leader alerts.
    let names = alert_names(&template(
        "fiso",
        "fiso-system",
        &["--set", "alerts.enabled=true,operator.mode=webhook-only"],
    ));
    assert!(!names.iter().any(|n| n.contains("Leader")), "{names:?}");
    assert!(names.contains("FisoWebhookErrors"));
}

#[test]
fn inconsistent_values_are_refused() {
    for (set, expected) in [
        (
            "replicaCount=2,leaderElection.enabled=false",
            "needs leaderElection.enabled=true",
        ),
        (
            "webhook.certs.mode=secret",
            "is required when webhook.certs.mode=secret",
        ),
        ("sidecar.mode=sidecar", "/sidecar/mode"),
        ("webhook.failurePolicy=Sometimes", "/webhook/failurePolicy"),
    ] {
        let out = helm()
            .args(["template", "t"])
            .arg(chart_dir())
            .args(["--set", set])
            .output()
            .expect("running helm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(stderr.contains(expected), "{set}: {stderr}");
    }
}

/// The API server accepts everything the chart renders, CRDs included, in a fresh namespace.
#[test]
fn rendered_chart_passes_server_side_dry_run() {
    let namespace = format!("e2e-chart-{:08x}", rand_suffix());
    run(kubectl().args(["create", "namespace", &namespace]), None);
    let _cleanup = DeleteNamespaceOnDrop(namespace.clone());
    for extra in [
        &[][..],
        &["--set", "operator.mode=webhook-only,sidecar.mode=container"][..],
        &[
            "--set",
            "webhook.url=https://127.0.0.1:8443/mutate,replicaCount=2",
        ][..],
    ] {
        let rendered = run(
            helm()
                .args(["template", &namespace])
                .arg(chart_dir())
                .args(["--namespace", &namespace, "--include-crds"])
                .args(extra),
            None,
        );
        let out = run(
            kubectl().args([
                "apply",
                "--dry-run=server",
                "--namespace",
                &namespace,
                "-f",
                "-",
            ]),
            Some(&rendered),
        );
        assert!(
            out.contains("mutatingwebhookconfiguration.admissionregistration.k8s.io/"),
            "{out}"
        );
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

struct DeleteNamespaceOnDrop(String);

impl Drop for DeleteNamespaceOnDrop {
    fn drop(&mut self) {
        let _ = kubectl()
            .args(["delete", "namespace", &self.0, "--wait=false"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}
