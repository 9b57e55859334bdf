//! The contract between the pipeline and a sink. The pipeline calls, per event: [`Sink::prepare`]
//! on the input event (what the sink renders with CEL before the envelope: a Kafka key,
//! Temporal params), [`Sink::seal`] on the CloudEvent as it will be sent (a Temporal workflow
//! id), then [`Sink::deliver`]. Everything sink-specific stays behind it, so the pipeline and
//! the sources never name a sink.

use std::future::Future;
use std::sync::Arc;

use crate::CloudEvent;
use fiso_runtime::Readiness;
use tokio_util::sync::CancellationToken;

use crate::cel::budget::Budget;
use crate::kafka::txn::TransactionalProducer;
use crate::pipeline::delivery::{DeliveryContext, DeliveryError, Receipt};
use crate::{FlowError, InputEvent};

/// Where a flow delivers its CloudEvents.
pub trait Sink: Send + Sync + 'static {
    /// What [`Sink::prepare`] renders from an event for its delivery.
    type Prepared: Send;

    /// Whether preparing may take long (a loop in a CEL expression, see
    /// [`CompiledExpr::is_heavy`](crate::CompiledExpr::is_heavy)): the pipeline then runs it
    /// off the async workers.
    fn is_heavy(&self) -> bool {
        false
    }

    /// Renders what the sink needs from the input event's CEL scope (`budget` bounds it); an
    /// error refuses the event (`TRANSFORM_FAILED`).
    fn prepare(&self, input: &InputEvent, budget: Budget) -> Result<Self::Prepared, FlowError>;

    /// Completes `prepared` from the CloudEvent as it will be sent (after interceptors); an
    /// error refuses the event.
    fn seal(&self, _event: &CloudEvent, _prepared: &mut Self::Prepared) -> Result<(), FlowError> {
        Ok(())
    }

    /// Delivers `event`, retrying per the flow's policy.
    fn deliver(
        &self,
        event: &CloudEvent,
        prepared: Self::Prepared,
        ctx: &DeliveryContext,
    ) -> impl Future<Output = Result<Receipt, DeliveryError>> + Send;

    /// The producer whose transactions the source commits offsets with, under
    /// `commitPolicy: kafka_transaction`.
    fn transactions(&self) -> Option<&Arc<TransactionalProducer>> {
        None
    }

    /// A task that connects the sink in the background and reports readiness component
    /// `component` not ready until it is connected; `None` for a sink that needs none. The task
    /// ends when connected or on `cancel`.
    fn connection_watch(
        &self,
        _readiness: Readiness,
        _component: String,
        _cancel: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<Self>> {
        None::<std::future::Ready<()>>
    }
}
