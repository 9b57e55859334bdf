//! Kafka clients of a flow: client settings from `kafka.clusters` (shared with Fiso-Link, from
//! `fiso-runtime`), finding a flow's cluster, producers, and producing one record with the
//! flow's retry policy. The Kafka sink, the Kafka source and the DLQ all build on it.

use std::time::Duration;

use fiso_config::flow::RequiredAcks;
use fiso_config::kafka::{KafkaCluster, KafkaConfig};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

pub use fiso_runtime::kafka::Producer;

use crate::retry::{with_retries, Attempt, RetryError, RetryPolicy};

pub use fiso_runtime::kafka::*;

/// How long a record may wait in the producer (queue + in-flight + librdkafka's own retries)
/// before one attempt counts as failed.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors building a Kafka client from config.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBuildError {
    #[error("{path}: cluster `{cluster}` is not defined under `kafka.clusters`")]
    UnknownCluster { path: &'static str, cluster: String },
    #[error("{path}: no cluster to use (define exactly one under `kafka.clusters` or name one)")]
    NoCluster { path: &'static str },
    #[error("kafka cluster `{cluster}`: {message}")]
    Client { cluster: String, message: String },
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaDelivery {
    pub partition: i32,
    pub offset: i64,
}

/// A record could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
#[error("producing to Kafka topic `{topic}` failed after {attempts} attempt(s): {message}")]
pub struct KafkaDeliveryError {
    pub topic: String,
    pub attempts: u32,
    pub message: String,
}

/// One Kafka record, before it is handed to the producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaRecord {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// `None` is a record without a value (a binary-mode event without data).
    pub value: Option<Vec<u8>>,
}

impl KafkaRecord {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    fn owned_headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        h
    }
}

/// The cluster named `name`, or the only one defined when `name` is `None`.
pub fn find_cluster<'a>(
    kafka: Option<&'a KafkaConfig>,
    name: Option<&str>,
    path: &'static str,
) -> Result<(&'a str, &'a KafkaCluster), KafkaBuildError> {
    let clusters = kafka.map(|k| &k.clusters);
    match name {
        Some(name) => clusters
            .and_then(|c| c.get_key_value(name))
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| KafkaBuildError::UnknownCluster {
                path,
                cluster: name.to_owned(),
            }),
        None => match clusters {
            Some(c) if c.len() == 1 => {
                let (k, v) = c.first().expect("one cluster");
                Ok((k.as_str(), v))
            }
            _ => Err(KafkaBuildError::NoCluster { path }),
        },
    }
}

/// An idempotent (`acks=all`) or leader-acked (`acks=1`) producer for `cluster`, transactional
/// when `transactional_id` is set (which implies `acks=all`).
pub fn producer(
    name: &str,
    cluster: &KafkaCluster,
    acks: RequiredAcks,
    transactional_id: Option<&str>,
) -> Result<Producer, KafkaBuildError> {
    let acks = if transactional_id.is_some() {
        RequiredAcks::All
    } else {
        acks
    };
    let client = |message: String| KafkaBuildError::Client {
        cluster: name.to_owned(),
        message,
    };
    let mut config =
        producer_config(cluster, acks, MESSAGE_TIMEOUT).map_err(|e| client(e.to_string()))?;
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    config
        .create()
        .map(Producer::new)
        .map_err(|e| client(e.to_string()))
}

/// Produces `record` to `topic`, retrying retriable broker errors per `policy`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    record: &KafkaRecord,
    policy: &RetryPolicy,
) -> Result<KafkaDelivery, KafkaDeliveryError> {
    let result = with_retries(policy, |n| async move {
        if n > 0 {
            tracing::debug!(topic, attempt = n + 1, "retrying Kafka produce");
        }
        let mut fr = FutureRecord::<[u8], [u8]>::to(topic).headers(record.owned_headers());
        if let Some(value) = &record.value {
            fr = fr.payload(value.as_slice());
        }
        if let Some(k) = &record.key {
            fr = fr.key(k.as_slice());
        }
        match producer.send(fr, Timeout::After(MESSAGE_TIMEOUT)).await {
            Ok(d) => Attempt::Success(KafkaDelivery {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((e, _)) if permanent(&e) => Attempt::Permanent(error_text::describe(&e)),
            Err((e, _)) => Attempt::Retryable(error_text::describe(&e), None),
        }
    })
    .await;
    result.map_err(|e| {
        let (attempts, message) = match e {
            RetryError::Permanent(m) => (1, m),
            RetryError::Exhausted { attempts, last } => (attempts, last),
        };
        KafkaDeliveryError {
            topic: topic.to_owned(),
            attempts,
            message,
        }
    })
}

/// Errors no retry can fix.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}
