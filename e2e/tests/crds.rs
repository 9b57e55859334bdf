//! The CRDs of `crds/` on the real API server of `cargo xtask infra up` (kube-apiserver 1.20):
//! they are admitted, build their OpenAPI models without errors (1.20 logs "error building
//! openapi models ... has invalid property: anyOf" for `x-kubernetes-int-or-string` fields and
//! then merges server-side applies untyped), appear with their properties in `/openapi/v2`, and
//! `kubectl explain` describes them.
//!
//! The API server builds a CRD's models when the CRD changes, on the next request for its
//! resources, so a CRD that is already installed and unchanged proves nothing. The test installs
//! copies of both CRDs under an API group of its own, and a control copy in the old
//! int-or-string form, whose error must show up in the same log: the log is really read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fiso_e2e::cluster::{self, unique_name, TestNamespace, K8S_DEADLINE};
use fiso_e2e::eventually;
use fiso_e2e::infra::{apiserver_log_path, kubectl, run, workspace_root};
use serde_json::Value;

/// The CRD in `crds/<file>` as JSON.
fn checked_in(file: &str) -> Value {
    let path = workspace_root().join("crds").join(file);
    let text = std::fs::read_to_string(&path).expect("reading the CRD");
    serde_yaml_ng::from_str(&text).expect("CRD YAML")
}

/// `crd` served under API group `group` (so under its own name too).
fn in_group(mut crd: Value, group: &str) -> Value {
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .expect("plural")
        .to_owned();
    crd["metadata"] = serde_json::json!({"name": format!("{plural}.{group}")});
    crd["spec"]["group"] = group.into();
    crd
}

/// `node` with every untyped leaf written the way the config types declare it,
/// `x-kubernetes-int-or-string: true` (what the CRDs carried before).
fn with_int_or_string(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.remove("x-kubernetes-preserve-unknown-fields") == Some(Value::Bool(true))
                && !map.contains_key("type")
            {
                map.insert("x-kubernetes-int-or-string".into(), true.into());
            }
            map.values_mut().for_each(with_int_or_string);
        }
        Value::Array(items) => items.iter_mut().for_each(with_int_or_string),
        _ => {}
    }
}

/// CRDs created by the test, deleted (with their resources) when dropped.
struct Crds(Vec<String>);

impl Crds {
    fn apply(crds: &[Value]) -> Crds {
        let names: Vec<String> = crds
            .iter()
            .map(|c| c["metadata"]["name"].as_str().expect("name").to_owned())
            .collect();
        let created = Crds(names.clone());
        let stream: Vec<String> = crds.iter().map(Value::to_string).collect();
        run(
            kubectl().args(["apply", "--server-side", "-f", "-"]),
            Some(&stream.join("\n---\n")),
        );
        let mut wait = kubectl();
        wait.args(["wait", "--for=condition=Established", "--timeout=60s"]);
        wait.args(names.iter().map(|n| format!("crd/{n}")));
        run(&mut wait, None);
        created
    }
}

impl Drop for Crds {
    /// Waits for the deletion: until its group is gone, `kubectl` resolves a kind such as
    /// `flowdefinition` to any group serving it.
    fn drop(&mut self) {
        let _ = kubectl()
            .args([
                "delete",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ])
            .args(self.0.iter().map(|n| format!("crd/{n}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The API server log from byte `from` on.
fn log_since(from: u64) -> String {
    let bytes = std::fs::read(apiserver_log_path()).expect("reading the API server log");
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The lines of `log` in which the API server failed to build the OpenAPI models of `crd`,
/// with the `ERROR $root...` detail lines that follow each.
fn openapi_errors(log: &str, crd: &str) -> Vec<String> {
    let header = format!("error building openapi models for {crd}:");
    let mut found = Vec::new();
    let mut in_error = false;
    for line in log.lines() {
        if line.contains(&header) {
            in_error = true;
        } else if !line.starts_with("ERROR ") {
            in_error = false;
        }
        if in_error {
            found.push(line.to_owned());
        }
    }
    found
}

/// The properties of the schema at `path` (dot-separated property names) under `schema`.
fn property_names(schema: &Value, path: &str) -> Vec<String> {
    let node = path
        .split('.')
        .filter(|p| !p.is_empty())
        .fold(schema, |node, p| &node["properties"][p]);
    node["properties"]
        .as_object()
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_publish_cleanly_and_kubectl_explain_describes_them() {
    // The project's own CRDs, as users install them.
    cluster::install_crds();
    // With the group: the copies below (or another run's, being deleted) serve the same kinds.
    // `kubectl explain` reads the published OpenAPI document, which a freshly installed CRD
    // reaches some time after it is `Established`.
    let explained = eventually(K8S_DEADLINE, || async {
        let out = kubectl()
            .args(["explain", "flowdefinition.spec.source"])
            .arg("--api-version=fiso.io/v1alpha1")
            .output()
            .expect("running kubectl explain");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .expect("kubectl explain never found FlowDefinition in the published OpenAPI document");
    for field in ["config", "type", "Where events come from"] {
        assert!(explained.contains(field), "`{field}` in:\n{explained}");
    }

    // Copies under groups of this test run, so the API server builds their models now.
    let group = format!("{}.fiso.io", unique_name("crds"));
    let control_group = format!("control-{group}");
    let flows = in_group(checked_in("flowdefinitions.fiso.io.yaml"), &group);
    let links = in_group(checked_in("linktargets.fiso.io.yaml"), &group);
    let mut control = in_group(checked_in("flowdefinitions.fiso.io.yaml"), &control_group);
    with_int_or_string(&mut control);
    assert!(
        control.to_string().contains("x-kubernetes-int-or-string"),
        "the control copy has int-or-string fields"
    );
    let names: Vec<String> = [&flows, &links]
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let control_name = control["metadata"]["name"].as_str().unwrap().to_owned();

    let log = apiserver_log_path();
    let mark = std::fs::metadata(&log).expect("API server log").len();
    let _crds = Crds::apply(&[flows, links]);

    // Server-side apply uses the models: resources with both integers and strings in the
    // formerly int-or-string fields, then swapped, merge typed.
    let client = cluster::client().await;
    let ns = TestNamespace::create(&client, "crds").await;
    let resources = |offset: &str, size: &str| {
        format!(
            r#"
apiVersion: {group}/v1alpha1
kind: FlowDefinition
metadata: {{name: orders}}
spec:
  source: {{type: kafka, config: {{cluster: main, topic: orders, startOffset: {offset}}}}}
  sink: {{type: http, config: {{url: "http://localhost:8080/x", maxResponseBodySize: {size}}}}}
---
apiVersion: {group}/v1alpha1
kind: LinkTarget
metadata: {{name: crm}}
spec:
  protocol: https
  host: api.example.com
  interceptors:
  - {{type: wasm, config: {{module: /m.wasm, memoryLimit: {size}, maxOutputSize: {offset}}}}}
"#
        )
    };
    cluster::apply(&ns.name, &resources("42", "\"1MiB\""));
    cluster::apply(&ns.name, &resources("earliest", "65536"));
    let stored: Value = serde_json::from_str(&run(
        kubectl()
            .args(["get", &format!("flowdefinitions.{group}"), "orders"])
            .args(["--namespace", &ns.name, "-o", "json"]),
        None,
    ))
    .expect("JSON");
    assert_eq!(
        stored["spec"]["source"]["config"]["startOffset"],
        "earliest"
    );
    assert_eq!(
        stored["spec"]["sink"]["config"]["maxResponseBodySize"],
        65536
    );

    // The control: the old int-or-string form fails on this server, in this log.
    let _control = Crds::apply(&[control]);
    run(
        kubectl().args(["get", &format!("flowdefinitions.{control_group}"), "-A"]),
        None,
    );
    let started = Instant::now();
    while openapi_errors(&log_since(mark), &control_name).is_empty() {
        assert!(
            started.elapsed() < K8S_DEADLINE,
            "the control CRD's openapi error never reached {}; is it this API server's log?",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let control_errors = openapi_errors(&log_since(mark), &control_name);
    assert!(
        control_errors
            .iter()
            .any(|l| l.contains("startOffset has invalid property: anyOf")),
        "{control_errors:#?}"
    );

    let since = log_since(mark);
    for name in &names {
        let errors = openapi_errors(&since, name);
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
    }

    // The published OpenAPI v2 document describes both kinds (published asynchronously).
    let reversed: Vec<&str> = group.split('.').rev().collect();
    let prefix = format!("{}.v1alpha1", reversed.join("."));
    let mut definitions = BTreeMap::new();
    let started = Instant::now();
    while definitions.len() < 2 {
        let doc: Value =
            serde_json::from_str(&run(kubectl().args(["get", "--raw", "/openapi/v2"]), None))
                .expect("OpenAPI JSON");
        for kind in ["FlowDefinition", "LinkTarget"] {
            if let Some(schema) = doc["definitions"].get(format!("{prefix}.{kind}")) {
                definitions.insert(kind, schema.clone());
            }
        }
        assert!(
            started.elapsed() < K8S_DEADLINE,
            "/openapi/v2 has only {:?} of {prefix}",
            definitions.keys()
        );
        if definitions.len() < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let flow = &definitions["FlowDefinition"];
    assert_eq!(property_names(flow, "spec.source"), ["config", "type"]);
    let source_config = property_names(flow, "spec.source.config");
    for field in ["startOffset", "maxBodySize", "topic", "listenAddr"] {
        assert!(
            source_config.iter().any(|f| f == field),
            "{source_config:?}"
        );
    }
    assert!(
        flow["properties"]["spec"]["properties"]["source"]["properties"]["config"]["properties"]
            ["startOffset"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("integer offset")),
        "{flow}"
    );
    let link_spec = property_names(&definitions["LinkTarget"], "spec");
    for field in ["host", "protocol", "auth", "interceptors"] {
        assert!(link_spec.iter().any(|f| f == field), "{link_spec:?}");
    }

    // kubectl explain reads that document.
    let api_version = format!("--api-version={group}/v1alpha1");
    let explained = run(
        kubectl().args([
            "explain",
            "flowdefinitions.spec.source.config",
            &api_version,
        ]),
        None,
    );
    for field in ["startOffset", "maxBodySize", "integer offset"] {
        assert!(explained.contains(field), "`{field}` in:\n{explained}");
    }
    let explained = run(
        kubectl().args(["explain", "linktargets.spec", &api_version]),
        None,
    );
    for field in ["host", "protocol", "interceptors"] {
        assert!(explained.contains(field), "`{field}` in:\n{explained}");
    }
}
