//! Kafka plumbing shared by the Kafka source, the Kafka sink and the pipeline: clients and
//! producing ([`client`]), the dead-letter queue ([`dlq`]) and the transactional producer of
//! `commitPolicy: kafka_transaction` ([`txn`]).

pub mod client;
pub mod dlq;
pub mod txn;
