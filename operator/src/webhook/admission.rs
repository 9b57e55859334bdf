//! One `AdmissionReview` in, one out: decides whether a Pod gets the data plane and builds the
//! response. Pure; the server adds the LinkTarget lookups ([`super::links`]) and the wire
//! encoding ([`to_wire`]).

use base64::Engine as _;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};
use serde_json::Value;

use super::patch::injection_patch;
use super::references::References;
use super::{SidecarMode, WebhookConfig};
use crate::selection::{Selection, STATUS_ANNOTATION, STATUS_INJECTED};

/// What happened to one admission; the `result` label of the webhook metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed with the injection patch.
    Injected,
    /// Allowed unchanged: not opted in, already injected, or not a CREATE.
    Skipped,
    /// Refused: the pod asked for injection but cannot get it, or the review is not for a Pod.
    Denied,
    /// Not an `AdmissionReview` at all (HTTP 400).
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A request body that is not a usable `AdmissionReview`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(String),
    #[error("the AdmissionReview has no `request`")]
    NoRequest,
}

/// What a request asks of the webhook, before any API lookups.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Allow unchanged (the reason is for logs).
    Skip(&'static str),
    /// Refuse with this message.
    Deny(String),
    /// Inject the data plane for this selection.
    Inject(Selection),
}

/// Parses a request body.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// Decides what to do with `req` from the request alone.
pub fn plan(req: &AdmissionRequest<DynamicObject>) -> Plan {
    let kind = &req.kind;
    if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod") {
        let gv = if kind.group.is_empty() {
            kind.version.clone()
        } else {
            format!("{}/{}", kind.group, kind.version)
        };
        return Plan::Deny(format!(
            "the fiso webhook mutates only v1 Pods, not {gv} {}; check the rules of the MutatingWebhookConfiguration",
            kind.kind
        ));
    }
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Plan::Skip("subresource");
    }
    if !matches!(req.operation, Operation::Create) {
        return Plan::Skip("not a CREATE");
    }
    let Some(pod) = &req.object else {
        return Plan::Deny("the CREATE request carries no Pod object".into());
    };
    let Some(annotations) = &pod.metadata.annotations else {
        return Plan::Skip("no annotations");
    };
    if annotations.get(STATUS_ANNOTATION).map(String::as_str) == Some(STATUS_INJECTED) {
        return Plan::Skip("already injected");
    }
    // Pods created from a template (generateName) may carry no namespace yet.
    let namespace = pod
        .metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .or(req.namespace.as_deref().filter(|ns| !ns.is_empty()));
    let Some(namespace) = namespace else {
        return Plan::Deny("cannot tell the Pod's namespace".into());
    };
    match Selection::from_annotations(namespace, annotations) {
        Some(selection) => Plan::Inject(selection),
        None => Plan::Skip("not opted in"),
    }
}

/// The response to `req`, given the Secrets its LinkTargets reference.
pub fn respond(
    req: &AdmissionRequest<DynamicObject>,
    config: &WebhookConfig,
    mode: SidecarMode,
    secrets: &References,
) -> (AdmissionResponse, Outcome) {
    let allow = AdmissionResponse::from(req);
    let selection = match plan(req) {
        Plan::Skip(_) => return (allow, Outcome::Skipped),
        Plan::Deny(message) => return (deny(allow, message), Outcome::Denied),
        Plan::Inject(selection) => selection,
    };
    let pod = match req.object.as_ref().map(serde_json::to_value) {
        Some(Ok(pod)) => pod,
        _ => {
            return (
                deny(allow, "the Pod cannot be read".into()),
                Outcome::Denied,
            )
        }
    };
    let patch = match injection_patch(&pod, &selection, secrets, config, mode) {
        Ok(patch) => patch,
        Err(e) => return (deny(allow, e.to_string()), Outcome::Denied),
    };
    let mut response = match allow.clone().with_patch(patch) {
        Ok(r) => r,
        Err(e) => return (deny(allow, e.to_string()), Outcome::Denied),
    };
    if !secrets.warnings.is_empty() {
        response.warnings = Some(secrets.warnings.clone());
    }
    (response, Outcome::Injected)
}

/// The whole round trip without API lookups: `secrets` are the Kubernetes Secrets referenced by
/// the selected LinkTargets (the server resolves them; pass `&References::default()` for none).
/// A review without a `request` gets an invalid-request response.
pub fn mutate(
    review: AdmissionReview<DynamicObject>,
    config: &WebhookConfig,
    mode: SidecarMode,
    secrets: &References,
) -> AdmissionReview<DynamicObject> {
    match review.try_into() {
        Ok(req) => respond(&req, config, mode, secrets).0.into_review(),
        Err(_) => AdmissionResponse::invalid(ReviewError::NoRequest).into_review(),
    }
}

/// Serialises a response review the way the API server reads it: `response.patch` as base64
/// (Go's `[]byte`), not the JSON array of numbers `Vec<u8>` serialises to.
pub fn to_wire(review: &AdmissionReview<DynamicObject>) -> Vec<u8> {
    let mut value = serde_json::to_value(review).expect("AdmissionReview serialises");
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
        value["response"]["patch"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    serde_json::to_vec(&value).expect("JSON value serialises")
}

/// A refusal of `req` with `message` (shown to whoever created the pod).
pub fn denied(req: &AdmissionRequest<DynamicObject>, message: String) -> AdmissionResponse {
    deny(AdmissionResponse::from(req), message)
}

fn deny(response: AdmissionResponse, message: String) -> AdmissionResponse {
    let mut response = response.deny(&message);
    response.result = Status::failure(&message, "Forbidden").with_code(403);
    response
}

#[cfg(test)]
mod tests {
    use json_patch::Patch;
    use serde_json::json;

    use super::*;
    use crate::selection::{flow_key, Selection, LINK_CONFIG_KEY};
    use crate::webhook::patch::{secret_volume_name, FLOWS_VOLUME, LINK_VOLUME};

    fn review(object: Value) -> AdmissionReview<DynamicObject> {
        review_with(
            json!({"group": "", "version": "v1", "kind": "Pod"}),
            "CREATE",
            object,
        )
    }

    fn review_with(kind: Value, operation: &str, object: Value) -> AdmissionReview<DynamicObject> {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": kind,
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn annotated_pod(annotations: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "orders-1", "namespace": "shop", "annotations": annotations},
            "spec": {
                "containers": [{"name": "app", "image": "shop/orders:1"}],
                "initContainers": [{"name": "migrate", "image": "shop/migrate:1"}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        })
    }

    fn config() -> WebhookConfig {
        WebhookConfig {
            image: "registry.local/fiso:1.0".into(),
            ..Default::default()
        }
    }

    fn response(review: &AdmissionReview<DynamicObject>) -> &AdmissionResponse {
        review.response.as_ref().expect("a response")
    }

    fn ops(review: &AdmissionReview<DynamicObject>) -> Patch {
        match &response(review).patch {
            Some(bytes) => serde_json::from_slice(bytes).unwrap(),
            None => Patch(vec![]),
        }
    }

    /// The pod as the API server stores it after applying the response's patch.
    fn admitted(
        input: &AdmissionReview<DynamicObject>,
        output: &AdmissionReview<DynamicObject>,
    ) -> Value {
        let mut pod =
            serde_json::to_value(input.request.as_ref().unwrap().object.as_ref().unwrap()).unwrap();
        json_patch::patch(&mut pod, &ops(output).0).expect("the patch applies to the pod");
        pod
    }

    fn secrets(names: &[&str]) -> References {
        References {
            secrets: names.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn native_sidecar_is_the_first_init_container() {
        let input = review(annotated_pod(json!({
            "fiso.io/inject": "true",
            "fiso.io/flows": "orders,payments",
            "fiso.io/links": "crm,erp"
        })));
        let output = mutate(
            input.clone(),
            &config(),
            SidecarMode::Native,
            &secrets(&["crm-token"]),
        );
        let resp = response(&output);
        assert!(resp.allowed);
        assert_eq!(resp.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        let pod = admitted(&input, &output);

        let selection = Selection {
            namespace: "shop".into(),
            flows: ["orders".into(), "payments".into()].into(),
            links: ["crm".into(), "erp".into()].into(),
            apps: Default::default(),
        };
        assert_eq!(pod["metadata"]["annotations"]["fiso.io/status"], "injected");
        assert_eq!(
            pod["metadata"]["annotations"]["fiso.io/flows"],
            "orders,payments"
        );
        assert_eq!(
            pod["metadata"]["labels"]["fiso.io/selection"],
            selection.id()
        );

        let init = pod["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init.len(), 2);
        assert_eq!(init[1]["name"], "migrate");
        let fiso = &init[0];
        assert_eq!(fiso["name"], "fiso");
        assert_eq!(fiso["restartPolicy"], "Always");
        assert_eq!(fiso["image"], "registry.local/fiso:1.0");
        assert_eq!(fiso["args"], json!(["run"]));
        assert_eq!(
            fiso["ports"],
            json!([
                {"name": "proxy", "containerPort": 3500, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
            ])
        );
        assert_eq!(
            fiso["env"],
            json!([
                {"name": "FISO_CONFIG_DIR", "value": "/etc/fiso/flows"},
                {"name": "FISO_LINK_CONFIG", "value": "/etc/fiso/link/config.yaml"},
                {"name": "FISO_METRICS_ADDR", "value": ":9090"}
            ])
        );
        assert_eq!(
            fiso["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": 9090})
        );
        assert_eq!(
            fiso["resources"],
            json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
        );
        let sc = &fiso["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["runAsUser"], 65532);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(
            fiso["volumeMounts"],
            json!([
                {"name": "fiso-flows", "mountPath": "/etc/fiso/flows", "readOnly": true},
                {"name": "fiso-link", "mountPath": "/etc/fiso/link", "readOnly": true},
                {"name": "fiso-secret-crm-token", "mountPath": "/etc/fiso/secrets/crm-token", "readOnly": true}
            ])
        );

        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "the app containers are untouched");

        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 4);
        assert_eq!(volumes[0]["name"], "data");
        assert_eq!(
            volumes[1],
            json!({
                "name": FLOWS_VOLUME,
                "configMap": {
                    "name": selection.configmap_name(),
                    "optional": true,
                    "items": [
                        {"key": flow_key("orders"), "path": "orders.yaml"},
                        {"key": flow_key("payments"), "path": "payments.yaml"}
                    ]
                }
            })
        );
        assert_eq!(
            volumes[2],
            json!({
                "name": LINK_VOLUME,
                "configMap": {
                    "name": selection.configmap_name(),
                    "optional": true,
                    "items": [{"key": LINK_CONFIG_KEY, "path": "config.yaml"}]
                }
            })
        );
        assert_eq!(
            volumes[3],
            json!({"name": secret_volume_name("crm-token"), "secret": {"secretName": "crm-token"}})
        );
    }

    #[test]
    fn container_mode_appends_a_regular_container() {
        let input = review(annotated_pod(
            json!({"fiso.io/inject": "true", "fiso.io/flows": "orders"}),
        ));
        let output = mutate(
            input.clone(),
            &config(),
            SidecarMode::Container,
            &References::default(),
        );
        let pod = admitted(&input, &output);
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(
            containers[0]["name"], "app",
            "the app stays the default container"
        );
        assert_eq!(containers[1]["name"], "fiso");
        assert!(containers[1].get("restartPolicy").is_none());
        assert_eq!(
            containers[1]["readinessProbe"]["httpGet"]["path"],
            "/readyz"
        );
        let init = pod["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init.len(), 1, "no native sidecar");
        assert_eq!(init[0]["name"], "migrate");
        assert_eq!(
            pod["spec"]["volumes"].as_array().unwrap().len(),
            3,
            "the pod's own, the flows', the link config's; no secret volumes"
        );
    }

    #[test]
    fn already_injected_pods_get_an_empty_patch() {
        let input = review(annotated_pod(json!({"fiso.io/inject": "true"})));
        let first = mutate(
            input.clone(),
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        let injected = admitted(&input, &first);

        let second = mutate(
            review(injected),
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        assert!(response(&second).allowed);
        assert!(ops(&second).0.is_empty());
        assert!(response(&second).patch.is_none());
    }

    #[test]
    fn pods_without_the_annotation_pass_untouched() {
        for annotations in [json!(null), json!({}), json!({"fiso.io/inject": "false"})] {
            let mut pod = annotated_pod(json!({}));
            pod["metadata"]["annotations"] = annotations.clone();
            let output = mutate(
                review(pod),
                &config(),
                SidecarMode::Native,
                &References::default(),
            );
            assert!(response(&output).allowed, "{annotations}");
            assert!(response(&output).patch.is_none(), "{annotations}");
        }
    }

    #[test]
    fn generate_name_pods_without_maps_take_the_request_namespace() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "orders-7d9f8-",
                "annotations": {"fiso.io/inject": "true", "fiso.io/flows": "orders"}
            },
            "spec": {"containers": [{"name": "app", "image": "shop/orders:1"}]}
        });
        let input = review(pod);
        let output = mutate(
            input.clone(),
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        let pod = admitted(&input, &output);
        let selection = Selection {
            namespace: "shop".into(),
            flows: ["orders".into()].into(),
            links: Default::default(),
            apps: Default::default(),
        };
        assert_eq!(
            pod["metadata"]["labels"]["fiso.io/selection"],
            selection.id()
        );
        assert_eq!(pod["spec"]["initContainers"][0]["name"], "fiso");
        assert_eq!(
            pod["spec"]["volumes"][0]["configMap"]["name"],
            selection.configmap_name()
        );
    }

    #[test]
    fn malformed_reviews_are_refused_clearly() {
        assert!(matches!(
            parse(b"{not json"),
            Err(ReviewError::Malformed(_))
        ));
        assert!(matches!(parse(b"[]"), Err(ReviewError::Malformed(_))));
        assert_eq!(
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).unwrap_err(),
            ReviewError::NoRequest
        );

        let no_request: AdmissionReview<DynamicObject> = serde_json::from_value(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        )
        .unwrap();
        let out = mutate(
            no_request,
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        assert!(!response(&out).allowed);
        assert!(response(&out).result.message.contains("no `request`"));

        let deployment = review_with(
            json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            "CREATE",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
        );
        let out = mutate(
            deployment,
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        let resp = response(&out);
        assert!(!resp.allowed);
        assert_eq!(resp.result.code, 403);
        assert!(
            resp.result.message.contains("apps/v1 Deployment"),
            "{}",
            resp.result.message
        );

        let no_object = review(Value::Null);
        let out = mutate(
            no_object,
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        assert!(!response(&out).allowed);
    }

    #[test]
    fn updates_and_clashes() {
        let update = review_with(
            json!({"group": "", "version": "v1", "kind": "Pod"}),
            "UPDATE",
            annotated_pod(json!({"fiso.io/inject": "true"})),
        );
        let out = mutate(
            update,
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        assert!(response(&out).allowed && response(&out).patch.is_none());

        let mut pod = annotated_pod(json!({"fiso.io/inject": "true"}));
        pod["spec"]["containers"][0]["name"] = json!("fiso");
        let out = mutate(
            review(pod),
            &config(),
            SidecarMode::Native,
            &References::default(),
        );
        assert!(!response(&out).allowed);
        assert!(response(&out)
            .result
            .message
            .contains("container named `fiso`"));
    }

    #[test]
    fn warnings_reach_the_client_and_the_patch_is_base64_on_the_wire() {
        let input = review(annotated_pod(
            json!({"fiso.io/inject": "true", "fiso.io/links": "crm"}),
        ));
        let links = References {
            warnings: vec!["LinkTarget shop/crm not found".into()],
            ..Default::default()
        };
        let output = mutate(input, &config(), SidecarMode::Native, &links);
        assert_eq!(
            response(&output).warnings.as_deref(),
            Some(&links.warnings[..])
        );

        let wire: Value = serde_json::from_slice(&to_wire(&output)).unwrap();
        assert_eq!(wire["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(wire["kind"], "AdmissionReview");
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        let b64 = wire["response"]["patch"].as_str().expect("base64 string");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(&decoded, response(&output).patch.as_ref().unwrap());
    }
}
