//! Kafka: client configuration from `kafka.clusters`, and (later) the Kafka sink and DLQ.

pub mod client;
pub mod dlq;
pub mod sink;
