//! Kafka source: a consumer group per flow, at-least-once.
//!
//! Each record becomes an event (JSON value; CloudEvents Kafka binding `ce_*` headers in; id
//! `<topic>-<partition>-<offset>` unless the event names its own) and goes through
//! [`Pipeline::handle`]. An offset is committed only once its record was delivered or
//! dead-lettered; commits are batched (`commitInterval` / `commitBatchSize`), asynchronous, with
//! a final synchronous commit when the flow stops. A record that can be neither delivered nor
//! dead-lettered stops the consumer (after committing what came before it) so the supervisor
//! restarts it from the last committed offset: nothing is ever skipped.
//!
//! Each assigned partition has its own worker: partitions are processed concurrently, the
//! records of one partition in order (or, with `ordering: key | unordered`, several at a time:
//! see `partition.rs`). At most `maxInFlightPerPartition` records are queued per partition;
//! beyond that up to one fetch (1 MiB) is held, then a partition whose worker falls behind is
//! paused (librdkafka stops fetching it) and resumed once its worker caught up, so one slow
//! partition holds up neither the others nor memory.
//!
//! On a rebalance, what was processed of the revoked partitions is committed synchronously
//! before they are revoked and their workers stop (a record in hand is finished but no longer
//! committed: the new owner reads it again). An integer `startOffset` applies to the assigned
//! partitions the group has no committed offset for.
//!
//! With `commitPolicy: kafka_transaction` offsets are committed through the sink's producer
//! transaction instead (see [`transaction`]).

mod partition;
mod record;
mod state;
mod transaction;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fiso_config::flow::{DeliveryOrdering, KafkaSourceConfig, StartOffset};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::kafka::client::{client_config, find_cluster};
use crate::metrics::FlowMetrics;
use crate::pipeline::Pipeline;
use partition::{concurrent_worker, partition_worker, Partition};
use state::{lock, Done, State};
use transaction::Transactions;

pub use state::KafkaSourceError;

pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_COMMIT_BATCH_SIZE: u32 = 500;
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: u32 = 64;

/// How long the committed offsets of newly assigned partitions are waited for.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// How often librdkafka reports statistics, the source of `fiso_flow_consumer_lag`.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// Publishes librdkafka's per-partition consumer lag (high watermark - committed offset) as
/// `fiso_flow_consumer_lag{flow,partition}`, and hands partitions over on a rebalance: before a
/// partition is revoked, what was processed of it is committed synchronously and its worker is
/// stopped (the record in hand is finished but no longer committed: the new owner reads it again).
struct LagContext {
    flow: String,
    metrics: FlowMetrics,
    topic: String,
    state: Arc<Mutex<State>>,
    /// An integer `startOffset`: where a partition without a committed offset starts.
    start_at: Option<i64>,
    transactions: Option<Arc<Transactions>>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (&partition, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag of -1 is unknown.
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag(&self.flow, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {
    /// With an integer `startOffset`, the partitions just assigned that have no committed offset
    /// are assigned again starting there (the others resume from their committed offset).
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Some(start), Rebalance::Assign(assigned)) = (self.start_at, rebalance) else {
            return;
        };
        if assigned.count() == 0 {
            return;
        }
        let committed = match consumer.committed_offsets((*assigned).clone(), COMMITTED_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(flow = %self.flow, error = %e, "reading committed offsets failed");
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut changed = false;
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => {
                    changed = true;
                    Offset::Offset(start)
                }
            };
            if tpl
                .add_partition_offset(e.topic(), e.partition(), offset)
                .is_err()
            {
                return;
            }
        }
        if changed {
            if let Err(e) = consumer.assign(&tpl) {
                tracing::warn!(flow = %self.flow, error = %e, "assigning at startOffset failed");
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let revoked: Vec<i32> = revoked
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if let Some(tx) = &self.transactions {
            // The revoked workers start no new record; what they have in hand goes into the
            // transaction committed now, with every partition's offsets.
            for p in &revoked {
                if let Some(owned) = lock(&self.state).owned.get(p) {
                    owned.stop.cancel();
                }
            }
            let committed = tx.commit_blocking(&self.state, consumer.group_metadata(), &self.topic);
            let mut state = lock(&self.state);
            for p in &revoked {
                state.owned.remove(p);
            }
            if let Err(e) = committed {
                state.failure.get_or_insert(e);
                state.failed.cancel();
            }
            return;
        }
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = lock(&self.state);
            for p in revoked {
                if let Some(owned) = state.owned.remove(&p) {
                    owned.stop.cancel();
                }
                if let Some(next) = state.commits.next.remove(&p) {
                    let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(next));
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => tracing::info!(
                flow = %self.flow, partitions = tpl.count(),
                "committed revoked partitions before the rebalance"
            ),
            Err(e) => {
                tracing::warn!(flow = %self.flow, error = %e, "commit before rebalance failed")
            }
        }
    }
}

type SourceConsumer = StreamConsumer<LagContext>;

/// The consumer of `flow`'s source, configured from the flow.
fn consumer(
    flow: &Pipeline,
    src: &KafkaSourceConfig,
    state: Arc<Mutex<State>>,
    transactions: Option<Arc<Transactions>>,
) -> Result<SourceConsumer, KafkaSourceError> {
    let (_, cluster) = find_cluster(
        flow.config.kafka.as_ref(),
        Some(&src.cluster),
        "source.cluster",
    )
    .map_err(|e| KafkaSourceError::Config(e.to_string()))?;
    let mut config = client_config(cluster).map_err(|e| KafkaSourceError::Config(e.to_string()))?;
    let group = src
        .consumer_group
        .clone()
        .unwrap_or_else(|| format!("fiso-{}", flow.name));
    let reset = match src.start_offset {
        StartOffset::Earliest => "earliest",
        StartOffset::Latest => "latest",
        // Partitions without a committed offset start there (see `post_rebalance`); past the
        // end of a partition, from its beginning.
        StartOffset::Offset(_) => "earliest",
    };
    let start_at = match src.start_offset {
        StartOffset::Offset(n) => Some(n),
        _ => None,
    };
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (k, v) in &src.consumer_properties {
        config.set(k, v);
    }
    // Offsets are ours to commit: a passthrough property must not turn auto-commit back on.
    config.set("enable.auto.commit", "false");
    Ok(config.create_with_context(LagContext {
        flow: flow.name.clone(),
        metrics: flow.metrics().clone(),
        topic: src.topic.clone(),
        state,
        start_at,
        transactions,
    })?)
}

/// A Kafka source: a consumer group on one topic.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    cfg: KafkaSourceConfig,
}

impl KafkaSource {
    pub fn new(cfg: &KafkaSourceConfig) -> Self {
        KafkaSource { cfg: cfg.clone() }
    }

    /// The cluster it consumes.
    pub fn cluster(&self) -> &str {
        &self.cfg.cluster
    }

    /// Runs `flow`'s consumer until `cancel`; `ready` is called once it subscribed.
    pub async fn run(
        &self,
        flow: &Arc<Pipeline>,
        cancel: &CancellationToken,
        ready: impl FnOnce(),
    ) -> Result<(), KafkaSourceError> {
        consume(&self.cfg, flow, cancel, ready).await
    }
}

async fn consume(
    src: &KafkaSourceConfig,
    flow: &Arc<Pipeline>,
    cancel: &CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), KafkaSourceError> {
    let transactions = match flow.transactions() {
        Some(producer) => Some(Arc::new(Transactions::new(
            producer.begin().await.map_err(|e| {
                KafkaSourceError::Transaction(format!("starting a transaction: {e}"))
            })?,
        ))),
        None => None,
    };
    let ordering = src.ordering.unwrap_or_default();
    if ordering != DeliveryOrdering::Partition && transactions.is_some() {
        return Err(KafkaSourceError::Config(
            "kafka_transaction needs `ordering: partition`".into(),
        ));
    }
    let state = Arc::new(Mutex::new(State::default()));
    let failed = lock(&state).failed.clone();
    let consumer = consumer(flow, src, Arc::clone(&state), transactions.clone())?;
    consumer.subscribe(&[src.topic.as_str()])?;
    ready();
    let committer = Committer {
        state: &state,
        consumer: &consumer,
        topic: &src.topic,
        transactions: transactions.as_deref(),
    };
    let interval = src.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
    let batch = src
        .commit_batch_size
        .unwrap_or(DEFAULT_COMMIT_BATCH_SIZE)
        .max(1);
    let queue = src
        .max_in_flight_per_partition
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT_PER_PARTITION)
        .max(1) as usize;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One worker per partition: partitions are processed concurrently, each in order.
    let stop = CancellationToken::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut workers: HashMap<i32, Worker> = HashMap::new();
    let mut room = FuturesUnordered::new();
    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            _ = failed.cancelled() => {
                break Err(lock(&state).failure.take().unwrap_or_else(|| {
                    KafkaSourceError::Transaction("stopped by the rebalance".into())
                }))
            }
            Some(done) = done_rx.recv() => match done {
                Ok(()) => {
                    if lock(&state).commits.count >= batch {
                        committer.commit(CommitMode::Async).await?;
                    }
                }
                Err(e) => break Err(e),
            },
            _ = ticker.tick() => committer.commit(CommitMode::Async).await?,
            Some((partition, epoch)) = room.next() => {
                let Some(worker) = workers.get_mut(&partition).filter(|w| w.epoch == epoch) else {
                    continue;
                };
                if !worker.forward() {
                    room.push(worker.room(partition));
                } else if std::mem::take(&mut worker.paused) {
                    resume(&consumer, &src.topic, partition);
                }
            }
            received = consumer.recv() => {
                let message = match received {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(flow = %flow.name, error = %e, "kafka consumer error");
                        continue;
                    }
                };
                // A partition revoked and assigned again gets a new worker (the old one stopped).
                let partition = message.partition();
                let (epoch, partition_stop) = lock(&state).own(partition, &stop);
                if workers.get(&partition).is_none_or(|w| w.epoch != epoch) {
                    let (tx, rx) = mpsc::channel(queue);
                    match ordering {
                        DeliveryOrdering::Partition => tasks.spawn(partition_worker(
                            Arc::clone(flow),
                            rx,
                            done_tx.clone(),
                            partition_stop,
                            Arc::clone(&state),
                            epoch,
                            transactions.clone(),
                        )),
                        // Validation refuses these with `kafka_transaction`.
                        DeliveryOrdering::Key | DeliveryOrdering::Unordered => {
                            tasks.spawn(concurrent_worker(
                                Arc::clone(flow),
                                rx,
                                Partition::new(partition, epoch, Arc::clone(&state), done_tx.clone()),
                                partition_stop,
                                ordering,
                                queue,
                            ))
                        }
                    };
                    workers.insert(partition, Worker::new(epoch, tx));
                }
                let worker = workers.get_mut(&partition).expect("worker just ensured");
                let was_held = !worker.held.is_empty();
                worker.hold(message);
                // Records beyond a full queue wait here, in order, until the worker made room;
                // a partition with a whole fetch waiting is paused until they all moved on.
                if !worker.forward() {
                    if !was_held {
                        room.push(worker.room(partition));
                    }
                    if !worker.paused && worker.held_bytes >= HOLD_BYTES {
                        pause(&consumer, &src.topic, partition);
                        worker.paused = true;
                    }
                }
            }
        }
    };
    // Workers finish the record in hand; what they finished is committed before returning, so
    // a restart resumes right after the last record delivered or dead-lettered.
    stop.cancel();
    drop(workers);
    drop(room);
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    match (&result, transactions.as_deref()) {
        // The rebalance aborted the transaction already.
        (Err(KafkaSourceError::Transaction(_)), Some(_)) => {}
        _ => committer.commit(CommitMode::Sync).await?,
    }
    result
}

/// Bytes of records held beyond a partition's full queue before the partition is paused: one
/// fetch at librdkafka's default `max.partition.fetch.bytes`. Pausing drops what librdkafka
/// prefetched for the partition and resuming fetches it again, so pausing as soon as the queue
/// is full would fetch a whole batch again for every few records let in.
const HOLD_BYTES: usize = 1 << 20;

/// A partition's worker as the consumer loop sees it.
struct Worker {
    epoch: u64,
    queue: mpsc::Sender<OwnedMessage>,
    /// Records received while the queue was full, oldest first, and their size.
    held: VecDeque<OwnedMessage>,
    held_bytes: usize,
    paused: bool,
}

fn size(m: &OwnedMessage) -> usize {
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)
}

impl Worker {
    fn new(epoch: u64, queue: mpsc::Sender<OwnedMessage>) -> Self {
        Worker {
            epoch,
            queue,
            held: VecDeque::new(),
            held_bytes: 0,
            paused: false,
        }
    }

    fn hold(&mut self, m: OwnedMessage) {
        self.held_bytes += size(&m);
        self.held.push_back(m);
    }

    /// Moves held records into the queue; `true` once none is held.
    fn forward(&mut self) -> bool {
        while let Some(m) = self.held.pop_front() {
            let bytes = size(&m);
            match self.queue.try_send(m) {
                Ok(()) => self.held_bytes -= bytes,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.held.push_front(m);
                    return false;
                }
                // The worker stopped and reported why; its records are read again.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.held.clear();
                    self.held_bytes = 0;
                }
            }
        }
        true
    }

    /// Resolves once the queue has room again.
    fn room(&self, partition: i32) -> BoxFuture<'static, (i32, u64)> {
        let (queue, epoch) = (self.queue.clone(), self.epoch);
        Box::pin(async move {
            drop(queue.reserve().await);
            (partition, epoch)
        })
    }
}

fn partition_list(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

fn pause(consumer: &SourceConsumer, topic: &str, partition: i32) {
    tracing::debug!(topic, partition, "partition paused: its worker is behind");
    if let Err(e) = consumer.pause(&partition_list(topic, partition)) {
        tracing::warn!(topic, partition, error = %e, "pausing a partition failed");
    }
}

fn resume(consumer: &SourceConsumer, topic: &str, partition: i32) {
    tracing::debug!(topic, partition, "partition resumed");
    if let Err(e) = consumer.resume(&partition_list(topic, partition)) {
        // Not assigned any more: the next owner reads it.
        tracing::debug!(topic, partition, error = %e, "resuming a partition failed");
    }
}

/// Commits what was processed and not committed yet: on the consumer, or with the open
/// transaction under `commitPolicy: kafka_transaction`.
struct Committer<'a> {
    state: &'a Mutex<State>,
    consumer: &'a SourceConsumer,
    topic: &'a str,
    transactions: Option<&'a Transactions>,
}

impl Committer<'_> {
    async fn commit(&self, mode: CommitMode) -> Result<(), KafkaSourceError> {
        if let Some(tx) = self.transactions {
            return tx
                .commit(self.state, self.consumer.group_metadata(), self.topic)
                .await;
        }
        let tpl = lock(self.state).commits.take(self.topic)?;
        if tpl.count() == 0 {
            return Ok(());
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {}
            // Partitions revoked by a rebalance: their records are read again by the new owner.
            Err(e) => tracing::warn!(topic = self.topic, error = %e, "offset commit failed"),
        }
        Ok(())
    }
}
