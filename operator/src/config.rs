//! Operator settings from the environment, as the seed documents them. The webhook's own
//! settings (`FISO_WEBHOOK_ADDR`, `FISO_TLS_*`, `FISO_LINK_IMAGE`, ...) are read by
//! [`WebhookConfig::from_env`](crate::webhook::WebhookConfig::from_env).

use std::str::FromStr;

use crate::error::Error;
use crate::leader::DEFAULT_LEASE_NAME;

/// Default of `FISO_METRICS_ADDR`.
pub const DEFAULT_METRICS_ADDR: &str = ":8080";
/// Default of `FISO_HEALTH_ADDR`.
pub const DEFAULT_HEALTH_ADDR: &str = ":9090";
/// The operator's namespace when neither `FISO_NAMESPACE`, `POD_NAMESPACE` nor the service
/// account's namespace file says otherwise.
pub const DEFAULT_NAMESPACE: &str = "fiso-system";

const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `FISO_OPERATOR_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Controllers and webhook (default).
    #[default]
    Controller,
    /// Only the sidecar-injection webhook.
    WebhookOnly,
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "controller" => Ok(Mode::Controller),
            "webhook-only" => Ok(Mode::WebhookOnly),
            other => Err(Error::Config {
                name: "FISO_OPERATOR_MODE",
                message: format!(
                    "`{other}` is not a mode (expected `controller` or `webhook-only`)"
                ),
            }),
        }
    }
}

/// Everything `main` needs besides the webhook's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    pub mode: Mode,
    /// `/metrics` (also serves `/healthz`, `/readyz`).
    pub metrics_addr: String,
    /// `/healthz`, `/readyz` (also serves `/metrics`).
    pub health_addr: String,
    /// `FISO_ENABLE_LEADER_ELECTION`: only the Lease holder runs the controllers.
    pub leader_election: bool,
    /// `FISO_LEADER_ELECTION_LEASE`: the Lease's name.
    pub lease_name: String,
    /// The operator's namespace (holds the Lease).
    pub namespace: String,
    /// `POD_NAME` (downward API): names events' reporting instance and the Lease holder.
    pub pod_name: Option<String>,
}

impl OperatorConfig {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(
            |key| std::env::var(key).ok(),
            || std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE).ok(),
        )
    }

    /// Reads settings through `lookup`; `sa_namespace` reads the mounted service account's
    /// namespace (the last resort before [`DEFAULT_NAMESPACE`]).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        sa_namespace: impl FnOnce() -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let addr = |name: &'static str, default: &str| -> Result<String, Error> {
            let value = get(name).unwrap_or_else(|| default.to_owned());
            fiso_runtime::addr::parse_listen_addr(&value).map_err(|e| Error::Config {
                name,
                message: e.to_string(),
            })?;
            Ok(value)
        };
        let leader_election = match get("FISO_ENABLE_LEADER_ELECTION")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") | Some("0") | Some("no") => false,
            Some("true") | Some("1") | Some("yes") => true,
            Some(other) => {
                return Err(Error::Config {
                    name: "FISO_ENABLE_LEADER_ELECTION",
                    message: format!("`{other}` is not `true` or `false`"),
                })
            }
        };
        let namespace = get("FISO_NAMESPACE")
            .or_else(|| get("POD_NAMESPACE"))
            .or_else(|| {
                sa_namespace()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Ok(OperatorConfig {
            mode: get("FISO_OPERATOR_MODE").unwrap_or_default().parse()?,
            metrics_addr: addr("FISO_METRICS_ADDR", DEFAULT_METRICS_ADDR)?,
            health_addr: addr("FISO_HEALTH_ADDR", DEFAULT_HEALTH_ADDR)?,
            leader_election,
            lease_name: get("FISO_LEADER_ELECTION_LEASE")
                .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned()),
            namespace,
            pod_name: get("POD_NAME"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(pairs: &[(&str, &str)], sa: Option<&str>) -> Result<OperatorConfig, Error> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OperatorConfig::from_lookup(|k| map.get(k).cloned(), || sa.map(str::to_owned))
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = config(&[], None).unwrap();
        assert_eq!(
            c,
            OperatorConfig {
                mode: Mode::Controller,
                metrics_addr: ":8080".into(),
                health_addr: ":9090".into(),
                leader_election: false,
                lease_name: "fiso-operator-leader".into(),
                namespace: "fiso-system".into(),
                pod_name: None,
            }
        );
    }

    #[test]
    fn environment_overrides() {
        let c = config(
            &[
                ("FISO_OPERATOR_MODE", "webhook-only"),
                ("FISO_METRICS_ADDR", "127.0.0.1:0"),
                ("FISO_HEALTH_ADDR", ":9999"),
                ("FISO_ENABLE_LEADER_ELECTION", "TRUE"),
                ("POD_NAMESPACE", "ops"),
                ("POD_NAME", "fiso-operator-abc"),
            ],
            Some("ignored"),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::WebhookOnly);
        assert_eq!(c.metrics_addr, "127.0.0.1:0");
        assert_eq!(c.health_addr, ":9999");
        assert!(c.leader_election);
        assert_eq!(c.namespace, "ops");
        assert_eq!(c.pod_name.as_deref(), Some("fiso-operator-abc"));
        let c = config(
            &[("FISO_NAMESPACE", "mine"), ("POD_NAMESPACE", "ops")],
            None,
        )
        .unwrap();
        assert_eq!(c.namespace, "mine");
        let c = config(&[], Some("from-sa\n")).unwrap();
        assert_eq!(c.namespace, "from-sa");
    }

    #[test]
    fn invalid_values_are_rejected_with_the_variable_name() {
        for (k, v) in [
            ("FISO_OPERATOR_MODE", "both"),
            ("FISO_METRICS_ADDR", "8080"),
            ("FISO_HEALTH_ADDR", "host:x"),
            ("FISO_ENABLE_LEADER_ELECTION", "maybe"),
        ] {
            let err = config(&[(k, v)], None).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
