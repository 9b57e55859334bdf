//! The sidecar-injection webhook: `POST /mutate` over TLS, answering Pod `AdmissionReview`s
//! (v1) with a JSON Patch that adds the Fiso data plane.
//!
//! - [`patch`]: the JSON Patch for one Pod (pure).
//! - [`admission`]: an `AdmissionReview` in, an `AdmissionReview` out (pure; [`mutate`]).
//! - [`references`]: the Secrets of the selected LinkTargets and the module ConfigMaps of the
//!   selected WasmApps (API reads).
//! - [`tls`]: rustls (ring) serving config whose certificate can be swapped at run time, and
//!   reloading of certificate files (cert-manager rotates them).
//! - [`certs`]: the self-signed mode: a CA and serving certificate kept in a Secret, and the CA
//!   patched into the `MutatingWebhookConfiguration`.
//! - [`server`]: the HTTPS server.
//! - [`metrics`]: admissions by result, their latency, certificate reloads.
//! - [`mode`]: native sidecar or regular container, from `FISO_SIDECAR_MODE` and the API
//!   server's version.
//!
//! The binary calls [`WebhookConfig::from_env`] and [`run`]; tests call [`run`] with a
//! certificate directory and `127.0.0.1:0`, or [`mutate`] directly.

pub mod admission;
pub mod certs;
pub mod metrics;
pub mod mode;
pub mod patch;
pub mod references;
pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use admission::{mutate, Outcome};
pub use metrics::WebhookMetrics;
pub use mode::SidecarModeSetting;
pub use references::References;

/// Default of `FISO_WEBHOOK_ADDR`.
pub const DEFAULT_ADDR: &str = ":8443";
/// Default of `FISO_TLS_CERT_FILE`.
pub const DEFAULT_CERT_FILE: &str = "/etc/fiso/tls/tls.crt";
/// Default of `FISO_TLS_KEY_FILE`.
pub const DEFAULT_KEY_FILE: &str = "/etc/fiso/tls/tls.key";
/// Default of `FISO_LINK_IMAGE`: the data-plane image (the `fiso` binary).
pub const DEFAULT_IMAGE: &str = "ghcr.io/lsm/fiso:latest";
/// Default of `FISO_WASMER_IMAGE`: the data plane built with Wasmer, for pods that run apps or
/// Wasmer interceptors.
pub const DEFAULT_WASMER_IMAGE: &str = "ghcr.io/lsm/fiso-wasmer:latest";
/// Default of `FISO_WEBHOOK_SECRET` (self-signed mode).
pub const DEFAULT_SECRET_NAME: &str = "fiso-webhook-tls";
/// Default of `FISO_WEBHOOK_SERVICE` (self-signed mode).
pub const DEFAULT_SERVICE_NAME: &str = "fiso-operator";
/// Default of `FISO_WEBHOOK_CONFIGURATION` (self-signed mode).
pub const DEFAULT_WEBHOOK_CONFIGURATION: &str = "fiso-operator";
/// How often certificate files are checked for changes.
pub const DEFAULT_CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// How often the self-signed mode re-checks its Secret and the webhook's `caBundle`.
pub const DEFAULT_SELF_SIGNED_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The namespace a pod runs in, as Kubernetes mounts it into every pod.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How the data plane joins the pod (what [`mode::resolve`] made of `FISO_SIDECAR_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// Kubernetes ≥ 1.29 native sidecar: the first `initContainers` entry, with
    /// `restartPolicy: Always`. It starts before, and stops after, the app containers.
    Native,
    /// A regular container appended to `containers` (older API servers drop the native
    /// sidecar field).
    Container,
}

impl SidecarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarMode::Native => "native",
            SidecarMode::Container => "container",
        }
    }
}

/// Compute resources of the injected container. `None` leaves that entry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarResources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for SidecarResources {
    /// Requests 50m CPU / 64Mi memory, limit 256Mi memory (no CPU limit: throttling a proxy
    /// adds latency to every request).
    fn default() -> Self {
        SidecarResources {
            cpu_request: Some("50m".into()),
            memory_request: Some("64Mi".into()),
            cpu_limit: None,
            memory_limit: Some("256Mi".into()),
        }
    }
}

impl SidecarResources {
    pub fn requirements(&self) -> ResourceRequirements {
        let map = |cpu: &Option<String>, memory: &Option<String>| {
            let m: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
                .collect();
            (!m.is_empty()).then_some(m)
        };
        ResourceRequirements {
            requests: map(&self.cpu_request, &self.memory_request),
            limits: map(&self.cpu_limit, &self.memory_limit),
            ..Default::default()
        }
    }
}

/// The operator generates its own serving certificate instead of reading files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    /// Namespace of the Secret (the operator's own, `FISO_NAMESPACE`).
    pub secret_namespace: String,
    /// Secret holding `tls.crt`, `tls.key` and `ca.crt` (`FISO_WEBHOOK_SECRET`).
    pub secret_name: String,
    /// Subject alternative names of the serving certificate: the Service's DNS names
    /// (`FISO_WEBHOOK_SERVICE` expands to `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and
    /// `<svc>.<ns>.svc.cluster.local`) plus `FISO_WEBHOOK_DNS_NAMES` (comma-separated; IP
    /// addresses allowed, e.g. `127.0.0.1` for a `clientConfig.url` webhook).
    pub service_dns_names: Vec<String>,
    /// `MutatingWebhookConfiguration` whose `webhooks[*].clientConfig.caBundle` gets the CA
    /// (`FISO_WEBHOOK_CONFIGURATION`).
    pub webhook_configuration_name: String,
    /// How often the Secret and the `caBundle` are re-checked (renewal, a chart upgrade that
    /// reset the bundle).
    pub check_interval: Duration,
}

impl SelfSigned {
    /// The DNS names a Service `service` in `namespace` is reached by.
    pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
        vec![
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ]
    }
}

/// Everything the webhook needs; [`WebhookConfig::from_env`] reads it the way the seed documents.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Listen address (`FISO_WEBHOOK_ADDR`, default `:8443`).
    pub addr: SocketAddr,
    /// Serving certificate chain (PEM) unless self-signed (`FISO_TLS_CERT_FILE`).
    pub cert_file: PathBuf,
    /// Its private key (PEM) (`FISO_TLS_KEY_FILE`).
    pub key_file: PathBuf,
    /// How often `cert_file` / `key_file` are checked for changes.
    pub cert_reload_interval: Duration,
    /// Data-plane image injected into pods (`FISO_LINK_IMAGE`).
    pub image: String,
    /// The same built with Wasmer, injected instead into pods whose selected resources need it
    /// (`FISO_WASMER_IMAGE`).
    pub wasmer_image: String,
    /// `FISO_SIDECAR_MODE`: `auto` (default), `native` or `container`; [`run`] resolves it
    /// against the API server's version before serving.
    pub sidecar_mode: SidecarModeSetting,
    /// How long [`run`] keeps retrying the API server's `/version` when the mode depends on it.
    pub version_deadline: Duration,
    /// `FISO_WEBHOOK_SELF_SIGNED=true` and its settings.
    pub self_signed: Option<SelfSigned>,
    /// `FISO_SIDECAR_{CPU,MEMORY}_{REQUEST,LIMIT}`; an empty value removes that entry.
    pub resources: SidecarResources,
    /// Where admissions are counted; register it with [`WebhookMetrics::register`] to export.
    pub metrics: WebhookMetrics,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 8443)),
            cert_file: DEFAULT_CERT_FILE.into(),
            key_file: DEFAULT_KEY_FILE.into(),
            cert_reload_interval: DEFAULT_CERT_RELOAD_INTERVAL,
            image: DEFAULT_IMAGE.into(),
            wasmer_image: DEFAULT_WASMER_IMAGE.into(),
            sidecar_mode: SidecarModeSetting::Auto,
            version_deadline: mode::DEFAULT_VERSION_DEADLINE,
            self_signed: None,
            resources: SidecarResources::default(),
            metrics: WebhookMetrics::default(),
        }
    }
}

impl WebhookConfig {
    /// Serves `<dir>/tls.crt` and `<dir>/tls.key` on `127.0.0.1:0` (tests).
    pub fn for_cert_dir(dir: impl AsRef<std::path::Path>) -> Self {
        let dir = dir.as_ref();
        WebhookConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            ..Default::default()
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, WebhookError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads settings through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, WebhookError> {
        let get = |key: &str| lookup(key).map(|v| v.trim().to_owned());
        let or = |key: &str, default: &str| {
            get(key)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let addr_text = or("FISO_WEBHOOK_ADDR", DEFAULT_ADDR);
        let addr = fiso_runtime::addr::parse_listen_addr(&addr_text)
            .map_err(|e| WebhookError::Config(format!("FISO_WEBHOOK_ADDR: {e}")))?;
        let sidecar_mode = match get("FISO_SIDECAR_MODE").filter(|v| !v.is_empty()) {
            Some(v) => v.parse()?,
            None => SidecarModeSetting::default(),
        };
        let defaults = SidecarResources::default();
        let resource = |key: &str, default: Option<String>| match get(key) {
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v),
            None => default,
        };
        let resources = SidecarResources {
            cpu_request: resource("FISO_SIDECAR_CPU_REQUEST", defaults.cpu_request),
            memory_request: resource("FISO_SIDECAR_MEMORY_REQUEST", defaults.memory_request),
            cpu_limit: resource("FISO_SIDECAR_CPU_LIMIT", defaults.cpu_limit),
            memory_limit: resource("FISO_SIDECAR_MEMORY_LIMIT", defaults.memory_limit),
        };
        let self_signed =
            if parse_bool("FISO_WEBHOOK_SELF_SIGNED", get("FISO_WEBHOOK_SELF_SIGNED"))? {
                let namespace = get("FISO_NAMESPACE")
                    .filter(|v| !v.is_empty())
                    .or_else(|| {
                        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE)
                            .ok()
                            .map(|s| s.trim().to_owned())
                    })
                    .ok_or_else(|| {
                        WebhookError::Config(
                        "FISO_WEBHOOK_SELF_SIGNED needs FISO_NAMESPACE (the operator's namespace)"
                            .into(),
                    )
                    })?;
                let service = or("FISO_WEBHOOK_SERVICE", DEFAULT_SERVICE_NAME);
                let mut names = SelfSigned::service_names(&service, &namespace);
                names.extend(
                    get("FISO_WEBHOOK_DNS_NAMES")
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                let mut seen = std::collections::HashSet::new();
                names.retain(|n| seen.insert(n.clone()));
                Some(SelfSigned {
                    secret_namespace: namespace,
                    secret_name: or("FISO_WEBHOOK_SECRET", DEFAULT_SECRET_NAME),
                    service_dns_names: names,
                    webhook_configuration_name: or(
                        "FISO_WEBHOOK_CONFIGURATION",
                        DEFAULT_WEBHOOK_CONFIGURATION,
                    ),
                    check_interval: DEFAULT_SELF_SIGNED_CHECK_INTERVAL,
                })
            } else {
                None
            };
        Ok(WebhookConfig {
            addr,
            cert_file: or("FISO_TLS_CERT_FILE", DEFAULT_CERT_FILE).into(),
            key_file: or("FISO_TLS_KEY_FILE", DEFAULT_KEY_FILE).into(),
            cert_reload_interval: DEFAULT_CERT_RELOAD_INTERVAL,
            image: or("FISO_LINK_IMAGE", DEFAULT_IMAGE),
            wasmer_image: or("FISO_WASMER_IMAGE", DEFAULT_WASMER_IMAGE),
            sidecar_mode,
            version_deadline: mode::DEFAULT_VERSION_DEADLINE,
            self_signed,
            resources,
            metrics: WebhookMetrics::default(),
        })
    }
}

fn parse_bool(key: &str, value: Option<String>) -> Result<bool, WebhookError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(WebhookError::Config(format!(
            "{key} must be `true` or `false`, not `{other}`"
        ))),
    }
}

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Certificate(#[from] certs::CertError),
    /// The sidecar mode cannot work with (or be chosen for) this API server.
    #[error("sidecar mode: {0}")]
    SidecarMode(String),
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("webhook task failed: {0}")]
    Task(String),
}

impl WebhookError {
    /// Stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Config(_) => "WEBHOOK_CONFIG_INVALID",
            WebhookError::Bind { .. } => "WEBHOOK_BIND_FAILED",
            WebhookError::Tls(_) => "WEBHOOK_TLS_INVALID",
            WebhookError::Certificate(_) => "WEBHOOK_CERTIFICATE_FAILED",
            WebhookError::SidecarMode(_) => "WEBHOOK_SIDECAR_MODE_UNSUPPORTED",
            WebhookError::Kube { .. } => "WEBHOOK_KUBE_API_FAILED",
            WebhookError::Task(_) => "WEBHOOK_TASK_FAILED",
        }
    }
}

/// A running webhook.
#[derive(Debug)]
pub struct BoundWebhook {
    /// The address actually bound (the port is real even when `addr` asked for port 0).
    pub local_addr: SocketAddr,
    /// PEM CA bundle that verifies the serving certificate, in self-signed mode; what the
    /// `MutatingWebhookConfiguration` was patched with.
    pub ca_bundle: Option<String>,
    /// Ends after `shutdown` is cancelled and open connections have finished (or a grace
    /// period passed).
    pub handle: JoinHandle<Result<(), WebhookError>>,
}

impl BoundWebhook {
    /// `https://<local_addr>/mutate`: the `clientConfig.url` of a webhook registered without a
    /// Service.
    pub fn url(&self) -> String {
        format!("https://{}/mutate", self.local_addr)
    }
}

/// Loads (or, in self-signed mode, creates) the serving certificate, decides the sidecar mode
/// (see [`mode`]), binds `config.addr` and serves `POST /mutate` until `shutdown` is cancelled.
///
/// `client` reads the LinkTargets a pod selects (to mount the Secrets they reference) and the
/// API server's version, and is required in self-signed mode and for `FISO_SIDECAR_MODE=auto`;
/// without it, pods get no Secret volumes.
pub async fn run(
    config: WebhookConfig,
    client: Option<kube::Client>,
    shutdown: CancellationToken,
) -> Result<BoundWebhook, WebhookError> {
    server::start(config, client, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = WebhookConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.cert_file, PathBuf::from("/etc/fiso/tls/tls.crt"));
        assert_eq!(c.key_file, PathBuf::from("/etc/fiso/tls/tls.key"));
        assert_eq!(c.sidecar_mode, SidecarModeSetting::Auto);
        assert_eq!(c.image, DEFAULT_IMAGE);
        assert_eq!(c.wasmer_image, DEFAULT_WASMER_IMAGE);
        assert!(c.self_signed.is_none());
        let r = c.resources.requirements();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "50m");
        assert_eq!(r.requests.as_ref().unwrap()["memory"].0, "64Mi");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "256Mi");
        assert!(!r.limits.as_ref().unwrap().contains_key("cpu"));
    }

    #[test]
    fn env_overrides() {
        let c = WebhookConfig::from_lookup(lookup(&[
            ("FISO_WEBHOOK_ADDR", "127.0.0.1:0"),
            ("FISO_SIDECAR_MODE", "Container"),
            ("FISO_LINK_IMAGE", "registry.local/fiso:1.2.3"),
            ("FISO_WASMER_IMAGE", "registry.local/fiso-wasmer:1.2.3"),
            ("FISO_SIDECAR_CPU_LIMIT", "500m"),
            ("FISO_SIDECAR_MEMORY_LIMIT", ""),
            ("FISO_WEBHOOK_SELF_SIGNED", "true"),
            ("FISO_NAMESPACE", "fiso-system"),
            ("FISO_WEBHOOK_DNS_NAMES", "127.0.0.1, webhook.example"),
        ]))
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.sidecar_mode, SidecarModeSetting::Container);
        assert_eq!(c.image, "registry.local/fiso:1.2.3");
        assert_eq!(c.wasmer_image, "registry.local/fiso-wasmer:1.2.3");
        let r = c.resources.requirements();
        assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "500m");
        assert!(!r.limits.as_ref().unwrap().contains_key("memory"));
        let s = c.self_signed.unwrap();
        assert_eq!(s.secret_namespace, "fiso-system");
        assert_eq!(s.secret_name, DEFAULT_SECRET_NAME);
        assert_eq!(s.webhook_configuration_name, DEFAULT_WEBHOOK_CONFIGURATION);
        assert_eq!(
            s.service_dns_names,
            [
                "fiso-operator",
                "fiso-operator.fiso-system",
                "fiso-operator.fiso-system.svc",
                "fiso-operator.fiso-system.svc.cluster.local",
                "127.0.0.1",
                "webhook.example"
            ]
        );
    }

    #[test]
    fn invalid_values_are_config_errors() {
        for pairs in [
            [("FISO_SIDECAR_MODE", "sidecar")],
            [("FISO_WEBHOOK_ADDR", "8443")],
            [("FISO_WEBHOOK_SELF_SIGNED", "maybe")],
        ] {
            let err = WebhookConfig::from_lookup(lookup(&pairs)).unwrap_err();
            assert_eq!(err.code(), "WEBHOOK_CONFIG_INVALID", "{err}");
        }
    }
}
