//! A flow: source → transform → CloudEvent → interceptors → sink, with error handling.
//!
//! The same [`FlowConfig`] is a local `fiso/flows/<name>.yaml` file and the `spec` of a
//! `FlowDefinition`; in the custom resource `name` may be omitted (it is `metadata.name`).

use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{duration, Backoff, ByteSize, TlsConfig};
use crate::kafka::KafkaConfig;

/// One flow definition.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, kube_derive::CustomResource,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[kube(
    group = "fiso.io",
    version = "v1alpha1",
    kind = "FlowDefinition",
    namespaced,
    shortname = "fd",
    status = "crate::crd::ResourceStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source.type"}"#,
    printcolumn = r#"{"name":"Sink","type":"string","jsonPath":".spec.sink.type"}"#,
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
pub struct FlowConfig {
    /// Flow name: DNS-label characters. Required in a file; in a FlowDefinition it defaults to
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kafka clusters this flow's source, sink and DLQ refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    /// Where events come from.
    pub source: SourceSpec,
    /// Field-based transform (CEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformConfig>,
    /// CloudEvents envelope overrides (CEL, evaluated against the original input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudevents: Option<CloudEventsConfig>,
    /// WASM interceptors run on the CloudEvent before the sink, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interceptors: Vec<InterceptorSpec>,
    /// Where events go.
    pub sink: SinkSpec,
    /// Retries, backoff, dead-letter topic and offset commit policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_handling: Option<ErrorHandling>,
    /// What the CEL expressions of one event may spend (transform fields, `cloudevents.*`, the
    /// Kafka key, Temporal params); an event that exceeds it fails as TRANSFORM_FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel_budget: Option<CelBudget>,
}

/// `celBudget`: the cost budget of one event's CEL evaluation (and of a constant expression,
/// evaluated once at load). Each field has a default and a ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CelBudget {
    /// Comprehension iterations (`map`, `filter`, `all`, `exists`, `exists_one`, `sortBy`), all
    /// loops together. Default 100000, at most 100000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// List and map elements produced (by `+`, `lists.range`, and in the result). Default
    /// 100000, at most 10000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<u64>,
    /// Bytes of strings produced (by `+`, `replace`, `join`, and in the result). Default 8Mi,
    /// at most 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<ByteSize>,
}

impl CelBudget {
    pub const DEFAULT_ITERATIONS: u64 = 100_000;
    pub const DEFAULT_ELEMENTS: u64 = 100_000;
    pub const DEFAULT_BYTES: u64 = 8 * 1024 * 1024;
    pub const MAX_ITERATIONS: u64 = 100_000_000;
    pub const MAX_ELEMENTS: u64 = 10_000_000;
    pub const MAX_BYTES: u64 = 256 * 1024 * 1024;
}

// ---------------------------------------------------------------------------------------------
// Sources

/// `source: {type, config}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "config",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum SourceSpec {
    Http(HttpSourceConfig),
    Kafka(KafkaSourceConfig),
    Grpc(GrpcSourceConfig),
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Http(_) => "http",
            SourceSpec::Kafka(_) => "kafka",
            SourceSpec::Grpc(_) => "grpc",
        }
    }
}

impl JsonSchema for SourceSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SourceSpec".into()
    }
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        use crate::schema::object_schema;
        crate::schema::tagged_union(
            "Event source: `type` selects which `config` properties apply.",
            vec![
                ("http", object_schema::<HttpSourceConfig>(gen)),
                ("kafka", object_schema::<KafkaSourceConfig>(gen)),
                ("grpc", object_schema::<GrpcSourceConfig>(gen)),
            ],
            true,
        )
    }
}

pub const DEFAULT_MAX_BODY_SIZE: ByteSize = ByteSize::mib(1);

/// Largest `maxInFlightPerPartition`: bounds what one partition holds in memory and keeps
/// librdkafka's `queued.min.messages` (4× it) within that property's range.
pub const MAX_IN_FLIGHT_PER_PARTITION: u32 = 10_000;

/// HTTP source: request-response ingestion on `listenAddr` + `path` (POST only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSourceConfig {
    /// `host:port` or `:port` (all interfaces). Flows on one address share a server.
    pub listen_addr: String,
    /// Request path routed to this flow.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest accepted request body (default 1MiB); larger requests get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
    /// Time a client has from connecting to a complete first request, and from the first
    /// byte of each later request to its last header (default 10s); then the connection is
    /// closed. Flows on one `listenAddr` share a server and must agree on it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub read_header_timeout: Option<Duration>,
    /// Time a connection may wait for its next request (default 75s, as nginx's
    /// `keepalive_timeout`), HTTP/2 connections without a stream included; then it is closed.
    /// Flows on one `listenAddr` must agree on it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Duration>,
    /// Longest pause while a request body arrives (default 60s, as nginx's
    /// `client_body_timeout`); a body that stops longer is answered 408. Flows on one
    /// `listenAddr` must agree on it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub body_timeout: Option<Duration>,
}

fn default_path() -> String {
    "/".to_owned()
}

/// Where a Kafka consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartOffset {
    Earliest,
    #[default]
    Latest,
    /// An absolute offset applied to every assigned partition.
    Offset(i64),
}

impl Serialize for StartOffset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StartOffset::Earliest => s.serialize_str("earliest"),
            StartOffset::Latest => s.serialize_str("latest"),
            StartOffset::Offset(n) => s.serialize_i64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for StartOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let err = || {
            serde::de::Error::custom(
                "startOffset must be `earliest`, `latest` or a non-negative integer offset",
            )
        };
        match Raw::deserialize(d).map_err(|_| err())? {
            Raw::Int(n) if n >= 0 => Ok(StartOffset::Offset(n)),
            Raw::Int(_) => Err(err()),
            Raw::Text(t) => match t.as_str() {
                "earliest" => Ok(StartOffset::Earliest),
                "latest" => Ok(StartOffset::Latest),
                other => other
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(StartOffset::Offset)
                    .ok_or_else(err),
            },
        }
    }
}

impl JsonSchema for StartOffset {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StartOffset".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::schema::int_or_string(
            "`earliest`, `latest` (default) or an integer offset; applies only when the group has no committed offset.",
        )
    }
}

/// Kafka source: a consumer group per flow, at-least-once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSourceConfig {
    /// Name of a cluster under `kafka.clusters`.
    pub cluster: String,
    pub topic: String,
    /// Consumer group (default `fiso-<flow name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    #[serde(default)]
    pub start_offset: StartOffset,
    /// Extra librdkafka consumer properties, passed through as-is.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub consumer_properties: IndexMap<String, String>,
    /// Longest time a processed offset waits before it is committed (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub commit_interval: Option<Duration>,
    /// Commit as soon as this many records were processed since the last commit (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_batch_size: Option<u32>,
    /// Records of a partition taken out of its queue at once (default 64, at most 10000): unless
    /// `ordering` is `partition`, how many are delivered at the same time. Each assigned partition has its
    /// own librdkafka queue, fetched while it holds fewer than 4× this many records (at least
    /// 1000) and less than `queued.max.messages.kbytes` (1024 KiB here); memory per partition
    /// stays below that, plus one fetch (`max.partition.fetch.bytes`, 1 MiB), plus these
    /// records. Both librdkafka limits can be set in `consumerProperties`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_partition: Option<u32>,
    /// Which records of one partition may be delivered at the same time (default `partition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<DeliveryOrdering>,
}

/// The delivery order a Kafka source keeps within a partition. Offsets are committed in order
/// whichever it is: only up to the first record not delivered or dead-lettered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrdering {
    /// One record at a time, in offset order (default).
    #[default]
    Partition,
    /// Records with the same key one at a time in offset order (records without a key count as
    /// one key); records with different keys concurrently, up to `maxInFlightPerPartition`.
    Key,
    /// Any records concurrently, up to `maxInFlightPerPartition`.
    Unordered,
}

/// gRPC source: the `fiso.v1.EventService` on `listenAddr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcSourceConfig {
    pub listen_addr: String,
    /// Largest accepted message (default 4MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<ByteSize>,
}

// ---------------------------------------------------------------------------------------------
// Transform and envelope

/// `transform.fields`: output key → CEL expression. Output keys keep this order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransformConfig {
    pub fields: IndexMap<String, String>,
}

/// CloudEvents attribute overrides: each value is a CEL expression over the original input.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudEventsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Replaces the default `data` (the transformed payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
}

impl CloudEventsConfig {
    /// `(attribute name, expression)` for every attribute that is set, in spec order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("id", &self.id),
            ("type", &self.type_),
            ("source", &self.source),
            ("subject", &self.subject),
            ("data", &self.data),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

// ---------------------------------------------------------------------------------------------
// Interceptors

/// `interceptors[]: {type: wasm | wasmer-app, config}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "config",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum InterceptorSpec {
    Wasm(WasmConfig),
    #[serde(rename = "wasmer-app")]
    WasmerApp(AppInterceptorConfig),
}

/// `path` of a `wasmer-app` interceptor when unset.
pub const DEFAULT_APP_INTERCEPTOR_PATH: &str = "/process";

/// An app of this process (`apps:`) as an interceptor: Fiso POSTs the event (what a WASM
/// interceptor reads on stdin) to the app and takes its answer as that interceptor's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppInterceptorConfig {
    /// The app's `name`.
    pub app: String,
    /// Path POSTed to (default `/process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// On failure (app missing, not ready, timed out, non-2xx or invalid answer) pass the event
    /// on unchanged (counted) instead of failing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
}

impl AppInterceptorConfig {
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_APP_INTERCEPTOR_PATH)
    }
}

impl JsonSchema for InterceptorSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InterceptorSpec".into()
    }
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::schema::tagged_union(
            "Interceptor run on each event before the sink.",
            vec![
                ("wasm", crate::schema::object_schema::<WasmConfig>(gen)),
                (
                    "wasmer-app",
                    crate::schema::object_schema::<AppInterceptorConfig>(gen),
                ),
            ],
            true,
        )
    }
}

/// WASM runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WasmRuntime {
    #[default]
    Wasmtime,
    /// Needs a build with the cargo feature `wasmer`.
    Wasmer,
    /// Upstream Fiso's default (Go) runtime: accepted for existing files and run on wasmtime,
    /// with a warning.
    Wazero,
}

impl WasmRuntime {
    /// The warning `runtime: wazero` earns (at load and from `fiso validate`).
    pub const WAZERO_WARNING: &'static str =
        "runtime: wazero (upstream Fiso's Go runtime) is not available in Fiso; the module runs on wasmtime with the same contract and limits";
}

/// A WASI command module: event JSON on stdin, event JSON on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmConfig {
    /// Path of the `.wasm` module.
    pub module: String,
    #[serde(default)]
    pub runtime: WasmRuntime,
    /// Wall-clock limit per event (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Linear-memory limit (default 64MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// Optional instruction budget per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Largest accepted stdout (default 4MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_size: Option<ByteSize>,
    /// On module failure pass the event on unchanged (with a warning metric) instead of failing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// Environment variables visible to the guest.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Read-only host directories visible to the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preopens: Vec<Preopen>,
}

/// A host directory mounted read-only into the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Preopen {
    pub host_path: String,
    pub guest_path: String,
}

// ---------------------------------------------------------------------------------------------
// Sinks

/// `sink: {type, config}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "config",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum SinkSpec {
    Http(HttpSinkConfig),
    Grpc(GrpcSinkConfig),
    Temporal(TemporalSinkConfig),
    Kafka(KafkaSinkConfig),
}

impl SinkSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::Http(_) => "http",
            SinkSpec::Grpc(_) => "grpc",
            SinkSpec::Temporal(_) => "temporal",
            SinkSpec::Kafka(_) => "kafka",
        }
    }
}

impl JsonSchema for SinkSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SinkSpec".into()
    }
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        use crate::schema::object_schema;
        crate::schema::tagged_union(
            "Event sink: `type` selects which `config` properties apply.",
            vec![
                ("http", object_schema::<HttpSinkConfig>(gen)),
                ("grpc", object_schema::<GrpcSinkConfig>(gen)),
                ("temporal", object_schema::<TemporalSinkConfig>(gen)),
                ("kafka", object_schema::<KafkaSinkConfig>(gen)),
            ],
            true,
        )
    }
}

/// CloudEvents content mode on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// The whole event as `application/cloudevents+json`.
    Structured,
    /// Attributes as `ce-*` headers (`ce_*` on Kafka), `data` as the body.
    Binary,
}

pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSinkConfig {
    pub url: String,
    /// Default `POST`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Static request headers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Per-attempt timeout (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// `structured` (default) or `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ContentMode>,
    /// Extra CA bundle (PEM) trusted for `https` URLs, besides the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Largest sink answer body read (default 1MiB). A longer body is not buffered: an HTTP
    /// source answers 502 `SINK_RESPONSE_TOO_LARGE`; a failed delivery keeps its first bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_body_size: Option<ByteSize>,
}

/// The default of `sink.config.maxResponseBodySize`.
pub const DEFAULT_MAX_RESPONSE_BODY_SIZE: ByteSize = ByteSize::mib(1);

fn default_method() -> String {
    "POST".to_owned()
}

/// gRPC sink: `fiso.v1.EventService` at `address`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcSinkConfig {
    /// `host:port` or `http(s)://host:port`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// Start a workflow per event, or signal one (signal-with-start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemporalMode {
    #[default]
    Start,
    Signal,
}

/// A positional workflow argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemporalParam {
    /// CEL expression over the CloudEvent's scope (`data`, `id`, ...).
    pub expr: String,
}

/// Temporal authentication: a static API key, or OAuth2 client credentials (`oidc`). Either
/// way the credential is sent as `authorization: Bearer ...` on every call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemporalAuth {
    /// Environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// An access token from an OAuth2 token endpoint (client-credentials grant), cached and
    /// refreshed before it expires. Excludes the API-key fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Box<OidcClientCredentials>>,
}

/// OAuth2 client-credentials grant (RFC 6749 section 4.4), field names as upstream writes them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcClientCredentials {
    /// The token endpoint, e.g. `https://idp.example.com/oauth2/token`.
    #[serde(rename = "tokenURL")]
    pub token_url: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// File holding the client secret (a mounted Secret); read once when the sink is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// Scopes requested (`scope`, space-separated); none sends no `scope` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// Temporal sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemporalSinkConfig {
    /// `host:port` of the Temporal frontend.
    pub host_port: String,
    /// Default `default`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub task_queue: String,
    pub workflow_type: String,
    /// Workflow id template with `{{.path}}` placeholders (default `<workflowType>-<event id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id_expr: Option<String>,
    /// `start` (default) or `signal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TemporalMode>,
    /// Signal name (required with `mode: signal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// Typed positional arguments; without them the CloudEvent is the single argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<TemporalParam>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TemporalAuth>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// Broker acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RequiredAcks {
    #[serde(rename = "all")]
    All,
    #[serde(rename = "1")]
    Leader,
}

impl RequiredAcks {
    pub fn as_str(self) -> &'static str {
        match self {
            RequiredAcks::All => "all",
            RequiredAcks::Leader => "1",
        }
    }
}

/// Kafka sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkConfig {
    /// Name of a cluster under `kafka.clusters`.
    pub cluster: String,
    pub topic: String,
    /// CEL expression for the record key (null key when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Static record headers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// `all` (default: idempotent producer) or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_acks: Option<RequiredAcks>,
    /// `binary` (default: `ce_*` headers, data as value) or `structured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ContentMode>,
}

// ---------------------------------------------------------------------------------------------
// Error handling

/// When a Kafka source commits an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommitPolicy {
    /// Only after the sink accepted the event; a failed event stops the partition.
    Sink,
    /// After the sink accepted the event or it was dead-lettered (default).
    #[default]
    SinkOrDlq,
    /// Kafka → Kafka in one producer transaction with the consumed offsets.
    KafkaTransaction,
}

pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// Delivery failure policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorHandling {
    /// DLQ topic (default `fiso-dlq-<flow>` for Kafka sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Cluster receiving the DLQ when the source is not Kafka (default: the only cluster defined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_cluster: Option<String>,
    /// Retries after the first attempt (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Default 200ms.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub initial_interval: Option<Duration>,
    /// Default 30s; also caps an honoured `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub max_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_policy: Option<CommitPolicy>,
    /// Required with `commitPolicy: kafka_transaction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}
