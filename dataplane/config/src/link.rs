//! Link config (`fiso/link/config.yaml`, `FISO_LINK_CONFIG`): the egress proxy and its targets.
//!
//! A [`TargetConfig`] is both an entry of `targets[]` and the `spec` of a `LinkTarget`; in the
//! custom resource `name` may be omitted (it is `metadata.name`).

use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{duration, Backoff, ByteSize};
use crate::flow::{Preopen, RequiredAcks, WasmConfig, WasmRuntime};
use crate::kafka::{KafkaCluster, KafkaConfig};
use crate::traces::TracingConfig;

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:3500";
pub const DEFAULT_METRICS_ADDR: &str = ":9091";

/// The whole link config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkConfig {
    /// Proxy address (default `127.0.0.1:3500`: only local applications can reach it).
    #[serde(default = "default_listen_addr")]
    pub listen_addr: String,
    /// Metrics and health address (default `:9091`).
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
    /// Time a client has from connecting to a complete first request, and from the first
    /// byte of each later request to its last header (default 10s); a connection that sends
    /// nothing or trickles its headers (slowloris) is closed. Read at start, not on reload.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub read_header_timeout: Option<Duration>,
    /// Time a connection may wait for its next request (default 75s, as nginx's
    /// `keepalive_timeout`), HTTP/2 connections without a stream included; then it is closed.
    /// Read at start, not on reload.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Duration>,
    /// Longest pause while a request body arrives (default 60s, as nginx's
    /// `client_body_timeout`); a body that stops longer is answered 408. Read at start, not on
    /// reload.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub body_timeout: Option<Duration>,
    /// Clusters Kafka targets publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// OpenTelemetry trace export, when a file is more natural than the `OTEL_*` variables
    /// (each one that is set overrides its field). Read at start, not on reload. OTLP headers
    /// (a collector's credentials) are not in it: `OTEL_EXPORTER_OTLP_HEADERS` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            listen_addr: default_listen_addr(),
            metrics_addr: default_metrics_addr(),
            read_header_timeout: None,
            idle_timeout: None,
            body_timeout: None,
            kafka: None,
            targets: Vec::new(),
            tracing: None,
        }
    }
}

fn default_listen_addr() -> String {
    DEFAULT_LISTEN_ADDR.to_owned()
}
fn default_metrics_addr() -> String {
    DEFAULT_METRICS_ADDR.to_owned()
}

/// Upstream protocol of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    #[default]
    Https,
    Kafka,
    /// An app of this process (`apps:`), named by `app`.
    App,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Kafka => "kafka",
            Protocol::App => "app",
        }
    }
}

/// One upstream reachable as `/link/{name}/...`.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, kube_derive::CustomResource,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[kube(
    group = "fiso.io",
    version = "v1alpha1",
    kind = "LinkTarget",
    namespaced,
    shortname = "lt",
    status = "crate::crd::ResourceStatus",
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.host"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    )
)]
pub struct TargetConfig {
    /// Target name: the `{target}` path segment. Required in the link config file; in a
    /// LinkTarget it defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http`, `https` (default), `kafka`, or `app` (an app of this process, see `app`).
    #[serde(default)]
    pub protocol: Protocol,
    /// `protocol: app`: the `name` of the app requests go to (`/link/<target>/<path>` becomes
    /// `<basePath>/<path>` on the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Upstream host name (also the TLS SNI and `Host` header). Required for http/https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Prefix prepended to the forwarded path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// Per-attempt upstream timeout (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Extra CA bundle (PEM) trusted for this target besides the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Also retry non-idempotent methods (POST, PATCH) without an `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_non_idempotent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Path globs (`*` one segment, `**` any depth); empty allows every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_paths: Vec<String>,
    /// Kafka publishing settings (`protocol: kafka`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaTargetConfig>,
    /// WASM interceptors run on the request (`phase: outbound`, after the allowed-path check,
    /// before auth injection) or on the upstream's answer (`phase: inbound`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interceptors: Vec<LinkInterceptorSpec>,
}

/// `interceptors[]` of a link target: `{type: wasm, config}`. Its own type (not the flow's
/// `InterceptorSpec`): a link interceptor has a `phase` and an input limit, a flow's has not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "config",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum LinkInterceptorSpec {
    Wasm(LinkWasmConfig),
}

impl JsonSchema for LinkInterceptorSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LinkInterceptorSpec".into()
    }
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::schema::tagged_union(
            "Interceptor run on a link target's requests (outbound) or answers (inbound).",
            vec![("wasm", crate::schema::object_schema::<LinkWasmConfig>(gen))],
            true,
        )
    }
}

/// Which message a link interceptor sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterceptorPhase {
    /// The app's request, before it goes upstream (and before auth injection).
    #[default]
    Outbound,
    /// The upstream's answer, before it reaches the app.
    Inbound,
}

impl InterceptorPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptorPhase::Outbound => "outbound",
            InterceptorPhase::Inbound => "inbound",
        }
    }
}

/// Default `maxInputSize` of a link interceptor: the largest body it is given (4MiB).
pub const DEFAULT_INTERCEPTOR_MAX_INPUT: u64 = 4 << 20;
/// Largest accepted `maxInputSize`: the body is buffered in host memory.
pub const MAX_INTERCEPTOR_MAX_INPUT: u64 = 64 << 20;

/// A WASI command module run on a link target's request or answer: HTTP message JSON on
/// stdin, changes on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkWasmConfig {
    /// Path of the `.wasm` module.
    pub module: String,
    /// `outbound` (the request, default) or `inbound` (the upstream's answer).
    #[serde(default)]
    pub phase: InterceptorPhase,
    #[serde(default)]
    pub runtime: WasmRuntime,
    /// Wall-clock limit per request (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Linear-memory limit (default 64MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// Optional instruction budget per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Largest accepted stdout (default 4MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_size: Option<ByteSize>,
    /// Largest body given to the module (default 4MiB, at most 64MiB): a larger request body
    /// is refused with 413, a larger upstream answer with 502.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_size: Option<ByteSize>,
    /// On module failure pass the message on unchanged (counted) instead of answering 502.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// Environment variables visible to the guest.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Read-only host directories visible to the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preopens: Vec<Preopen>,
}

impl LinkWasmConfig {
    /// What the engine needs to load the module.
    pub fn engine(&self) -> WasmConfig {
        WasmConfig {
            module: self.module.clone(),
            runtime: self.runtime,
            timeout: self.timeout,
            memory_limit: self.memory_limit,
            fuel: self.fuel,
            max_output_size: self.max_output_size,
            fail_open: self.fail_open,
            env: self.env.clone(),
            preopens: self.preopens.clone(),
        }
    }

    /// `maxInputSize` in bytes, with its default.
    pub fn max_input(&self) -> u64 {
        self.max_input_size
            .map_or(DEFAULT_INTERCEPTOR_MAX_INPUT, |b| b.bytes())
    }
}

/// Credential kind injected into upstream requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `<header>: <secret>` (header default `X-API-Key`).
    Apikey,
    /// `Authorization: Basic base64(<user:password secret>)`.
    Basic,
    #[default]
    None,
}

pub const DEFAULT_APIKEY_HEADER: &str = "X-API-Key";

/// Credential injection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub type_: AuthType,
    /// Header for `apikey` (default `X-API-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_ref: Option<VaultRef>,
}

/// Where a secret comes from: exactly one of a file, an environment variable, or (in a
/// LinkTarget) a Kubernetes Secret `name` + `key` that the sidecar gets mounted as a file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    /// File holding the secret; watched, so rotation needs no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var: Option<String>,
    /// Kubernetes Secret name (LinkTarget only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Key inside the Kubernetes Secret (LinkTarget only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A secret in HashiCorp Vault / OpenBao KV v2 (address from `VAULT_ADDR`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VaultRef {
    /// Secret path under the mount, e.g. `crm/api`.
    pub path: String,
    /// Field of the secret holding the credential.
    pub field: String,
    /// KV v2 mount (default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Kubernetes auth role; without it token auth (`VAULT_TOKEN` / `VAULT_TOKEN_FILE`) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How often the secret is re-read (default 5m); a token or Kubernetes-auth lease is renewed
    /// before it expires regardless.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub refresh_interval: Option<Duration>,
}

pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
pub const DEFAULT_RESET_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-target circuit breaker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Consecutive failures that open the breaker (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Half-open successes that close it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// Open time before probing (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub reset_timeout: Option<Duration>,
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);
pub const DEFAULT_JITTER: f64 = 0.2;

/// Per-target retry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryConfig {
    /// Attempts including the first (default 3; 1 disables retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Default 100ms.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub initial_interval: Option<Duration>,
    /// Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub max_interval: Option<Duration>,
    /// Fraction of each delay randomised, in [0, 1] (default 0.2; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

/// Per-target token bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitConfig {
    /// Requests per second; `0` means no limit, as upstream.
    pub requests_per_second: f64,
    /// Bucket size (default: `requestsPerSecond` rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    /// Whether requests are limited at all (`requestsPerSecond: 0` is no limit).
    pub fn limits(&self) -> bool {
        self.requests_per_second > 0.0
    }
}

/// Kafka publishing for `protocol: kafka` targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaTargetConfig {
    /// Name of a cluster under the link config's `kafka.clusters`.
    pub cluster: String,
    pub topic: String,
    /// Record key strategy (none: null key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyStrategy>,
    /// Static headers; they win over request headers of the same name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// `all` or `1` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_acks: Option<RequiredAcks>,
    /// The cluster's connection settings inline. Used by a LinkTarget, which has no link-level
    /// `kafka.clusters`; in a link config file it overrides the named cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_config: Option<KafkaCluster>,
}

/// How the record key is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Uuid,
    Header,
    Payload,
    Static,
    Random,
}

/// Key strategy: `uuid`, `header` (`field` = header name), `payload` (`field` = top-level or
/// dotted path), `static` (`value`), `random`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyStrategy {
    #[serde(rename = "type")]
    pub type_: KeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}
