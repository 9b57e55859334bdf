//! The sidecar-injection webhook's `POST /mutate` body handling without the API lookups: bytes
//! → `AdmissionReview` → plan → response (with the injection patch) → wire encoding.
//!
//! Any body gets a response or a clear "invalid" error, never a panic; and a patch the webhook
//! returns must apply to the pod it was computed for (the API server would refuse the pod
//! otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use fiso_config::apps::ConfigMapKey;
use fiso_operator::webhook::admission::{parse, respond, to_wire, Outcome};
use fiso_operator::webhook::{References, SidecarMode, WebhookConfig};

static CONFIG: LazyLock<WebhookConfig> = LazyLock::new(WebhookConfig::default);

pub fn run(data: &[u8]) {
    let Ok(req) = parse(data) else {
        return;
    };
    let secrets = References {
        secrets: BTreeSet::from(["payments-token".to_owned()]),
        modules: BTreeMap::from([(
            "enrich".to_owned(),
            ConfigMapKey {
                name: "enrich-wasm".to_owned(),
                key: "app.wasm".to_owned(),
            },
        )]),
        wasmer: true,
        warnings: vec!["LinkTarget missing not found".to_owned()],
    };
    // Both shapes of the sidecar: an init container (native) and a regular container.
    for mode in [SidecarMode::Native, SidecarMode::Container] {
        let (response, outcome) = respond(&req, &CONFIG, mode, &secrets);
        if outcome == Outcome::Injected {
            let patch = response
                .patch
                .as_deref()
                .expect("an injection carries a patch");
            let patch: json_patch::Patch =
                serde_json::from_slice(patch).expect("the patch is a JSON Patch");
            let mut pod = serde_json::to_value(req.object.as_ref().expect("a pod was injected"))
                .expect("the pod serialises");
            json_patch::patch(&mut pod, &patch).expect("the patch applies to its pod");
        }
        let _ = to_wire(&response.into_review());
    }
}
