//! A partition's worker: it processes the records of one assigned partition. Under `ordering:
//! partition` ([`partition_worker`]) one at a time, in offset order. Under `ordering: key |
//! unordered` ([`concurrent_worker`]) up to `maxInFlightPerPartition` at the same time; under
//! `key` the records of one key (all records without a key count as one) still go one at a
//! time, in offset order. Offsets are committed in order whatever finishes first: only up to
//! the first record that is neither delivered nor dead-lettered yet, so a restart never skips
//! one (records delivered past it are delivered again: at-least-once).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use fiso_config::flow::DeliveryOrdering;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::ConsumerContext;
use rdkafka::message::Message;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::record::process;
use super::state::{lock, Done, KafkaSourceError, State};
use super::transaction::Transactions;
use crate::kafka::client::error_text::describe;
use crate::pipeline::LivePipeline;
use crate::pipeline::Pipeline;

/// Processes one partition's records in order until `stop` or a record can be neither
/// delivered nor dead-lettered (then the partition stops there). Each record is read from
/// librdkafka's buffer in place, and released once done.
pub(super) async fn partition_worker<C: ConsumerContext + 'static>(
    flows: LivePipeline,
    queue: StreamPartitionQueue<C>,
    part: Partition,
    stop: CancellationToken,
    transactions: Option<Arc<Transactions>>,
) {
    let mut rewake = rewake();
    let mut first = true;
    // One stream for the worker's life: `recv` makes one per call, whose waker slot is taken
    // and given back under the queue's mutex, a lock pair per record.
    let mut messages = queue.stream();
    // Waited for only when no record is ready, as in `concurrent_worker`.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    while !stop.is_cancelled() {
        let message = tokio::select! {
            biased;
            Some(m) = messages.next() => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(flow = %flows.load().name, error = %describe(&e), "kafka partition error");
                    continue;
                }
            },
            _ = rewake.tick() => continue,
            _ = &mut stopped => return,
        };
        if std::mem::take(&mut first) {
            lock(&part.state).first_read(part.partition, part.epoch, message.offset());
        }
        let in_transaction = match &transactions {
            Some(tx) => Some(tx.enter().await),
            None => None,
        };
        // Revoked while waiting for a transaction commit: the new owner reads it.
        if stop.is_cancelled() {
            return;
        }
        // A swap takes effect from the next record; this one finishes on its pipeline.
        let processed = process(&flows.load_full(), &message, &part.shared).await;
        match processed {
            Ok(()) => {
                let due = lock(&part.state).done(part.partition, part.epoch, message.offset() + 1);
                drop(in_transaction);
                if due {
                    let _ = part.done.send(Ok(()));
                }
            }
            Err(e) => {
                let _ = part.done.send(Err(e));
                return;
            }
        }
    }
}

/// How often a partition worker reads its queue again even if it was not woken.
///
/// librdkafka wakes a split partition queue's reader only when the queue goes from empty to
/// non-empty, and that edge can be missed (rust-rdkafka #665, #840): the reader would then
/// wait forever while its partition fills up. Re-polling bounds such a stall to this.
const REWAKE: std::time::Duration = std::time::Duration::from_millis(100);

fn rewake() -> tokio::time::Interval {
    let mut every = tokio::time::interval(REWAKE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

/// Records that must not overlap share a lane.
type Lane = u64;

/// The lane of `m`; `None` when it waits for no other record (`ordering: unordered`).
fn lane_of(ordering: DeliveryOrdering, m: &impl Message) -> Option<Lane> {
    match ordering {
        DeliveryOrdering::Partition => Some(0),
        DeliveryOrdering::Unordered => None,
        // Two keys hashing alike only wait for each other: order is kept, never broken.
        DeliveryOrdering::Key => {
            let mut h = DefaultHasher::new();
            m.key().hash(&mut h);
            Some(h.finish())
        }
    }
}

/// The records waiting behind the one of their lane being delivered.
struct Lanes<M> {
    busy: HashMap<Lane, VecDeque<M>>,
}

impl<M> Default for Lanes<M> {
    fn default() -> Self {
        Lanes {
            busy: HashMap::new(),
        }
    }
}

impl<M> Lanes<M> {
    /// `m` back if its lane is free (it starts now); otherwise it waits its turn.
    fn enter(&mut self, lane: Option<Lane>, m: M) -> Option<M> {
        let Some(lane) = lane else {
            return Some(m);
        };
        match self.busy.entry(lane) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push_back(m);
                None
            }
            Entry::Vacant(free) => {
                free.insert(VecDeque::new());
                Some(m)
            }
        }
    }

    /// The record of `lane` finished: the next one of the lane, which starts now.
    fn leave(&mut self, lane: Option<Lane>) -> Option<M> {
        let lane = lane?;
        let waiting = self.busy.get_mut(&lane)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.busy.remove(&lane);
        }
        next
    }
}

/// Offsets received and not finished: what may be committed.
#[derive(Default)]
struct Window {
    unfinished: BTreeSet<i64>,
    /// One past the highest offset received.
    received_to: i64,
}

impl Window {
    fn receive(&mut self, offset: i64) {
        self.unfinished.insert(offset);
        self.received_to = self.received_to.max(offset + 1);
    }

    /// `offset` finished: the offset to commit now (the first one still unfinished).
    fn finish(&mut self, offset: i64) -> i64 {
        self.unfinished.remove(&offset);
        self.unfinished.first().copied().unwrap_or(self.received_to)
    }
}

type Delivered = (Option<Lane>, i64, Result<(), KafkaSourceError>);

async fn deliver<M: Message>(
    flow: Arc<Pipeline>,
    shared: &Handle,
    lane: Option<Lane>,
    m: M,
) -> Delivered {
    let result = process(&flow, &m, shared).await;
    (lane, m.offset(), result)
}

/// What a partition's worker keeps between records.
pub(super) struct Partition {
    partition: i32,
    epoch: u64,
    state: Arc<Mutex<State>>,
    done: mpsc::UnboundedSender<Done>,
    /// The process's shared runtime: a worker runs on a core's thread of its own
    /// ([`CoreThreads`](fiso_runtime::server::CoreThreads)), a heavy flow's events run here.
    shared: Handle,
    offsets: Window,
}

impl Partition {
    pub(super) fn new(
        partition: i32,
        epoch: u64,
        state: Arc<Mutex<State>>,
        done: mpsc::UnboundedSender<Done>,
        shared: Handle,
    ) -> Self {
        Partition {
            partition,
            epoch,
            state,
            done,
            shared,
            offsets: Window::default(),
        }
    }

    /// Counts a delivered (or dead-lettered) record for the next commit and returns the record
    /// of its lane to start next; `None` when the partition must stop (reported already).
    fn finished<M>(
        &mut self,
        lanes: &mut Lanes<M>,
        (lane, offset, result): Delivered,
    ) -> Option<Option<M>> {
        match result {
            Ok(()) => {
                let next = self.offsets.finish(offset);
                if lock(&self.state).done(self.partition, self.epoch, next) {
                    let _ = self.done.send(Ok(()));
                }
                Some(lanes.leave(lane))
            }
            Err(e) => {
                let _ = self.done.send(Err(e));
                None
            }
        }
    }
}

/// Delivers a partition's records, up to `window` at a time, until `stop` (then what is being
/// delivered is finished and counted, nothing new starts) or a record can be neither delivered
/// nor dead-lettered (then the partition stops there at once). Records are read from
/// librdkafka's buffer in place, and released once done.
pub(super) async fn concurrent_worker<C: ConsumerContext + 'static>(
    flows: LivePipeline,
    queue: StreamPartitionQueue<C>,
    mut part: Partition,
    stop: CancellationToken,
    ordering: DeliveryOrdering,
    window: usize,
) {
    let mut lanes = Lanes::default();
    let mut rewake = rewake();
    // One stream for the worker's life, as in `partition_worker`.
    let mut messages = queue.stream();
    let shared = part.shared.clone();
    let mut running = FuturesUnordered::new();
    // The worker wakes for every record delivered, and polling a cancellation future takes
    // its notifier's lock: the stop is looked at with `is_cancelled` on every turn, and waited
    // for (with the re-poll) only when nothing else is ready.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    while !stop.is_cancelled() {
        tokio::select! {
            biased;
            Some(delivered) = running.next() => {
                // Typed here: the stream's item type is only known from the pushes below.
                let delivered: Delivered = delivered;
                let lane = delivered.0;
                match part.finished(&mut lanes, delivered) {
                    Some(Some(next)) => running.push(deliver(flows.load_full(), &shared, lane, next)),
                    Some(None) => {}
                    None => return,
                }
            }
            Some(m) = messages.next(), if part.offsets.unfinished.len() < window => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(flow = %flows.load().name, error = %describe(&e), "kafka partition error");
                        continue;
                    }
                };
                // Stopped while this record came in: the partition's new owner reads it.
                if stop.is_cancelled() {
                    break;
                }
                if part.offsets.received_to == 0 {
                    lock(&part.state).first_read(part.partition, part.epoch, m.offset());
                }
                part.offsets.receive(m.offset());
                let lane = lane_of(ordering, &m);
                if let Some(m) = lanes.enter(lane, m) {
                    running.push(deliver(flows.load_full(), &shared, lane, m));
                }
            }
            _ = rewake.tick() => {}
            _ = &mut stopped => break,
        }
    }
    // Stopping: the records being delivered finish and are counted; none waiting starts.
    while let Some(delivered) = running.next().await {
        if part.finished(&mut lanes, delivered).is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    fn record(key: Option<&str>, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            key.map(|k| k.as_bytes().to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        )
    }

    #[test]
    fn commits_stop_at_the_first_unfinished_offset() {
        let mut w = Window::default();
        for o in 10..14 {
            w.receive(o);
        }
        assert_eq!(w.finish(12), 10);
        assert_eq!(w.finish(10), 11);
        assert_eq!(w.finish(11), 13);
        assert_eq!(w.finish(13), 14);
    }

    #[test]
    fn a_lane_takes_its_records_one_at_a_time_in_order() {
        let mut lanes = Lanes::default();
        let a = lane_of(DeliveryOrdering::Key, &record(Some("a"), 0));
        let b = lane_of(DeliveryOrdering::Key, &record(Some("b"), 1));
        assert_ne!(a, b);
        assert!(lanes.enter(a, record(Some("a"), 0)).is_some());
        assert!(lanes.enter(b, record(Some("b"), 1)).is_some());
        assert!(lanes.enter(a, record(Some("a"), 2)).is_none());
        assert!(lanes.enter(a, record(Some("a"), 3)).is_none());
        assert_eq!(lanes.leave(a).map(|m| m.offset()), Some(2));
        assert_eq!(lanes.leave(a).map(|m| m.offset()), Some(3));
        assert!(lanes.leave(a).is_none());
        assert!(
            lanes.enter(a, record(Some("a"), 4)).is_some(),
            "lane free again"
        );
    }

    #[test]
    fn keyless_records_share_a_lane_and_unordered_records_share_none() {
        let keyless = |o| lane_of(DeliveryOrdering::Key, &record(None, o));
        assert_eq!(keyless(0), keyless(1));
        assert_ne!(
            keyless(0),
            lane_of(DeliveryOrdering::Key, &record(Some(""), 2))
        );
        let unordered = lane_of(DeliveryOrdering::Unordered, &record(Some("a"), 0));
        assert_eq!(unordered, None, "an unordered record waits for none");
        let mut lanes = Lanes::default();
        assert!(lanes.enter(None, record(Some("a"), 0)).is_some());
        assert!(lanes.enter(None, record(Some("a"), 1)).is_some());
        assert!(lanes.leave(None).is_none());
    }
}
