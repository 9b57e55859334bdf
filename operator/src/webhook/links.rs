//! The Kubernetes Secrets a pod's LinkTargets reference (`spec.auth.secretRef.name`), read
//! through the API at admission time so the webhook can mount them.
//!
//! LinkTargets are read as untyped objects: a LinkTarget written by a newer CRD version, or one
//! that fails validation, still tells which Secret it needs.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use fiso_config::crd::LinkTarget;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::Client;
use serde_json::Value;

use crate::selection::Selection;

/// How long all LinkTarget reads of one admission may take; the API server's webhook timeout
/// is 10 s by default.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// Secrets to mount, and what the requester should hear about LinkTargets that were missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSecrets {
    pub secrets: BTreeSet<String>,
    pub warnings: Vec<String>,
}

/// Reading a LinkTarget failed for a reason other than it not existing.
#[derive(Debug, thiserror::Error)]
pub enum LinkLookupError {
    #[error("cannot read LinkTarget {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading the LinkTargets of the pod took longer than {0:?}")]
    Timeout(Duration),
}

/// The Secret a LinkTarget `spec` references, if any.
pub fn secret_of(spec: &Value) -> Option<String> {
    spec.pointer("/auth/secretRef/name")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Collects the Secrets of the selected LinkTargets, given each one's `spec` (`None`: the
/// LinkTarget does not exist).
pub fn collect<'a>(
    selection: &Selection,
    specs: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
) -> LinkSecrets {
    let mut out = LinkSecrets::default();
    for (name, spec) in specs {
        match spec {
            Some(spec) => out.secrets.extend(secret_of(spec)),
            None => out.warnings.push(format!(
                "fiso: LinkTarget {}/{name} does not exist; Secrets it references are not mounted until the pod is recreated",
                selection.namespace
            )),
        }
    }
    out
}

/// Reads the LinkTargets `selection` names and returns the Secrets they reference. A missing
/// LinkTarget is a warning (it may be created later); any other API failure is an error, so the
/// admission is refused and retried rather than the pod starting without its credentials.
pub async fn resolve(
    client: &Client,
    selection: &Selection,
) -> Result<LinkSecrets, LinkLookupError> {
    if selection.links.is_empty() {
        return Ok(LinkSecrets::default());
    }
    let resource = ApiResource::erase::<LinkTarget>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &selection.namespace, &resource);
    let reads = async {
        let mut specs = HashMap::new();
        for name in &selection.links {
            let found = api
                .get_opt(name)
                .await
                .map_err(|source| LinkLookupError::Api {
                    namespace: selection.namespace.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                })?;
            specs.insert(name.as_str(), found.map(|lt| lt.data["spec"].clone()));
        }
        Ok::<_, LinkLookupError>(specs)
    };
    let specs = tokio::time::timeout(LOOKUP_TIMEOUT, reads)
        .await
        .map_err(|_| LinkLookupError::Timeout(LOOKUP_TIMEOUT))??;
    Ok(collect(
        selection,
        selection.links.iter().map(|name| {
            (
                name.as_str(),
                specs.get(name.as_str()).and_then(Option::as_ref),
            )
        }),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_come_from_secret_refs_and_missing_targets_warn() {
        let selection = Selection {
            namespace: "shop".into(),
            flows: Default::default(),
            links: ["crm".into(), "erp".into(), "ghost".into(), "open".into()].into(),
        };
        let crm = json!({"host": "crm", "auth": {"type": "bearer", "secretRef": {"name": "crm-token", "key": "token"}}});
        let erp =
            json!({"host": "erp", "auth": {"type": "apikey", "secretRef": {"filePath": "/x"}}});
        let open = json!({"host": "open"});
        let out = collect(
            &selection,
            [
                ("crm", Some(&crm)),
                ("erp", Some(&erp)),
                ("ghost", None),
                ("open", Some(&open)),
            ],
        );
        assert_eq!(out.secrets, ["crm-token".to_owned()].into());
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0].contains("shop/ghost"),
            "{}",
            out.warnings[0]
        );
    }
}
