//! Kafka: client configuration from `kafka.clusters`, the Kafka source and sink, and the DLQ.

pub mod client;
pub mod dlq;
pub mod sink;
pub mod source;
