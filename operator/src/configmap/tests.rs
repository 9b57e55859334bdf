//! Rendering selections into ConfigMaps: files, owners, omissions, secrets, the rendered-from annotation.

use super::*;
use crate::testing::{app, flow, link, render, resource, undecoded};
use pretty_assertions::assert_eq;

fn selection(flows: &[&str], links: &[&str]) -> Selection {
    Selection {
        namespace: "apps".into(),
        flows: flows.iter().map(|s| (*s).to_owned()).collect(),
        links: links.iter().map(|s| (*s).to_owned()).collect(),
        apps: Default::default(),
    }
}

#[test]
fn flow_file_is_the_local_file() {
    let fd = flow("orders", "http://orders:8080/in");
    let r = render(&selection(&["orders"], &[]), [&fd], [], []).unwrap();
    assert_eq!(
        r.data,
        BTreeMap::from([
            (
                LINK_CONFIG_KEY.to_owned(),
                "listenAddr: 127.0.0.1:3500\nmetricsAddr: :9091\ntargets: []\n".to_owned()
            ),
            (
                "flow-orders.yaml".to_owned(),
                "name: orders
source:
  type: http
  config:
    listenAddr: :8081
    path: /orders
sink:
  type: http
  config:
    url: http://orders:8080/in
    method: POST
"
                .to_owned()
            )
        ])
    );
    // What `fiso flow` loads from it is the resource's spec, named after the resource.
    let parsed =
        fiso_config::parse::parse_flow("flows/orders.yaml", &r.data["flow-orders.yaml"]).unwrap();
    assert_eq!(parsed, validation::flow_config(&fd));
    assert_eq!(
        r.sources,
        vec![Source {
            kind: SourceKind::Flow,
            name: "orders".into(),
            generation: 1
        }]
    );
    assert!(r.omitted.is_empty() && r.conflicts.is_empty());
}

#[test]
fn owner_references_name_every_included_resource() {
    let fd = flow("orders", "http://orders:8080/in");
    let lt = link("crm", "api.example.com");
    let r = render(&selection(&["orders"], &["crm"]), [&fd], [&lt], []).unwrap();
    assert_eq!(
        r.owner_references,
        vec![
            OwnerReference {
                api_version: "fiso.io/v1alpha1".into(),
                kind: "FlowDefinition".into(),
                name: "orders".into(),
                uid: "uid-orders".into(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            },
            OwnerReference {
                api_version: "fiso.io/v1alpha1".into(),
                kind: "LinkTarget".into(),
                name: "crm".into(),
                uid: "uid-crm".into(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            },
        ]
    );
}

#[test]
fn link_config_rewrites_secret_refs_to_mounted_files() {
    let crm: LinkTarget = resource(
        r#"
apiVersion: fiso.io/v1alpha1
kind: LinkTarget
metadata:
  name: crm
spec:
  host: api.salesforce.com
  auth:
    type: bearer
    secretRef:
      name: crm-credentials
      key: token
  retry:
    maxAttempts: 5
    initialInterval: 200ms
"#,
    );
    let stripe = link("stripe", "api.stripe.com");
    let r = render(&selection(&[], &["crm", "stripe"]), [], [&crm, &stripe], []).unwrap();
    assert_eq!(
        r.data[LINK_CONFIG_KEY],
        "listenAddr: 127.0.0.1:3500
metricsAddr: :9091
targets:
- name: crm
  protocol: https
  host: api.salesforce.com
  auth:
    type: bearer
    secretRef:
      filePath: /etc/fiso/secrets/crm-credentials/token
  retry:
    maxAttempts: 5
    initialInterval: 200ms
- name: stripe
  protocol: https
  host: api.stripe.com
"
    );
    assert_eq!(r.data.len(), 1);
    // The rendered file passes the file-level validation `fiso link` runs.
    let cfg = fiso_config::parse::parse_link("link/config.yaml", &r.data[LINK_CONFIG_KEY]).unwrap();
    assert!(fiso_config::validate::validate_link(&cfg).is_empty());
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    assert_eq!(
        secrets_for([&crm, &stripe]),
        BTreeSet::from([("crm-credentials".to_owned(), "token".to_owned())])
    );
}

#[test]
fn missing_resources_are_omitted_invalid_flows_rendered_and_both_reported() {
    let good = flow("good", "http://svc:8080/in");
    let bad = flow("bad", "not a url");
    let other_ns = {
        let mut f = flow("elsewhere", "http://svc:8080/in");
        f.metadata.namespace = Some("other".into());
        f
    };
    let r = render(
        &selection(&["bad", "elsewhere", "good", "missing"], &["nolink"]),
        [&good, &bad, &other_ns],
        [],
        [],
    )
    .unwrap();
    assert_eq!(
        r.data.keys().collect::<Vec<_>>(),
        vec!["flow-bad.yaml", "flow-good.yaml", LINK_CONFIG_KEY],
        "the sidecar gets the invalid flow too: it refuses it, keeps the last good version and \
         reports why on /readyz"
    );
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    assert_eq!(
        r.data[LINK_CONFIG_KEY],
        "listenAddr: 127.0.0.1:3500\nmetricsAddr: :9091\ntargets: []\n"
    );
    assert_eq!(r.owner_references.len(), 2);
    let omitted: Vec<String> = r.omitted.iter().map(ToString::to_string).collect();
    assert_eq!(omitted.len(), 4, "{omitted:?}");
    assert!(
        omitted[0].starts_with("FlowDefinition `bad` is invalid: spec.sink.config.url: "),
        "{omitted:?}"
    );
    assert_eq!(omitted[1], "FlowDefinition `elsewhere` does not exist");
    assert_eq!(omitted[2], "FlowDefinition `missing` does not exist");
    assert_eq!(omitted[3], "LinkTarget `nolink` does not exist");
}

#[test]
fn a_flow_that_does_not_decode_is_rendered_as_written_a_link_target_left_out() {
    let mut fd = undecoded(&flow("orders", "http://svc:8080/in"));
    fd.spec["source"]["config"]["topic"] = "orders".into();
    let mut lt = undecoded(&link("crm", "crm.example.com"));
    lt.spec["timeout"] = "soon".into();
    let r = super::render(&selection(&["orders"], &["crm"]), [&fd], [&lt], []).unwrap();

    // As any invalid flow: the sidecar refuses it with the same finding and keeps what it ran.
    let file: serde_json::Value = serde_yaml_ng::from_str(&r.data["flow-orders.yaml"]).unwrap();
    assert_eq!(file["name"], "orders", "named after the resource");
    assert_eq!(file["source"]["config"]["topic"], "orders", "as written");
    let refused = fiso_config::parse::parse_flow("flows/orders.yaml", &r.data["flow-orders.yaml"])
        .unwrap_err();
    assert_eq!(refused.0[0].path, "source.config.topic", "{refused}");
    assert_eq!(
        r.data[LINK_CONFIG_KEY],
        "listenAddr: 127.0.0.1:3500\nmetricsAddr: :9091\ntargets: []\n"
    );
    assert_eq!(format_sources(&r.sources), "FlowDefinition/orders@1");
    let omitted: Vec<String> = r.omitted.iter().map(ToString::to_string).collect();
    assert_eq!(omitted.len(), 2, "{omitted:?}");
    assert!(
        omitted[0].starts_with(
            "FlowDefinition `orders` is invalid: spec.source.config.topic: unknown field `topic`"
        ),
        "{omitted:?}"
    );
    assert!(
        omitted[1].starts_with("LinkTarget `crm` is invalid: spec.timeout: invalid value"),
        "{omitted:?}"
    );
}

#[test]
fn conflicts_between_selected_flows_are_reported() {
    // Both listen on :8081; same path → the shared HTTP server cannot route.
    let mut a = flow("a", "http://svc:8080/in");
    let mut b = flow("b", "http://svc:8080/in");
    for f in [&mut a, &mut b] {
        if let fiso_config::flow::SourceSpec::Http(c) = &mut f.spec.source {
            c.path = "/same".into();
        }
    }
    let r = render(&selection(&["a", "b"], &[]), [&a, &b], [], []).unwrap();
    assert_eq!(r.data.len(), 3, "both flows and the link config");
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
}

#[test]
fn clusters_of_the_same_name_stay_distinct() {
    let kafka = |name: &str, broker: &str| -> LinkTarget {
        resource(&format!(
            r#"
apiVersion: fiso.io/v1alpha1
kind: LinkTarget
metadata:
  name: {name}
spec:
  protocol: kafka
  kafka:
    cluster: main
    topic: t-{name}
    clusterConfig:
      brokers: ["{broker}"]
"#
        ))
    };
    let (a, b) = (kafka("a", "k1:9092"), kafka("b", "k2:9092"));
    let r = render(&selection(&[], &["a", "b"]), [], [&a, &b], []).unwrap();
    let cfg = fiso_config::parse::parse_link("l", &r.data[LINK_CONFIG_KEY]).unwrap();
    assert_eq!(
        cfg.kafka.as_ref().unwrap().clusters["main"].brokers,
        vec!["k1:9092"]
    );
    assert_eq!(cfg.targets[0].kafka.as_ref().unwrap().cluster_config, None);
    assert_eq!(
        cfg.targets[1]
            .kafka
            .as_ref()
            .unwrap()
            .cluster_config
            .as_ref()
            .unwrap()
            .brokers,
        vec!["k2:9092"]
    );
}

#[test]
fn configmap_describes_its_selection() {
    let fd = flow("orders", "http://orders:8080/in");
    let sel = selection(&["orders", "gone"], &[]);
    let r = render(&sel, [&fd], [], []).unwrap();
    let cm = configmap(&sel, &r);
    assert_eq!(
        cm.metadata.name.as_deref(),
        Some(sel.configmap_name().as_str())
    );
    assert_eq!(cm.labels()[SELECTION_LABEL], sel.id());
    assert_eq!(cm.labels()[MANAGED_BY_LABEL.0], MANAGED_BY_LABEL.1);
    assert_eq!(cm.annotations()[FLOWS_ANNOTATION], "gone,orders");
    assert_eq!(
        cm.annotations()[RENDERED_FROM_ANNOTATION],
        "FlowDefinition/orders@1"
    );
    assert_eq!(configmap_selection(&cm), Some(sel));
    assert_eq!(configmap_sources(&cm), r.sources);
    let json = serde_json::to_value(&cm).unwrap();
    assert_eq!(json["apiVersion"], "v1");
    assert_eq!(json["kind"], "ConfigMap");
}

#[test]
fn sources_round_trip() {
    let s = vec![
        Source {
            kind: SourceKind::Flow,
            name: "a".into(),
            generation: 3,
        },
        Source {
            kind: SourceKind::Link,
            name: "crm".into(),
            generation: 12,
        },
    ];
    assert_eq!(format_sources(&s), "FlowDefinition/a@3,LinkTarget/crm@12");
    assert_eq!(parse_sources(&format_sources(&s)), s);
    assert_eq!(parse_sources(""), vec![]);
    assert_eq!(parse_sources("Pod/x@1,FlowDefinition/y"), vec![]);
}

#[test]
fn apps_file_holds_the_valid_apps_with_their_module_mount_paths() {
    let enrich = app("enrich", "enrich-wasm");
    let mut both: WasmApp = app("both", "both-wasm");
    both.spec.module = "/opt/both.wasm".into();
    let mut sel = selection(&[], &[]);
    sel.apps = ["both".into(), "enrich".into(), "ghost".into()].into();
    let r = render(&sel, [], [], [&enrich, &both]).unwrap();
    assert_eq!(
        r.data[APPS_CONFIG_KEY],
        "apps:\n- name: enrich\n  module: /etc/fiso/modules/enrich/app.wasm\n  execution: longRunning\n  port: 0\n  healthCheck: /health\ndefaultPortRange:\n  min: 9000\n  max: 9999\nlistenHost: 127.0.0.1\nmetricsAddr: :9092\n"
    );
    let omitted: Vec<String> = r.omitted.iter().map(ToString::to_string).collect();
    assert_eq!(omitted.len(), 2, "{omitted:?}");
    assert!(
        omitted[0].starts_with("WasmApp `both` is invalid: spec.module: give `module`"),
        "{omitted:?}"
    );
    assert_eq!(omitted[1], "WasmApp `ghost` does not exist");
    assert_eq!(format_sources(&r.sources), "WasmApp/enrich@1");
    let cm = configmap(&sel, &r);
    assert_eq!(cm.annotations()[APPS_ANNOTATION], "both,enrich,ghost");
    assert_eq!(configmap_selection(&cm), Some(sel));

    // No apps selected: no apps file.
    let r = render(&selection(&[], &[]), [], [], [&enrich]).unwrap();
    assert!(!r.data.contains_key(APPS_CONFIG_KEY));
}
