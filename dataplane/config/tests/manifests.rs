//! `fiso export` round trip: local configs → manifests YAML → back, losslessly; and fail-closed
//! on what a custom resource cannot carry.

use fiso_config::manifests::{
    export, from_yaml, import, to_yaml, MAX_CONFIGMAP_MODULE, MODULE_KEY,
};
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

/// A project with the apps file `apps/apps.yaml` (`yaml`) and `module` as `apps/fn.wasm`.
fn apps_project(
    dir: &std::path::Path,
    yaml: &str,
    module: &[u8],
) -> fiso_config::validate::Project {
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    std::fs::write(dir.join("apps/fn.wasm"), module).unwrap();
    let file = dir.join("apps/apps.yaml");
    let (apps, diags) = fiso_config::validate::check_apps(&[src(file.to_str().unwrap(), yaml)]);
    assert!(!diags.has_errors(), "{diags}");
    fiso_config::validate::Project {
        apps,
        ..Default::default()
    }
}

#[test]
fn apps_export_as_wasm_apps_with_their_module_in_a_config_map() {
    let dir = tempfile::tempdir().unwrap();
    // A module exactly at the ConfigMap bound is carried.
    let module: Vec<u8> = (0..MAX_CONFIGMAP_MODULE).map(|i| i as u8).collect();
    let yaml = "apps:\n  - {name: enrich, module: fn.wasm, execution: pooled, poolSize: 2, memoryMB: 32, env: {MODE: fast}}\n";
    let project = apps_project(dir.path(), yaml, &module);
    let manifests = export(&project, "team-a").unwrap();
    let text = to_yaml(&manifests).unwrap();
    assert!(
        text.contains("kind: ConfigMap") && text.contains("kind: WasmApp"),
        "{}",
        &text[..400]
    );
    let back = from_yaml(&text).unwrap();
    assert_eq!(back.apps.len(), 1);
    let app = &back.apps[0];
    assert_eq!(app.metadata.name.as_deref(), Some("enrich"));
    assert_eq!(app.metadata.namespace.as_deref(), Some("team-a"));
    let cm = app.spec.module_config_map.clone().unwrap();
    assert_eq!(
        (cm.name.as_str(), cm.key.as_str()),
        ("enrich-module", MODULE_KEY)
    );
    assert!(app.spec.module.is_empty());
    let shipped = &back.modules[0];
    assert_eq!(shipped.metadata.name.as_deref(), Some("enrich-module"));
    assert_eq!(shipped.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(shipped.binary_data.as_ref().unwrap()[MODULE_KEY].0, module);
    // Everything else of the app is kept as it was.
    let local = &project.apps[0].config.apps[0];
    let imported = fiso_config::manifests::import_app(app);
    assert_eq!(
        fiso_config::apps::AppConfig {
            module: local.module.clone(),
            module_config_map: None,
            ..imported
        },
        *local
    );
}

#[test]
fn apps_export_fails_closed_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "listenHost: 0.0.0.0\napps:\n  - {name: big, module: fn.wasm}\n  - {name: files, module: fn.wasm, preopens: {/data: /srv/data}}\n  - {name: gone, module: missing.wasm}\n";
    let project = apps_project(dir.path(), yaml, &vec![0; MAX_CONFIGMAP_MODULE + 1]);
    let err = export(&project, "ns").unwrap_err();
    let paths: Vec<&str> = err.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "listenHost",
            "apps[0].module",
            "apps[1].preopens",
            "apps[1].module",
            "apps[2].module"
        ]
    );
    assert!(err.iter().all(|d| d.hint.is_some() && d.file.is_some()));
    let too_big = err.iter().nth(1).unwrap();
    assert!(
        too_big.message.contains("at most 1048576"),
        "{}",
        too_big.message
    );
}
