//! `commitPolicy: kafka_transaction`: the records a Kafka → Kafka flow produces and the source
//! offsets they came from are committed in one producer transaction
//! (`sendOffsetsToTransaction`), so the output topic and the consumer group move together.
//!
//! Records being processed hold the [`Transactions::barrier`] shared; a commit holds it
//! exclusively, so every record produced inside a transaction belongs to an offset committed
//! with it. A transaction that cannot be committed is aborted and the consumer restarts from
//! the group's committed offsets: the aborted records are processed again, none is skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use fiso_runtime::kafka::Producer;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::TopicPartitionList;
use tokio::sync::{Notify, RwLock, RwLockReadGuard};

use super::state::{lock, KafkaSourceError, State};
use crate::kafka::txn::{blocking, TRANSACTION_TIMEOUT};

/// How long a rebalance waits for the records in hand before it gives the transaction up.
const REBALANCE_WAIT: Duration = Duration::from_secs(10);

pub(super) struct Transactions {
    producer: Producer,
    barrier: RwLock<()>,
    /// Set while a rebalance waits for the barrier: workers start no new record meanwhile
    /// (the rebalance callback cannot queue on the async lock like an async writer does).
    draining: AtomicBool,
    drained: Notify,
}

impl Transactions {
    /// Transactions on `producer`, which has a transaction begun.
    pub(super) fn new(producer: Producer) -> Self {
        Transactions {
            producer,
            barrier: RwLock::new(()),
            draining: AtomicBool::new(false),
            drained: Notify::new(),
        }
    }

    /// Held while one record is processed: no transaction commits meanwhile.
    pub(super) async fn enter(&self) -> RwLockReadGuard<'_, ()> {
        loop {
            let resumed = self.drained.notified();
            if !self.draining.load(Ordering::Acquire) {
                break;
            }
            resumed.await;
        }
        self.barrier.read().await
    }

    /// Commits the open transaction with the offsets processed so far and begins the next one;
    /// on failure the transaction is aborted.
    pub(super) async fn commit(
        &self,
        state: &Mutex<State>,
        group: Option<ConsumerGroupMetadata>,
        topic: &str,
    ) -> Result<(), KafkaSourceError> {
        let _exclusive = self.barrier.write().await;
        let offsets = lock(state).commits.take(topic)?;
        if offsets.count() == 0 {
            return Ok(());
        }
        let group = group_metadata(group)?;
        let producer = self.producer.clone();
        let committed = blocking(move || commit_blocking(&producer, &offsets, &group)).await;
        self.finish(committed).await
    }

    /// [`Self::commit`] from the rebalance callback, which must not return before the revoked
    /// partitions are settled: waits (blocking, at most [`REBALANCE_WAIT`]) for the records in
    /// hand. `Err` means the transaction was aborted and the consumer must restart.
    pub(super) fn commit_blocking(
        &self,
        state: &Mutex<State>,
        group: Option<ConsumerGroupMetadata>,
        topic: &str,
    ) -> Result<(), KafkaSourceError> {
        self.draining.store(true, Ordering::Release);
        let committed = self.commit_drained(state, group, topic);
        self.draining.store(false, Ordering::Release);
        self.drained.notify_waiters();
        committed
    }

    fn commit_drained(
        &self,
        state: &Mutex<State>,
        group: Option<ConsumerGroupMetadata>,
        topic: &str,
    ) -> Result<(), KafkaSourceError> {
        let deadline = std::time::Instant::now() + REBALANCE_WAIT;
        let exclusive = loop {
            if let Ok(guard) = self.barrier.try_write() {
                break Some(guard);
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let committed = match exclusive {
            Some(_exclusive) => {
                let offsets = lock(state).commits.take(topic)?;
                if offsets.count() == 0 {
                    return Ok(());
                }
                let group = group_metadata(group)?;
                commit_blocking(&self.producer, &offsets, &group).map_err(|e| e.to_string())
            }
            None => Err(format!(
                "records in hand did not finish within {}s of a rebalance",
                REBALANCE_WAIT.as_secs()
            )),
        };
        committed.map_err(|reason| {
            let abort = self.producer.abort_transaction(TRANSACTION_TIMEOUT);
            let begin = abort.and_then(|()| self.producer.begin_transaction());
            aborted(reason, begin.err())
        })
    }

    async fn finish(&self, committed: Result<(), KafkaError>) -> Result<(), KafkaSourceError> {
        let Err(e) = committed else {
            return Ok(());
        };
        let producer = self.producer.clone();
        let reopened = blocking(move || {
            producer.abort_transaction(TRANSACTION_TIMEOUT)?;
            producer.begin_transaction()
        })
        .await;
        Err(aborted(e.to_string(), reopened.err()))
    }
}

fn group_metadata(
    group: Option<ConsumerGroupMetadata>,
) -> Result<ConsumerGroupMetadata, KafkaSourceError> {
    group.ok_or_else(|| KafkaSourceError::Transaction("the consumer has no group metadata".into()))
}

/// Sends `offsets` to the open transaction, commits it and begins the next one.
fn commit_blocking(
    producer: &FutureProducer,
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
) -> Result<(), KafkaError> {
    producer.send_offsets_to_transaction(offsets, group, TRANSACTION_TIMEOUT)?;
    producer.commit_transaction(TRANSACTION_TIMEOUT)?;
    producer.begin_transaction()
}

fn aborted(reason: String, reopen: Option<KafkaError>) -> KafkaSourceError {
    KafkaSourceError::Transaction(match reopen {
        None => format!("transaction aborted: {reason}"),
        Some(r) => format!("transaction aborted: {reason}; the producer cannot go on: {r}"),
    })
}
