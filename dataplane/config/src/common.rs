//! Small value types shared by flow and link configuration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `readHeaderTimeout` of the Link and Flow HTTP sources: from accept to a complete first
/// request, and from the first byte of each later request to its last header.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `idleTimeout`: how long a connection may wait for its next request (nginx
/// `keepalive_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// `bodyTimeout`: the longest pause while a request body arrives (nginx
/// `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Backoff shape between retry attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `initialInterval * 2^n`, capped at `maxInterval`.
    #[default]
    Exponential,
    /// Always `initialInterval`.
    Constant,
    /// `initialInterval * (n + 1)`, capped at `maxInterval`.
    Linear,
}

/// TLS settings for a client connection (Kafka brokers, gRPC, Temporal).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// Turn TLS on. Setting any file below without `enabled: true` is a validation error.
    #[serde(default)]
    pub enabled: bool,
    /// Plaintext, written the upstream way (`tls: {disabled: true}`); excludes every other field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// PEM file with extra CA certificates trusted in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key for `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Skip server certificate verification. For development only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
}

/// A size in bytes, written as an integer (`1048576`) or with a unit (`"1MiB"`, `"512Ki"`, `"2M"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Error parsing a [`ByteSize`].
#[derive(Debug, thiserror::Error)]
#[error("invalid size `{0}`: expected bytes as an integer or a number with a unit (Ki, Mi, Gi, KiB, MiB, GiB, K, M, G, KB, MB, GB)")]
pub struct ByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ByteSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| ByteSizeError(s.to_owned()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "Ki" | "KiB" => 1 << 10,
            "Mi" | "MiB" => 1 << 20,
            "Gi" | "GiB" => 1 << 30,
            "K" | "KB" | "k" | "kB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            _ => return Err(ByteSizeError(s.to_owned())),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError(s.to_owned()))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.to_string();
        match text.parse::<u64>() {
            Ok(n) => s.serialize_u64(n),
            Err(_) => s.serialize_str(&text),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size: an integer or a string such as \"1MiB\"")
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::schema::int_or_string(
            "Size in bytes: an integer, or a string with a unit such as \"1MiB\".",
        )
    }
}

/// Serde helpers for `Duration` fields written as `"30s"`, `"200ms"`.
pub mod duration {
    pub use humantime_serde::{deserialize, serialize};
}

/// Renders a duration the way users write it (`30s`, `200ms`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
