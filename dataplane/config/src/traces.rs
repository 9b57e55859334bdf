//! `tracing:` of the link config and the all-in-one file: OpenTelemetry trace export (OTLP)
//! written in a file instead of the `OTEL_*` environment variables.
//!
//! The file gives the values; each `OTEL_*` variable that is set overrides its field (the
//! runtime merges them, `fiso_runtime::otel`). OTLP headers are never in a file: they often
//! carry a collector's credentials, so `OTEL_EXPORTER_OTLP_HEADERS` stays their only source.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::duration;

/// OpenTelemetry trace export over OTLP. Read at start: a changed section applies at the next
/// restart. Every `OTEL_*` variable that is set overrides its field (`OTEL_EXPORTER_OTLP_ENDPOINT`
/// / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` → `endpoint`, `OTEL_EXPORTER_OTLP_PROTOCOL` →
/// `protocol`, `OTEL_SERVICE_NAME` → `serviceName`, `OTEL_RESOURCE_ATTRIBUTES` →
/// `resourceAttributes` key by key, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` →
/// `sampler` / `samplerArg`, `OTEL_EXPORTER_OTLP_TIMEOUT` → `timeout`, `OTEL_SDK_DISABLED` →
/// `enabled`). OTLP headers (a collector's credentials) are not a field: give them with
/// `OTEL_EXPORTER_OTLP_HEADERS`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingConfig {
    /// `false` turns export off even with an endpoint (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The collector, an http:// or https:// URL (`http://collector:4318` for `http/protobuf`,
    /// `http://collector:4317` for `grpc`). Over `http/protobuf` a URL without a path gets
    /// `/v1/traces`; one with a path is used as is. Without an endpoint tracing is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
    /// The `service.name` resource attribute (default `fiso`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// More resource attributes (`deployment.environment.name: prod`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub resource_attributes: IndexMap<String, String>,
    /// Which traces are recorded (default `parentbased_always_on`: follow the caller's
    /// decision, sample new traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerName>,
    /// The ratio of new traces sampled by `traceidratio` / `parentbased_traceidratio`, in
    /// `[0, 1]` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_arg: Option<f64>,
    /// Deadline of one export (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

/// The OTLP transport: `grpc` (port 4317 by convention) or `http/protobuf` (OTLP/HTTP with
/// protobuf bodies, the specification's default, port 4318).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    pub const NAMES: &'static str = "`grpc` or `http/protobuf`";

    /// The specification's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OtlpProtocol {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            _ => Err(()),
        }
    }
}

/// A sampler of the specification (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum SamplerName {
    #[serde(rename = "always_on")]
    AlwaysOn,
    #[serde(rename = "always_off")]
    AlwaysOff,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    #[default]
    #[serde(rename = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[serde(rename = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[serde(rename = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

impl SamplerName {
    pub const NAMES: &'static str = "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio";

    pub fn as_str(self) -> &'static str {
        match self {
            SamplerName::AlwaysOn => "always_on",
            SamplerName::AlwaysOff => "always_off",
            SamplerName::TraceIdRatio => "traceidratio",
            SamplerName::ParentBasedAlwaysOn => "parentbased_always_on",
            SamplerName::ParentBasedAlwaysOff => "parentbased_always_off",
            SamplerName::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }

    /// Whether `samplerArg` means something to this sampler.
    pub fn takes_ratio(self) -> bool {
        matches!(
            self,
            SamplerName::TraceIdRatio | SamplerName::ParentBasedTraceIdRatio
        )
    }
}

impl FromStr for SamplerName {
    type Err = ();

    /// Case-insensitive, as the SDKs read `OTEL_TRACES_SAMPLER`.
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "always_on" => SamplerName::AlwaysOn,
            "always_off" => SamplerName::AlwaysOff,
            "traceidratio" => SamplerName::TraceIdRatio,
            "parentbased_always_on" => SamplerName::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerName::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerName::ParentBasedTraceIdRatio,
            _ => return Err(()),
        })
    }
}

/// Why `endpoint` cannot be a collector URL, if it cannot (shared by `fiso validate` and the
/// runtime's check of `OTEL_EXPORTER_OTLP_*ENDPOINT`).
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    match url::Url::parse(endpoint.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => None,
        Ok(u) => Some(format!(
            "`{endpoint}` is not an http:// or https:// URL (scheme `{}`)",
            u.scheme()
        )),
        Err(e) => Some(format!(
            "`{endpoint}` is not an http:// or https:// URL: {e}"
        )),
    }
}

/// Why `ratio` is not a sampling ratio, if it is not.
pub fn ratio_problem(ratio: f64) -> Option<String> {
    (!(0.0..=1.0).contains(&ratio)).then(|| format!("{ratio} is not a ratio between 0 and 1"))
}

/// Whether `endpoint` has a path of its own (then it is used as is under `http/protobuf`).
pub fn endpoint_has_path(endpoint: &str) -> bool {
    url::Url::parse(endpoint.trim()).is_ok_and(|u| !matches!(u.path(), "" | "/"))
}
