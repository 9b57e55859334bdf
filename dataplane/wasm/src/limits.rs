//! The per-call limits of one module, with the defaults of the config reference.

use std::time::Duration;

use fiso_config::flow::WasmConfig;

use super::error::BuildErrorKind;

/// `timeout` default: the upstream README's example value.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// `memoryLimit` default.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
/// `maxOutputSize` default (the documented default of the config field).
pub const DEFAULT_MAX_OUTPUT: u64 = 4 << 20;
/// Largest accepted `memoryLimit`: the size of one linear-memory slot of the instance pool, which
/// is reserved (virtually) per slot, so it must be bounded.
pub const MAX_MEMORY_LIMIT: u64 = 1 << 30;
/// Largest accepted `maxOutputSize`: stdout is buffered in host memory.
pub const MAX_OUTPUT_LIMIT: u64 = 64 << 20;

/// Limits resolved from a [`WasmConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory: u64,
    pub fuel: Option<u64>,
    pub max_output: u64,
}

impl Limits {
    pub fn from_config(config: &WasmConfig) -> Result<Self, BuildErrorKind> {
        let limits = Limits {
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
            memory: config
                .memory_limit
                .map_or(DEFAULT_MEMORY_LIMIT, |b| b.bytes()),
            fuel: config.fuel,
            max_output: config
                .max_output_size
                .map_or(DEFAULT_MAX_OUTPUT, |b| b.bytes()),
        };
        if limits.timeout.is_zero() {
            return Err(BuildErrorKind::Limit(
                "timeout must be greater than 0".into(),
            ));
        }
        if limits.memory == 0 || limits.memory > MAX_MEMORY_LIMIT {
            return Err(BuildErrorKind::Limit(format!(
                "memoryLimit must be between 1 byte and 1GiB, got {} bytes",
                limits.memory
            )));
        }
        if limits.max_output == 0 || limits.max_output > MAX_OUTPUT_LIMIT {
            return Err(BuildErrorKind::Limit(format!(
                "maxOutputSize must be between 1 byte and 64MiB, got {} bytes",
                limits.max_output
            )));
        }
        if limits.fuel == Some(0) {
            return Err(BuildErrorKind::Limit("fuel must be greater than 0".into()));
        }
        Ok(limits)
    }
}
