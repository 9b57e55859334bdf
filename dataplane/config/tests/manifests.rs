//! `fiso export` round trip: local configs → manifests YAML → back, losslessly; and fail-closed
//! on what a custom resource cannot carry.

use fiso_config::manifests::{export, from_yaml, import, to_yaml};
use fiso_config::validate::{check_project, SourceFile};

const FLOW: &str = r#"name: order-events
kafka:
  clusters:
    main:
      brokers: ["kafka:9092"]
      auth: {mechanism: SCRAM-SHA-512, username: fiso, passwordFile: /secrets/kafka}
source:
  type: kafka
  config: {cluster: main, topic: orders, startOffset: 42}
transform:
  fields: {z: "data.a", a: "data.b", "x-y.z": "time"}
cloudevents:
  type: '"order.created"'
sink:
  type: temporal
  config:
    hostPort: temporal:7233
    taskQueue: q
    workflowType: W
    mode: signal
    signalName: s
    params: [{expr: data.a}]
errorHandling: {maxRetries: 2, initialInterval: 1s, maxInterval: 1m, commitPolicy: sink}
"#;

const LINK: &str = r#"kafka:
  clusters:
    main: {brokers: ["kafka:9092"]}
targets:
  - name: crm
    host: api.example.com
    auth: {type: apikey, header: X-Key, secretRef: {filePath: /secrets/crm}}
    retry: {maxAttempts: 4, jitter: 0}
    allowedPaths: [/api/**]
  - name: orders
    protocol: kafka
    kafka: {cluster: main, topic: orders, key: {type: payload, field: user.id}, requiredAcks: all}
"#;

fn src(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.to_owned(),
        text: text.to_owned(),
    }
}

#[test]
fn export_then_import_gives_equal_configs() {
    let (project, diags) = check_project(
        &[src("flows/a.yaml", FLOW)],
        Some(&src("link/config.yaml", LINK)),
    );
    assert!(!diags.has_errors(), "{diags}");
    let manifests = export(&project, "team-a").unwrap();
    let yaml = to_yaml(&manifests).unwrap();
    assert!(yaml.contains("kind: FlowDefinition") && yaml.contains("kind: LinkTarget"));
    assert!(yaml.contains("namespace: team-a"));
    // The exported kafka target carries its cluster inline: a LinkTarget has no link-level clusters.
    assert!(yaml.contains("clusterConfig:"), "{yaml}");
    let back = from_yaml(&yaml).unwrap();
    let (flows, link) = import(&back);
    assert_eq!(flows, vec![project.flows[0].config.clone()]);
    assert_eq!(link, project.link.unwrap().config);
}

#[test]
fn export_fails_closed_with_field_paths() {
    let link = "listenAddr: \"0.0.0.0:3600\"\ntargets:\n  - name: a\n    host: h\n    auth: {type: bearer, secretRef: {envVar: TOKEN}}\n";
    let (project, diags) = check_project(&[], Some(&src("link/config.yaml", link)));
    assert!(!diags.has_errors(), "{diags}");
    let err = export(&project, "ns").unwrap_err();
    let paths: Vec<&str> = err.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["listenAddr", "targets[0].auth.secretRef.envVar"]
    );
    assert!(err.iter().all(|d| d.hint.is_some() && d.file.is_some()));
}
