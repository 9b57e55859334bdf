//! Sinks: where a flow delivers its CloudEvents.

pub mod http;

use fiso_config::flow::SinkSpec;
use fiso_config::kafka::KafkaConfig;

use crate::kafka::sink::{KafkaSink, KafkaSinkBuildError};

use crate::retry::RetryPolicy;

/// A built sink of any type.
#[derive(Debug, Clone)]
pub enum Sink {
    Http(http::HttpSink),
    Kafka(KafkaSink),
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Http(#[from] http::SinkBuildError),
    #[error(transparent)]
    Kafka(#[from] KafkaSinkBuildError),
    /// A sink type this build cannot deliver to. Fails the flow loudly instead of dropping events.
    #[error("`sink.type: {0}` is not available in this build of fiso (supported: http, kafka)")]
    Unavailable(&'static str),
}

impl Sink {
    /// Builds the sink of `spec`; a Kafka sink finds its cluster in `kafka` (the flow's
    /// `kafka:` section) and is transactional with `transactional_id`.
    pub fn build(
        spec: &SinkSpec,
        policy: RetryPolicy,
        kafka: Option<&KafkaConfig>,
        transactional_id: Option<&str>,
    ) -> Result<Sink, SinkError> {
        match spec {
            SinkSpec::Http(cfg) => Ok(Sink::Http(http::HttpSink::new(cfg, policy)?)),
            SinkSpec::Kafka(cfg) => Ok(Sink::Kafka(KafkaSink::new(
                cfg,
                kafka,
                policy,
                transactional_id,
            )?)),
            other => Err(SinkError::Unavailable(other.kind())),
        }
    }
}
