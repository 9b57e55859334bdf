//! What the consumer loop, its partition workers, the rebalance callback and the transaction
//! committer share: which partitions are owned (by which worker epoch), the offsets processed
//! but not committed yet, and why the consumer must stop.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use fiso_runtime::kafka::error_text::describe;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// Why a Kafka source stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka source configuration: {0}")]
    Config(String),
    /// Said in one line by [`describe`] (not a `source()`: its text would say the code again).
    #[error("kafka consumer: {}", describe(.0))]
    Kafka(KafkaError),
    #[error("kafka transaction: {0}")]
    Transaction(String),
    /// The record could be neither delivered nor dead-lettered; its offset is not committed.
    #[error(
        "record {topic}-{partition}-{offset} was neither delivered nor dead-lettered: {reason}"
    )]
    Undelivered {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// A record reached the consumer's main queue instead of its partition's own queue.
    #[error(
        "record {topic}-{partition}-{offset} arrived before its partition queue was split off; \
         restarting from the committed offsets"
    )]
    Unsplit {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl From<KafkaError> for KafkaSourceError {
    fn from(e: KafkaError) -> Self {
        KafkaSourceError::Kafka(e)
    }
}

/// What the consumer loop, its partition workers and the rebalance callback share.
#[derive(Default)]
pub(super) struct State {
    pub(super) commits: Commits,
    /// Partitions owned now, each with the epoch of its current worker.
    pub(super) owned: HashMap<i32, Owned>,
    pub(super) epoch: u64,
    /// Why the consumer must stop, when the rebalance callback found out (the loop is woken
    /// by cancelling `failed`).
    pub(super) failure: Option<KafkaSourceError>,
    pub(super) failed: CancellationToken,
    /// `commitBatchSize`.
    pub(super) commit_batch: u32,
    /// The last lag seen of each owned partition.
    pub(super) lag: BTreeMap<i32, i64>,
}

pub(super) struct Owned {
    pub(super) epoch: u64,
    pub(super) stop: CancellationToken,
    /// The first offset its worker read: where its lag counts from while the group has
    /// committed nothing of the partition.
    pub(super) read_from: Option<i64>,
}

impl State {
    /// `partition` was just assigned: a new epoch for its worker, with its stop token (a worker
    /// of an earlier assignment still running is stopped).
    pub(super) fn assign(
        &mut self,
        partition: i32,
        parent: &CancellationToken,
    ) -> (u64, CancellationToken) {
        self.epoch += 1;
        let owned = Owned {
            epoch: self.epoch,
            stop: parent.child_token(),
            read_from: None,
        };
        let stop = owned.stop.clone();
        if let Some(earlier) = self.owned.insert(partition, owned) {
            earlier.stop.cancel();
        }
        (self.epoch, stop)
    }

    /// The worker of `epoch` read its first record of `partition`, at `offset`.
    pub(super) fn first_read(&mut self, partition: i32, epoch: u64, offset: i64) {
        if let Some(owned) = self.owned.get_mut(&partition).filter(|o| o.epoch == epoch) {
            owned.read_from.get_or_insert(offset);
        }
    }

    /// A record of `partition` is done by the worker of `epoch`: counted for the next commit
    /// unless the partition was revoked since. `true` for the record that makes
    /// `commitBatchSize` records wait for a commit: its worker tells the consumer loop, whose
    /// commit takes every record done by then. The records done before that commit do not tell
    /// it again (each would wake the loop for nothing; the commit interval is the backstop).
    pub(super) fn done(&mut self, partition: i32, epoch: u64, next: i64) -> bool {
        if self.owned.get(&partition).map(|o| o.epoch) != Some(epoch) {
            return false;
        }
        self.commits.done(partition, next);
        self.commits.count == self.commit_batch
    }
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A partition worker's report: `Ok` once a commit is due (a batch of records is done: their
/// offsets are in the shared [`Commits`]), or why it stopped.
pub(super) type Done = Result<(), KafkaSourceError>;

/// Offsets processed but not committed yet: partition → next offset to read.
#[derive(Default)]
pub(super) struct Commits {
    pub(super) next: BTreeMap<i32, i64>,
    /// Highest next offset seen per partition: a record read again after a rebalance never
    /// moves a commit backwards.
    highest: HashMap<i32, i64>,
    pub(super) count: u32,
}

impl Commits {
    fn done(&mut self, partition: i32, next: i64) {
        self.count += 1;
        let highest = self.highest.entry(partition).or_insert(next);
        if next < *highest {
            return;
        }
        *highest = next;
        self.next.insert(partition, next);
    }

    /// The offsets to commit now, forgotten here.
    pub(super) fn take(&mut self, topic: &str) -> Result<TopicPartitionList, KafkaSourceError> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.next {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
        }
        self.next.clear();
        self.count = 0;
        Ok(tpl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_batch(commit_batch: u32) -> State {
        State {
            commit_batch,
            ..State::default()
        }
    }

    #[test]
    fn the_consumer_loop_is_told_once_per_batch() {
        let mut state = with_batch(3);
        let (epoch, _) = state.assign(0, &CancellationToken::new());
        let told: Vec<bool> = (0..5).map(|o| state.done(0, epoch, o + 1)).collect();
        assert_eq!(told, [false, false, true, false, false]);
        let committed = state.commits.take("t").expect("offsets");
        assert_eq!(committed.count(), 1);
        let told: Vec<bool> = (5..8).map(|o| state.done(0, epoch, o + 1)).collect();
        assert_eq!(told, [false, false, true]);
    }

    #[test]
    fn a_record_of_a_revoked_partition_is_neither_counted_nor_told() {
        let parent = CancellationToken::new();
        let mut state = with_batch(1);
        let (old, _) = state.assign(0, &parent);
        let (new, _) = state.assign(0, &parent);
        assert!(!state.done(0, old, 1));
        assert_eq!(state.commits.count, 0);
        assert!(state.done(0, new, 1));
    }
}
