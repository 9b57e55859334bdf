//! Sinks: where a flow delivers its CloudEvents. Each sink implements [`Sink`]; [`AnySink`] is
//! the one built from a flow's `sink:` section ([`build`], the only place that matches on the
//! sink spec) and dispatches to it.

pub mod grpc;
pub mod http;
pub mod kafka;
mod rpc_trace;
mod sink;
pub mod temporal;

use std::sync::Arc;

use crate::CloudEvent;
use fiso_config::flow::SinkSpec;
use fiso_config::kafka::KafkaConfig;
use fiso_runtime::{outline, Readiness};
use tokio_util::sync::CancellationToken;

use crate::cel::budget::Budget;
use crate::kafka::txn::TransactionalProducer;
use crate::pipeline::delivery::{DeliveryContext, DeliveryError, DeliveryErrorKind, Receipt};
use crate::retry::RetryPolicy;
use crate::{FlowError, InputEvent};

pub use sink::Sink;

/// A delivery under way, whichever the sink.
type Delivery<'a> = outline::Boxed<'a, Result<Receipt, DeliveryError>>;

/// A built sink of any type.
#[derive(Debug, Clone)]
pub enum AnySink {
    Http(http::HttpSink),
    Kafka(kafka::KafkaSink),
    Temporal(temporal::TemporalSink),
    Grpc(grpc::GrpcSink),
}

/// What [`AnySink::prepare`] rendered, per sink type.
#[derive(Debug)]
pub enum AnyPrepared {
    Nothing,
    Kafka(<kafka::KafkaSink as Sink>::Prepared),
    Temporal(<temporal::TemporalSink as Sink>::Prepared),
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error(transparent)]
    Http(#[from] http::HttpSinkBuildError),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSinkBuildError),
    #[error(transparent)]
    Temporal(#[from] temporal::TemporalBuildError),
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcSinkBuildError),
}

/// Builds the sink of `spec`; a Kafka sink finds its cluster in `kafka` (the flow's `kafka:`
/// section) and is transactional with `transactional_id`; `budget` bounds the CEL the sink
/// evaluates.
pub fn build(
    spec: &SinkSpec,
    policy: RetryPolicy,
    kafka: Option<&KafkaConfig>,
    transactional_id: Option<&str>,
    budget: Budget,
) -> Result<AnySink, SinkBuildError> {
    Ok(match spec {
        SinkSpec::Http(cfg) => AnySink::Http(http::HttpSink::new(cfg, policy)?),
        SinkSpec::Kafka(cfg) => AnySink::Kafka(kafka::KafkaSink::new(
            cfg,
            kafka,
            policy,
            transactional_id,
            budget,
        )?),
        SinkSpec::Grpc(cfg) => AnySink::Grpc(grpc::GrpcSink::new(cfg, policy)?),
        SinkSpec::Temporal(cfg) => {
            AnySink::Temporal(temporal::TemporalSink::new(cfg, policy, budget)?)
        }
    })
}

impl Sink for AnySink {
    type Prepared = AnyPrepared;

    fn is_heavy(&self) -> bool {
        match self {
            AnySink::Http(s) => s.is_heavy(),
            AnySink::Kafka(s) => s.is_heavy(),
            AnySink::Temporal(s) => s.is_heavy(),
            AnySink::Grpc(s) => s.is_heavy(),
        }
    }

    fn prepare(&self, input: &InputEvent, budget: Budget) -> Result<AnyPrepared, FlowError> {
        Ok(match self {
            AnySink::Http(_) | AnySink::Grpc(_) => AnyPrepared::Nothing,
            AnySink::Kafka(s) => AnyPrepared::Kafka(s.prepare(input, budget)?),
            AnySink::Temporal(s) => AnyPrepared::Temporal(s.prepare(input, budget)?),
        })
    }

    fn seal(&self, event: &CloudEvent, prepared: &mut AnyPrepared) -> Result<(), FlowError> {
        match (self, prepared) {
            (AnySink::Kafka(s), AnyPrepared::Kafka(p)) => s.seal(event, p),
            (AnySink::Temporal(s), AnyPrepared::Temporal(p)) => s.seal(event, p),
            _ => Ok(()),
        }
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        prepared: AnyPrepared,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        // Every arm boxed: this future (and the pipeline's above it) then holds a pointer, not
        // the largest sink's future, which each level would copy whole when a delivery starts.
        let delivery: Delivery<'_> = match (self, prepared) {
            (AnySink::Http(s), _) => outline::pinned(|| s.deliver(event, (), ctx)),
            // tonic's futures are several KiB: built apart from this frame.
            (AnySink::Grpc(s), _) => outline::boxed(|| s.deliver(event, (), ctx)),
            (AnySink::Kafka(s), AnyPrepared::Kafka(p)) => {
                outline::pinned(|| s.deliver(event, p, ctx))
            }
            (AnySink::Temporal(s), AnyPrepared::Temporal(p)) => {
                outline::boxed(|| s.deliver(event, p, ctx))
            }
            // `prepared` comes from this sink's own `prepare`.
            _ => {
                return Err(DeliveryError::new(
                    DeliveryErrorKind::Other,
                    0,
                    "internal error: the delivery was prepared for another sink",
                ))
            }
        };
        delivery.await
    }

    fn transactions(&self) -> Option<&Arc<TransactionalProducer>> {
        match self {
            AnySink::Kafka(s) => s.transactions(),
            AnySink::Http(_) | AnySink::Temporal(_) | AnySink::Grpc(_) => None,
        }
    }

    fn connection_watch(
        &self,
        readiness: Readiness,
        component: String,
        cancel: CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static + use<>> {
        match self {
            AnySink::Temporal(s) => s.connection_watch(readiness, component, cancel),
            AnySink::Http(_) | AnySink::Kafka(_) | AnySink::Grpc(_) => None,
        }
    }
}
