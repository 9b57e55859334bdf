//! The JSON Patch (RFC 6902) that injects the data plane into one Pod.
//!
//! Built as explicit operations against the Pod's raw JSON (not a diff of a typed round trip,
//! which would drop fields this build's `k8s-openapi` does not know). Maps and arrays the Pod
//! lacks are added whole; existing ones get members appended.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction,
    KeyToPath, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{References, SidecarMode, WebhookConfig};
use crate::selection::{
    flow_file, flow_key, Selection, APPS_CONFIG_FILE, APPS_CONFIG_KEY, APPS_CONFIG_PATH, APPS_DIR,
    FLOWS_DIR, LINK_CONFIG_FILE, LINK_CONFIG_KEY, LINK_CONFIG_PATH, LINK_DIR, MODULES_MOUNT_ROOT,
    SECRETS_MOUNT_ROOT, SELECTION_LABEL, STATUS_ANNOTATION, STATUS_INJECTED,
};

/// Name of the injected container.
pub const CONTAINER_NAME: &str = "fiso";
/// Volume of the rendered ConfigMap's flow files, mounted as the flow directory.
pub const FLOWS_VOLUME: &str = "fiso-flows";
/// Volume of the rendered ConfigMap's link config, mounted as the link config's directory.
pub const LINK_VOLUME: &str = "fiso-link";
/// Volume of the rendered ConfigMap's apps file (when the pod selects apps).
pub const APPS_VOLUME: &str = "fiso-apps";
/// Link proxy port (`proxy`).
pub const PROXY_PORT: i32 = 3500;
/// Metrics and health port (`metrics`).
pub const METRICS_PORT: i32 = 9090;
/// The distroless `nonroot` user.
pub const RUN_AS_USER: i64 = 65532;

/// Why a pod that asked for injection cannot get it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("the pod already has a container named `{CONTAINER_NAME}` but no `{STATUS_ANNOTATION}: {STATUS_INJECTED}` annotation; rename it or remove `fiso.io/inject`")]
    ContainerExists,
    #[error("the pod already has a volume named `{0}`; rename it or remove `fiso.io/inject`")]
    VolumeExists(String),
    #[error("the pod has no `spec`")]
    NoSpec,
}

/// The operations that inject the data plane for `selection` into `pod` (the Pod's JSON),
/// mounting what its resources reference (`refs`: Secrets, module ConfigMaps).
pub fn injection_patch(
    pod: &Value,
    selection: &Selection,
    refs: &References,
    config: &WebhookConfig,
    mode: SidecarMode,
) -> Result<Patch, InjectError> {
    let spec = pod
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or(InjectError::NoSpec)?;
    let names = |key: &str| -> Vec<&str> {
        spec.get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("name")?.as_str())
                    .collect()
            })
            .unwrap_or_default()
    };
    if names("containers")
        .into_iter()
        .chain(names("initContainers"))
        .any(|n| n == CONTAINER_NAME)
    {
        return Err(InjectError::ContainerExists);
    }
    let volumes = volumes(selection, refs);
    let existing_volumes = names("volumes");
    if let Some(clash) = volumes
        .iter()
        .find(|v| existing_volumes.contains(&v.name.as_str()))
    {
        return Err(InjectError::VolumeExists(clash.name.clone()));
    }

    let mut ops = Vec::new();
    add_map_entry(
        &mut ops,
        pod,
        &["metadata", "annotations"],
        STATUS_ANNOTATION,
        STATUS_INJECTED,
    );
    add_map_entry(
        &mut ops,
        pod,
        &["metadata", "labels"],
        SELECTION_LABEL,
        &selection.id(),
    );
    let volumes: Vec<Value> = volumes.iter().map(to_json).collect();
    append(&mut ops, pod, &["spec", "volumes"], volumes);
    let container = to_json(&sidecar_container(config, mode, selection, refs));
    match mode {
        SidecarMode::Native => prepend(&mut ops, pod, &["spec", "initContainers"], container),
        SidecarMode::Container => append(&mut ops, pod, &["spec", "containers"], vec![container]),
    }
    Ok(Patch(ops))
}

/// The data-plane container, mounting the [`volumes`] of `selection` and `refs`.
pub fn sidecar_container(
    config: &WebhookConfig,
    mode: SidecarMode,
    selection: &Selection,
    refs: &References,
) -> Container {
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let env = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(METRICS_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let mount = |name: String, path: String| VolumeMount {
        name,
        mount_path: path,
        read_only: Some(true),
        ..Default::default()
    };
    let mut mounts = Vec::new();
    if !selection.flows.is_empty() {
        mounts.push(mount(FLOWS_VOLUME.into(), FLOWS_DIR.into()));
    }
    mounts.push(mount(LINK_VOLUME.into(), LINK_DIR.into()));
    mounts.extend(refs.secrets.iter().map(|secret| {
        mount(
            secret_volume_name(secret),
            format!("{SECRETS_MOUNT_ROOT}/{secret}"),
        )
    }));
    let mut envs = vec![
        env("FISO_CONFIG_DIR", FLOWS_DIR),
        env("FISO_LINK_CONFIG", LINK_CONFIG_PATH),
        env("FISO_METRICS_ADDR", &format!(":{METRICS_PORT}")),
    ];
    if !selection.apps.is_empty() {
        mounts.push(mount(APPS_VOLUME.into(), APPS_DIR.into()));
        envs.push(env("FISO_APPS_CONFIG", APPS_CONFIG_PATH));
    }
    mounts.extend(refs.modules.keys().map(|app| {
        mount(
            module_volume_name(app),
            format!("{MODULES_MOUNT_ROOT}/{app}"),
        )
    }));
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(if refs.wasmer {
            config.wasmer_image.clone()
        } else {
            config.image.clone()
        }),
        args: Some(vec!["run".into()]),
        ports: Some(vec![
            port("proxy", PROXY_PORT),
            port("metrics", METRICS_PORT),
        ]),
        env: Some(envs),
        resources: Some(config.resources.requirements()),
        // Native sidecars hold back the app containers until the startup probe passes, so
        // the proxy is listening before the app's first request.
        startup_probe: Some(probe("/healthz", 1, 60)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        restart_policy: (mode == SidecarMode::Native).then(|| "Always".into()),
        ..Default::default()
    }
}

/// The rendered ConfigMap as two volumes, three with apps (optional: the operator may render it
/// after the pod is admitted), one volume per referenced Secret and one per app module
/// ConfigMap (projecting only the module's key; not optional: an app without its module
/// cannot start, and kubelet says why in the pod's events). Each ConfigMap volume is mounted as the very
/// directory the data plane watches, so kubelet's atomic update (a new `..data` inside that
/// directory) is what the sidecar's watcher sees, and a flow dropped from the ConfigMap
/// disappears from the directory. The flow volume only exists when the pod selects flows: with
/// no `items` a volume would project every key, the link config among the flow files.
pub fn volumes(selection: &Selection, refs: &References) -> Vec<Volume> {
    let config_map_volume = |name: String, config_map: String, items, optional| Volume {
        name,
        config_map: Some(ConfigMapVolumeSource {
            name: config_map,
            items: Some(items),
            optional: Some(optional),
            default_mode: None,
        }),
        ..Default::default()
    };
    let config_map = |name: &str, items: Vec<KeyToPath>| {
        config_map_volume(name.into(), selection.configmap_name(), items, true)
    };
    let item = |key: String, path: String| KeyToPath {
        key,
        path,
        mode: None,
    };
    let mut volumes = Vec::new();
    if !selection.flows.is_empty() {
        let items = selection
            .flows
            .iter()
            .map(|flow| item(flow_key(flow), flow_file(flow)))
            .collect();
        volumes.push(config_map(FLOWS_VOLUME, items));
    }
    volumes.push(config_map(
        LINK_VOLUME,
        vec![item(LINK_CONFIG_KEY.into(), LINK_CONFIG_FILE.into())],
    ));
    if !selection.apps.is_empty() {
        volumes.push(config_map(
            APPS_VOLUME,
            vec![item(APPS_CONFIG_KEY.into(), APPS_CONFIG_FILE.into())],
        ));
    }
    volumes.extend(refs.modules.iter().map(|(app, module)| {
        config_map_volume(
            module_volume_name(app),
            module.name.clone(),
            vec![item(module.key.clone(), module.key.clone())],
            false,
        )
    }));
    volumes.extend(refs.secrets.iter().map(|secret| Volume {
        name: secret_volume_name(secret),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }));
    volumes
}

/// `fiso-secret-<name>` when that is a valid volume name (a DNS label), else a stable hash.
pub fn secret_volume_name(secret: &str) -> String {
    volume_name("fiso-secret", secret)
}

/// `fiso-module-<app>` when that is a valid volume name (a DNS label), else a stable hash.
pub fn module_volume_name(app: &str) -> String {
    volume_name("fiso-module", app)
}

fn volume_name(prefix: &str, name: &str) -> String {
    let readable = format!("{prefix}-{name}");
    let is_label = readable.len() <= 63
        && readable
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !readable.ends_with('-');
    if is_label {
        return readable;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("Kubernetes types serialise to JSON")
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn lookup<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, key| v.get(*key))
}

fn add(ops: &mut Vec<PatchOperation>, path: PointerBuf, value: Value) {
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

/// `map[key] = value`, adding the whole map when it is absent or `null`.
fn add_map_entry(ops: &mut Vec<PatchOperation>, doc: &Value, map: &[&str], key: &str, value: &str) {
    if lookup(doc, map).is_some_and(Value::is_object) {
        let mut path = map.to_vec();
        path.push(key);
        add(ops, pointer(&path), json!(value));
    } else {
        add(ops, pointer(map), json!({ key: value }));
    }
}

/// Appends `values` to an array, adding the whole array when it is absent or `null`.
fn append(ops: &mut Vec<PatchOperation>, doc: &Value, array: &[&str], values: Vec<Value>) {
    if lookup(doc, array).is_some_and(Value::is_array) {
        let mut path = array.to_vec();
        path.push("-");
        for v in values {
            add(ops, pointer(&path), v);
        }
    } else {
        add(ops, pointer(array), Value::Array(values));
    }
}

/// Inserts `value` as the first element of an array, adding the array when absent or `null`.
fn prepend(ops: &mut Vec<PatchOperation>, doc: &Value, array: &[&str], value: Value) {
    if lookup(doc, array).is_some_and(Value::is_array) {
        let mut path = array.to_vec();
        path.push("0");
        add(ops, pointer(&path), value);
    } else {
        add(ops, pointer(array), Value::Array(vec![value]));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::selection::{FLOWS_ANNOTATION, INJECT_ANNOTATION, LINKS_ANNOTATION};

    fn selection(flows: &str, links: &str) -> Selection {
        let ann: BTreeMap<String, String> = [
            (INJECT_ANNOTATION, "true"),
            (FLOWS_ANNOTATION, flows),
            (LINKS_ANNOTATION, links),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Selection::from_annotations("shop", &ann).unwrap()
    }

    fn apply(pod: &Value, patch: &Patch) -> Value {
        let mut doc = pod.clone();
        json_patch::patch(&mut doc, &patch.0).expect("patch applies");
        doc
    }

    fn config() -> WebhookConfig {
        WebhookConfig {
            image: "fiso:test".into(),
            wasmer_image: "fiso-wasmer:test".into(),
            ..Default::default()
        }
    }

    #[test]
    fn bare_pod_gets_whole_maps_and_arrays() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}
        });
        let sel = selection("orders", "");
        let patch = injection_patch(
            &pod,
            &sel,
            &References::default(),
            &config(),
            SidecarMode::Native,
        )
        .unwrap();
        let out = apply(&pod, &patch);
        assert_eq!(out["metadata"]["annotations"]["fiso.io/status"], "injected");
        assert_eq!(out["metadata"]["labels"]["fiso.io/selection"], sel.id());
        assert_eq!(out["spec"]["initContainers"][0]["name"], "fiso");
        assert_eq!(out["spec"]["initContainers"][0]["restartPolicy"], "Always");
        assert_eq!(out["spec"]["volumes"][0]["name"], FLOWS_VOLUME);
        assert_eq!(out["spec"]["volumes"][1]["name"], LINK_VOLUME);
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn slashes_in_keys_are_escaped() {
        let pod = json!({
            "metadata": {"annotations": {"a/b": "c"}, "labels": {"app": "x"}},
            "spec": {"containers": [], "volumes": null}
        });
        let patch = injection_patch(
            &pod,
            &selection("", ""),
            &References::default(),
            &config(),
            SidecarMode::Container,
        )
        .unwrap();
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains("/metadata/annotations/fiso.io~1status"),
            "{text}"
        );
        assert!(
            text.contains("/metadata/labels/fiso.io~1selection"),
            "{text}"
        );
        let out = apply(&pod, &patch);
        assert_eq!(out["metadata"]["annotations"]["a/b"], "c");
        assert_eq!(out["metadata"]["labels"]["app"], "x");
        assert_eq!(
            out["spec"]["volumes"].as_array().unwrap().len(),
            1,
            "null array replaced"
        );
    }

    #[test]
    fn clashes_are_reported() {
        let sel = selection("", "");
        let with_container = json!({"spec": {"containers": [{"name": "fiso"}]}});
        assert_eq!(
            injection_patch(
                &with_container,
                &sel,
                &References::default(),
                &config(),
                SidecarMode::Native
            ),
            Err(InjectError::ContainerExists)
        );
        let with_volume = json!({"spec": {"containers": [], "volumes": [{"name": "fiso-link"}]}});
        assert_eq!(
            injection_patch(
                &with_volume,
                &sel,
                &References::default(),
                &config(),
                SidecarMode::Native
            ),
            Err(InjectError::VolumeExists("fiso-link".into()))
        );
        assert_eq!(
            injection_patch(
                &json!({}),
                &sel,
                &References::default(),
                &config(),
                SidecarMode::Native
            ),
            Err(InjectError::NoSpec)
        );
    }

    #[test]
    fn secret_volume_names_are_dns_labels() {
        assert_eq!(secret_volume_name("crm-token"), "fiso-secret-crm-token");
        for odd in ["crm.token", &"x".repeat(60), "Upper"] {
            let name = secret_volume_name(odd);
            assert!(name.len() <= 63 && !name.contains('.'), "{name}");
            assert_ne!(name, secret_volume_name("other"));
        }
    }

    #[test]
    fn apps_get_their_file_their_modules_and_the_sidecar_is_told() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        let mut sel = selection("", "");
        sel.apps = ["enrich".into(), "local".into()].into();
        let refs = References {
            modules: [(
                "enrich".to_owned(),
                fiso_config::apps::ConfigMapKey {
                    name: "enrich-wasm".into(),
                    key: "app.wasm".into(),
                },
            )]
            .into(),
            wasmer: true,
            ..Default::default()
        };
        let out = apply(
            &pod,
            &injection_patch(&pod, &sel, &refs, &config(), SidecarMode::Native).unwrap(),
        );
        let volumes = &out["spec"]["volumes"];
        assert_eq!(
            volumes[1],
            json!({"name": APPS_VOLUME, "configMap": {"name": sel.configmap_name(), "optional": true,
                "items": [{"key": APPS_CONFIG_KEY, "path": "config.yaml"}]}})
        );
        assert_eq!(
            volumes[2],
            json!({"name": "fiso-module-enrich", "configMap": {"name": "enrich-wasm", "optional": false,
                "items": [{"key": "app.wasm", "path": "app.wasm"}]}})
        );
        let sidecar = &out["spec"]["initContainers"][0];
        let mounts: Vec<(&str, &str)> = sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap(),
                    m["mountPath"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            mounts,
            [
                (LINK_VOLUME, LINK_DIR),
                (APPS_VOLUME, APPS_DIR),
                ("fiso-module-enrich", "/etc/fiso/modules/enrich"),
            ]
        );
        assert!(sidecar["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "FISO_APPS_CONFIG", "value": APPS_CONFIG_PATH})));
        assert_eq!(
            sidecar["image"], "fiso-wasmer:test",
            "apps need the Wasmer build"
        );

        // Without apps: no apps volume, no FISO_APPS_CONFIG.
        let plain = selection("orders", "");
        let out = apply(
            &pod,
            &injection_patch(
                &pod,
                &plain,
                &References::default(),
                &config(),
                SidecarMode::Native,
            )
            .unwrap(),
        );
        assert!(!out.to_string().contains("FISO_APPS_CONFIG"));
        assert!(!out.to_string().contains(APPS_VOLUME));
        assert_eq!(out["spec"]["initContainers"][0]["image"], "fiso:test");
    }
}
