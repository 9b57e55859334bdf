//! Sinks: where a flow delivers its CloudEvents.

pub mod grpc;
pub mod http;
pub mod temporal;

use crate::cel::budget::Budget;
use fiso_config::flow::SinkSpec;
use fiso_config::kafka::KafkaConfig;

use crate::kafka::sink::{KafkaSink, KafkaSinkBuildError};

use crate::retry::RetryPolicy;

/// A built sink of any type.
#[derive(Debug, Clone)]
pub enum Sink {
    Http(http::HttpSink),
    Kafka(KafkaSink),
    Temporal(temporal::TemporalSink),
    Grpc(grpc::GrpcSink),
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Http(#[from] http::SinkBuildError),
    #[error(transparent)]
    Kafka(#[from] KafkaSinkBuildError),
    #[error(transparent)]
    Temporal(#[from] temporal::TemporalBuildError),
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcSinkBuildError),
}

impl Sink {
    /// Builds the sink of `spec`; a Kafka sink finds its cluster in `kafka` (the flow's
    /// `kafka:` section) and is transactional with `transactional_id`.
    /// Whether rendering what the sink needs from an event (the Kafka key, Temporal params)
    /// may take long ([`CompiledExpr::is_heavy`](crate::CompiledExpr::is_heavy)).
    pub fn is_heavy(&self) -> bool {
        match self {
            Sink::Kafka(s) => s.is_heavy(),
            Sink::Temporal(s) => s.is_heavy(),
            Sink::Http(_) | Sink::Grpc(_) => false,
        }
    }

    pub fn build(
        spec: &SinkSpec,
        policy: RetryPolicy,
        kafka: Option<&KafkaConfig>,
        transactional_id: Option<&str>,
        budget: Budget,
    ) -> Result<Sink, SinkError> {
        match spec {
            SinkSpec::Http(cfg) => Ok(Sink::Http(http::HttpSink::new(cfg, policy)?)),
            SinkSpec::Kafka(cfg) => Ok(Sink::Kafka(KafkaSink::new(
                cfg,
                kafka,
                policy,
                transactional_id,
                budget,
            )?)),
            SinkSpec::Grpc(cfg) => Ok(Sink::Grpc(grpc::GrpcSink::new(cfg, policy)?)),
            SinkSpec::Temporal(cfg) => Ok(Sink::Temporal(temporal::TemporalSink::new(
                cfg, policy, budget,
            )?)),
        }
    }
}
