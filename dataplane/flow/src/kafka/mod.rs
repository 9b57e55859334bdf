//! Kafka: client configuration from `kafka.clusters`, the Kafka source and sink, and the DLQ.

/// Client settings from `kafka.clusters` (shared with Fiso-Link).
pub use fiso_runtime::kafka as client;
pub mod dlq;
pub mod sink;
pub mod source;
