//! The one transactional producer of a `commitPolicy: kafka_transaction` flow, shared by its
//! Kafka sink (which produces inside the open transaction) and its Kafka source (which commits
//! offsets with it). librdkafka allows `init_transactions` once per producer, so the first
//! begin initialises and every later one only begins.

use std::time::Duration;

use fiso_runtime::kafka::Producer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio::sync::OnceCell;

/// How long one transaction call (init, offsets, commit, abort) may block.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A producer with a `transactional.id`; cheap to share behind an `Arc`.
pub struct TransactionalProducer {
    producer: Producer,
    /// Set once `init_transactions` succeeded.
    initialised: OnceCell<()>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("initialised", &self.initialised.initialized())
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// `producer` must have been created with a `transactional.id`.
    pub fn new(producer: Producer) -> Self {
        TransactionalProducer {
            producer,
            initialised: OnceCell::new(),
        }
    }

    /// The producer, for records produced inside the open transaction.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The producer with a transaction begun (its transactions initialised first if that has
    /// not happened yet).
    pub async fn begin(&self) -> Result<Producer, KafkaError> {
        self.initialised
            .get_or_try_init(|| {
                let producer = self.producer.clone();
                blocking(move || producer.init_transactions(TRANSACTION_TIMEOUT))
            })
            .await?;
        let producer = self.producer.clone();
        blocking(move || producer.begin_transaction().map(|()| producer)).await
    }
}

/// Runs a blocking librdkafka call off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
