//! Sources: where a flow's events come from. [`build`] (the only place that matches on the
//! source spec) turns a flow's `source:` section into an [`AnySource`]: an HTTP route served
//! by a shared server, or a task of its own (a Kafka consumer, a gRPC server). Each source turns
//! the pipeline's [`Outcome`](crate::pipeline::delivery::Outcome) into its protocol's answer.

pub mod grpc;
mod grpc_incoming;
pub mod http;
pub mod kafka;
pub mod request;
mod status;

use fiso_config::flow::SourceSpec;
use tokio_util::sync::CancellationToken;

use crate::pipeline::LivePipeline;
use crate::pipeline::Pipeline;

pub use status::SourceStatus;

/// How this process runs its sources, beyond what the flow files say (`fiso dev` tunes them
/// for an edit-and-run loop; `fiso flow` / `fiso run` take the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOptions {
    pub kafka: kafka::KafkaSourceOptions,
}

/// A built source of any type.
#[derive(Debug, Clone)]
pub enum AnySource {
    /// A path on a shared HTTP server (see `topology::router`).
    Route(http::HttpSource),
    /// A source that runs as a task of its own.
    Task(TaskSource),
}

/// A source that runs as a task of its own, until cancelled or failed.
#[derive(Debug, Clone)]
pub enum TaskSource {
    Kafka(kafka::KafkaSource),
    Grpc(grpc::GrpcSource),
}

/// The source of `spec`.
pub fn build(spec: &SourceSpec, options: &SourceOptions) -> AnySource {
    match spec {
        SourceSpec::Http(cfg) => AnySource::Route(http::HttpSource::new(cfg)),
        SourceSpec::Kafka(cfg) => AnySource::Task(TaskSource::Kafka(kafka::KafkaSource::new(
            cfg,
            &options.kafka,
        ))),
        SourceSpec::Grpc(cfg) => AnySource::Task(TaskSource::Grpc(grpc::GrpcSource::new(cfg))),
    }
}

impl AnySource {
    /// The cluster a Kafka source consumes.
    pub fn kafka_cluster(&self) -> Option<&str> {
        match self {
            AnySource::Task(TaskSource::Kafka(k)) => Some(k.cluster()),
            AnySource::Route(_) | AnySource::Task(TaskSource::Grpc(_)) => None,
        }
    }
}

impl TaskSource {
    /// Runs the source of `flow` until `cancel`, reporting on `status` whether it serves (a
    /// gRPC server once it listens, a consumer while it has its partitions). An error stops it
    /// (the supervisor restarts it).
    pub async fn run(
        &self,
        flow: &LivePipeline,
        cancel: &CancellationToken,
        status: &SourceStatus,
    ) -> Result<(), String> {
        match self {
            TaskSource::Kafka(k) => k.run(flow, cancel, status).await.map_err(|e| e.to_string()),
            TaskSource::Grpc(g) => g
                .run(&flow.load_full(), cancel, || status.serving())
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether a running instance of this source keeps serving when its flow's pipeline
    /// changes from `old` to `new` (only the pipeline is swapped, see [`LivePipeline`]).
    pub fn keeps_running(&self, old: &Pipeline, new: &Pipeline) -> bool {
        match self {
            TaskSource::Kafka(_) => kafka::consumer_unchanged(old, new),
            TaskSource::Grpc(_) => false,
        }
    }
}
