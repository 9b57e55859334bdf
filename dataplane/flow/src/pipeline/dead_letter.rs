//! Dead-lettering from the pipeline: the one place a [`DeadLetter`] is built from an event's
//! context and failure (a sink that would not take it, or an event refused before delivery),
//! and the queue it is written to ([`DeadLetterQueue`], the Kafka DLQ in production).

use std::future::Future;

use super::delivery::{DeliveryContext, SinkResponse};
use crate::kafka::client::{KafkaDelivery, KafkaDeliveryError};
use crate::kafka::dlq::{DeadLetter, DlqWriter};

/// Where the pipeline writes dead letters.
pub trait DeadLetterQueue: Send + Sync + 'static {
    /// The topic dead letters go to.
    fn topic(&self) -> &str;

    /// Writes `letter`, retrying per the flow's policy.
    fn write(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<KafkaDelivery, KafkaDeliveryError>> + Send;
}

impl DeadLetterQueue for DlqWriter {
    fn topic(&self) -> &str {
        DlqWriter::topic(self)
    }

    fn write(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<KafkaDelivery, KafkaDeliveryError>> + Send {
        DlqWriter::write(self, letter)
    }
}

/// Why an event is dead-lettered.
pub(super) struct Failure<'a> {
    /// Stable code: `SINK_DELIVERY_FAILED`, `TRANSFORM_FAILED`, ...
    pub code: &'a str,
    pub message: String,
    /// Attempts the sink made (0 for an event refused before delivery).
    pub attempts: u32,
    /// The sink's last answer, when it gave one.
    pub response: Option<&'a SinkResponse>,
}

/// The dead letter of the event `ctx` describes: its original key and value (the source's raw
/// payload), where it came from, and why it failed.
pub(super) fn letter(flow: &str, ctx: &DeliveryContext, failure: Failure<'_>) -> DeadLetter {
    let origin = ctx.origin.as_ref();
    DeadLetter {
        key: origin.and_then(|o| o.key.clone()),
        value: ctx.body.to_vec(),
        original_topic: origin.map(|o| o.topic.clone()),
        original_partition: origin.map(|o| o.partition),
        original_offset: origin.map(|o| o.offset),
        error_code: failure.code.to_owned(),
        error_message: failure.message,
        retry_count: failure.attempts,
        failed_at: chrono::Utc::now(),
        flow_name: flow.to_owned(),
        correlation_id: ctx.correlation_id.clone(),
        http_status: failure.response.map(|r| r.status.as_u16()),
        response_body: failure.response.map(|r| r.body.to_vec()),
    }
}
