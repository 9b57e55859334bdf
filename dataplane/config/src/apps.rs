//! Apps config (`fiso/apps/*.yaml`, `fiso wasmer --config apps.yaml`, the `wasmer:` section of
//! the all-in-one file): WASIX programs Fiso runs and supervises under Wasmer.
//!
//! The shape is upstream's (`apps[]` with `name`, `module`, `execution`, `port`, `memoryMB`,
//! `timeout`, `env`, `preopens`, `healthCheck`, `healthCheckInterval`, plus `defaultPortRange`),
//! with `poolSize`, `listenHost` and `metricsAddr` added. [`AioConfig`] is upstream's unified
//! `aio/config.yaml` (`flow:` / `link:` / `wasmer:`, plus Fiso's `tracing:`).

use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::common::duration;
use crate::flow::Preopen;
use crate::link::LinkConfig;
use crate::traces::TracingConfig;

/// Interface apps bind to and Fiso connects to: loopback, so an app is reachable only through
/// Fiso unless the config says otherwise.
pub const DEFAULT_LISTEN_HOST: &str = "127.0.0.1";
/// Metrics and health address of `fiso wasmer` (the Flow uses 9090, the Link 9091).
pub const DEFAULT_METRICS_ADDR: &str = ":9092";
/// Upstream's `defaultPortRange`.
pub const DEFAULT_PORT_MIN: u16 = 9000;
pub const DEFAULT_PORT_MAX: u16 = 9999;
/// `memoryMB` when unset: the guest's linear memory limit.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// `timeout` when unset: one request to an app (and one pooled/perRequest run).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `healthCheckInterval` when unset.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// `poolSize` when unset for `execution: pooled` (perRequest keeps none warm).
pub const DEFAULT_POOL_SIZE: u32 = 4;
/// Largest `memoryMB`: wasm32 linear memory cannot exceed 4 GiB.
pub const MAX_MEMORY_MB: u64 = 4096;
/// Largest `poolSize`.
pub const MAX_POOL_SIZE: u32 = 256;

/// The whole apps file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppsConfig {
    /// The apps to run.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Ports `port: 0` apps are given from (default 9000-9999); the first free one is used.
    #[serde(default)]
    pub default_port_range: PortRange,
    /// Interface long-running apps bind to (default `127.0.0.1`: reachable only from this host /
    /// pod). `0.0.0.0` exposes them directly, bypassing Fiso.
    #[serde(default = "default_listen_host")]
    pub listen_host: String,
    /// Metrics and health address of `fiso wasmer` (default `:9092`). In `fiso run` and
    /// `fiso dev` the apps share the Flow's metrics server and this is ignored.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            apps: Vec::new(),
            default_port_range: PortRange::default(),
            listen_host: default_listen_host(),
            metrics_addr: default_metrics_addr(),
        }
    }
}

fn default_listen_host() -> String {
    DEFAULT_LISTEN_HOST.to_owned()
}
fn default_metrics_addr() -> String {
    DEFAULT_METRICS_ADDR.to_owned()
}

/// Inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            min: DEFAULT_PORT_MIN,
            max: DEFAULT_PORT_MAX,
        }
    }
}

/// How an app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Execution {
    /// A WASIX server started once and supervised: it listens on `$PORT` and Fiso sends it HTTP.
    #[default]
    LongRunning,
    /// One run of the module per request (request on stdin, response on stdout), with up to
    /// `poolSize` instances prepared ahead.
    Pooled,
    /// One run of the module per request, nothing prepared ahead.
    PerRequest,
}

impl Execution {
    pub fn as_str(self) -> &'static str {
        match self {
            Execution::LongRunning => "longRunning",
            Execution::Pooled => "pooled",
            Execution::PerRequest => "perRequest",
        }
    }
}

/// One app; in Kubernetes, the spec of a `WasmApp`.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, kube_derive::CustomResource,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[kube(
    group = "fiso.io",
    version = "v1alpha1",
    kind = "WasmApp",
    namespaced,
    shortname = "wapp",
    status = "crate::crd::ResourceStatus",
    printcolumn = r#"{"name":"Execution","type":"string","jsonPath":".spec.execution"}"#,
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
pub struct AppConfig {
    /// Unique name: the `app` label of its metrics and what a Flow or Link target names.
    /// Required in a file; in a WasmApp it defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Path of the `.wasm` module (WASI preview 1 / WASIX). In a WasmApp, leave it out and give
    /// `moduleConfigMap` instead, or name a file the pod provides (an image volume, say).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub module: String,
    /// WasmApp only: the ConfigMap key (`binaryData`) holding the module. The operator mounts it
    /// into the data-plane sidecar and sets `module` to where it appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_config_map: Option<ConfigMapKey>,
    /// `longRunning` (default), `pooled` or `perRequest`.
    #[serde(default)]
    pub execution: Execution,
    /// Port a long-running app listens on; 0 (default) takes one from `defaultPortRange`.
    /// The app reads it from `$PORT`.
    #[serde(default)]
    pub port: u16,
    /// Linear-memory limit in MiB (default 128, at most 4096); growing past it fails the guest.
    #[serde(default, rename = "memoryMB", skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Limit of one request (default 30s): the answer of a long-running app, or a whole
    /// pooled / perRequest run.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Environment variables of the guest (`PORT` and `FISO_APP_NAME` are set by Fiso).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Host directories visible to the guest: a list of `{hostPath, guestPath}`, or upstream's
    /// map `{guestPath: hostPath}`.
    #[serde(default, skip_serializing_if = "Preopens::is_empty")]
    pub preopens: Preopens,
    /// HTTP path Fiso GETs to decide a long-running app is healthy (any 2xx). Without it, an app
    /// is ready once its port accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    /// Time between health checks (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub health_check_interval: Option<Duration>,
    /// Instances kept prepared for `pooled` (default 4, at most 256); also the most requests
    /// run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
}

/// A key of a ConfigMap in the resource's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMapKey {
    pub name: String,
    pub key: String,
}

impl AppConfig {
    pub fn memory_limit_bytes(&self) -> u64 {
        self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) * 1024 * 1024
    }
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
    pub fn health_check_interval(&self) -> Duration {
        self.health_check_interval
            .unwrap_or(DEFAULT_HEALTH_CHECK_INTERVAL)
    }
    /// Instances prepared ahead and requests run at once.
    pub fn pool_size(&self) -> u32 {
        self.pool_size.unwrap_or(DEFAULT_POOL_SIZE)
    }
}

/// `preopens`: Fiso's list form, or upstream's `{guestPath: hostPath}` map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Preopens(pub Vec<Preopen>);

impl Preopens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Preopens {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Preopens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<Preopen>),
            Map(IndexMap<String, String>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a list of {hostPath, guestPath} or a map of guest path to host path",
            )
        })? {
            Raw::List(l) => Ok(Preopens(l)),
            Raw::Map(m) => Ok(Preopens(
                m.into_iter()
                    .map(|(guest_path, host_path)| Preopen {
                        host_path,
                        guest_path,
                    })
                    .collect(),
            )),
        }
    }
}

impl JsonSchema for Preopens {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Preopens".into()
    }
    /// Untyped, like the CRDs' int-or-string fields: a Kubernetes structural schema cannot say
    /// "a list or a map" (`anyOf` members may not carry types), so the API server admits any
    /// value and deserialisation refuses what is neither.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A list of {hostPath, guestPath}, or a map of guest path to host path.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Upstream's unified all-in-one file (`aio/config.yaml`): `flow:`, `link:`, `wasmer:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AioConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<AioFlow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<AioLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasmer: Option<AppsConfig>,
    /// OpenTelemetry trace export of the whole process (each `OTEL_*` variable that is set
    /// overrides its field); it replaces a `tracing:` of the link config. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

/// `flow:` of the all-in-one file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AioFlow {
    /// Directory of flow files, relative to the all-in-one file's directory unless absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<String>,
    /// Metrics and health address of the flows (and of the apps in this mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

/// `link:` of the all-in-one file: `configPath` to a link config file, or the link config
/// written inline (upstream accepts both; one of them, not both).
#[derive(Debug, Clone, PartialEq)]
pub enum AioLink {
    Path(String),
    Inline(Box<LinkConfig>),
}

impl Serialize for AioLink {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            AioLink::Path(p) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("configPath", p)?;
                m.end()
            }
            AioLink::Inline(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AioLink {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_yaml_ng::Mapping::deserialize(d)?;
        let path = map.remove("configPath");
        match path {
            Some(p) if map.is_empty() => match p {
                serde_yaml_ng::Value::String(s) => Ok(AioLink::Path(s)),
                _ => Err(serde::de::Error::custom("`configPath` must be a string")),
            },
            Some(_) => Err(serde::de::Error::custom(
                "give either `configPath` or the link config inline, not both",
            )),
            None => LinkConfig::deserialize(serde_yaml_ng::Value::Mapping(map))
                .map(|c| AioLink::Inline(Box::new(c)))
                .map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for AioLink {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AioLink".into()
    }
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inline = gen.subschema_for::<LinkConfig>();
        schemars::json_schema!({
            "description": "`configPath` to a link config file, or the link config inline.",
            "anyOf": [
                {"type": "object", "properties": {"configPath": {"type": "string"}},
                 "required": ["configPath"], "additionalProperties": false},
                inline
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    #[test]
    fn upstream_shape_parses() {
        let cfg: AppsConfig = parse(
            "apps.yaml",
            "defaultPortRange: {min: 9100, max: 9199}\napps:\n  - name: api\n    module: /m/api.wasm\n    execution: longRunning\n    port: 0\n    memoryMB: 64\n    timeout: 5s\n    env: {A: b}\n    preopens: {/data: /srv/data}\n    healthCheck: /health\n    healthCheckInterval: 2s\n  - name: fn\n    module: /m/fn.wasm\n    execution: pooled\n    poolSize: 2\n",
        )
        .unwrap();
        assert_eq!(
            cfg.default_port_range,
            PortRange {
                min: 9100,
                max: 9199
            }
        );
        let api = &cfg.apps[0];
        assert_eq!(api.memory_limit_bytes(), 64 << 20);
        assert_eq!(api.timeout(), Duration::from_secs(5));
        assert_eq!(
            api.preopens.0,
            vec![Preopen {
                host_path: "/srv/data".into(),
                guest_path: "/data".into()
            }]
        );
        assert_eq!(cfg.apps[1].execution, Execution::Pooled);
        assert_eq!(cfg.apps[1].pool_size(), 2);
        assert_eq!(cfg.listen_host, "127.0.0.1");
    }

    #[test]
    fn memory_field_is_spelled_as_upstream() {
        let e = parse::<AppsConfig>(
            "a.yaml",
            "apps:\n  - name: a\n    module: m\n    memoryMb: 1\n",
        )
        .unwrap_err();
        assert!(e.0[0].message.contains("unknown field `memoryMb`"), "{e}");
        assert_eq!(e.0[0].hint.as_deref(), Some("did you mean `memoryMB`?"));
    }

    #[test]
    fn aio_link_is_a_path_or_inline() {
        let cfg: AioConfig = parse(
            "aio.yaml",
            "flow: {configDir: flows}\nlink: {configPath: link.yaml}\nwasmer:\n  apps: []\n",
        )
        .unwrap();
        assert_eq!(cfg.link, Some(AioLink::Path("link.yaml".into())));
        let cfg: AioConfig = parse(
            "aio.yaml",
            "link:\n  listenAddr: 127.0.0.1:3600\n  targets:\n    - {name: crm, host: crm.example.com}\n",
        )
        .unwrap();
        let Some(AioLink::Inline(link)) = cfg.link else {
            panic!("inline link expected")
        };
        assert_eq!(link.listen_addr, "127.0.0.1:3600");
        let e = parse::<AioConfig>("aio.yaml", "link: {configPath: x, targets: []}\n").unwrap_err();
        assert!(e.0[0].message.contains("not both"), "{e}");
        let e = parse::<AioConfig>("aio.yaml", "link: {target: []}\n").unwrap_err();
        assert!(e.0[0].message.contains("unknown field `target`"), "{e}");
    }
}
