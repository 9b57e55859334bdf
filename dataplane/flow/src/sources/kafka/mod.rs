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
//! Each assigned partition gets its own librdkafka queue (split off in the rebalance callback,
//! right after the assignment and before any of its records is fetched) and its own worker that
//! reads it: partitions are processed concurrently, the records of one partition in order (or,
//! with `ordering: key | unordered`, several at a time: see `partition.rs`). The consumer's main
//! queue then carries only rebalances, errors and statistics. Flow control is librdkafka's own:
//! a partition whose queue holds `queued.min.messages` records or `queued.max.messages.kbytes`
//! is not fetched until its worker drained it below that, re-checked every
//! `fetch.queue.backoff.ms` — nothing is paused and resumed, so no partition waits on a broker
//! thread's timeout. Memory per assigned partition is bounded by
//! `queued.max.messages.kbytes` ([`QUEUED_MAX_KBYTES`] unless `consumerProperties` says
//! otherwise) plus one fetch (`max.partition.fetch.bytes`, 1 MiB by default) plus the
//! `maxInFlightPerPartition` records its worker holds.
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

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use fiso_config::flow::{
    DeliveryOrdering, KafkaSourceConfig, SourceSpec, StartOffset, MAX_IN_FLIGHT_PER_PARTITION,
};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::kafka::client::{client_config, find_cluster};
use crate::metrics::FlowMetrics;
use crate::pipeline::LivePipeline;
use crate::pipeline::Pipeline;
use partition::{concurrent_worker, partition_worker, Partition};
use state::{lock, Done, State};
use transaction::Transactions;

pub use state::KafkaSourceError;

pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_COMMIT_BATCH_SIZE: u32 = 500;
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: u32 = 64;

/// `queued.max.messages.kbytes`: what librdkafka prefetches per partition (with split
/// partition queues the limit is per partition, not per consumer).
pub const QUEUED_MAX_KBYTES: u32 = 1024;

/// `queued.min.messages` is this many times `maxInFlightPerPartition` (at least
/// [`QUEUED_MIN_MESSAGES`]): enough prefetched that a worker rarely finds its queue empty.
const QUEUED_PER_IN_FLIGHT: u32 = 4;
const QUEUED_MIN_MESSAGES: u32 = 1000;

/// `fetch.queue.backoff.ms`: how soon a partition whose queue was full is fetched again once
/// drained (librdkafka's default, 1 s, would leave a fast worker idle).
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// How long the committed offsets of newly assigned partitions are waited for.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// How often librdkafka reports statistics, the source of `fiso_flow_consumer_lag`.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// A partition's own librdkafka queue.
type PartitionQueue = StreamPartitionQueue<LagContext>;

/// A partition just assigned, with its queue split off: the consumer loop starts its worker.
struct Assigned {
    partition: i32,
    epoch: u64,
    stop: CancellationToken,
    queue: PartitionQueue,
}

/// Publishes librdkafka's per-partition consumer lag (high watermark - committed offset) as
/// `fiso_flow_consumer_lag{flow,partition}`, and hands partitions over on a rebalance: an
/// assigned partition's queue is split off for its worker; before a partition is revoked, what
/// was processed of it is committed synchronously and its worker is stopped (the record in hand
/// is finished but no longer committed: the new owner reads it again).
struct LagContext {
    flow: String,
    metrics: FlowMetrics,
    topic: String,
    state: Arc<Mutex<State>>,
    /// An integer `startOffset`: where a partition without a committed offset starts.
    start_at: Option<i64>,
    transactions: Option<Arc<Transactions>>,
    /// The consumer itself, to split partition queues off (set once it is created).
    consumer: OnceLock<Weak<SourceConsumer>>,
    /// Parent of every partition worker's stop token.
    stop: CancellationToken,
    assigned: mpsc::UnboundedSender<Assigned>,
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

impl LagContext {
    /// With an integer `startOffset`, the partitions just assigned that have no committed offset
    /// are assigned again starting there (the others resume from their committed offset).
    fn start_at(&self, consumer: &BaseConsumer<Self>, assigned: &TopicPartitionList, start: i64) {
        let committed = match consumer.committed_offsets(assigned.clone(), COMMITTED_TIMEOUT) {
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

    /// Splits the queue of every partition just assigned off the main queue and hands it to
    /// the consumer loop. Called after the last `assign` of the rebalance (an `assign` joins
    /// split queues back) and before librdkafka fetched any record of these partitions.
    fn split(&self, assigned: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        for e in assigned.elements_for_topic(&self.topic) {
            let partition = e.partition();
            let Some(queue) = consumer.split_partition_queue(&self.topic, partition) else {
                tracing::warn!(flow = %self.flow, partition, "splitting a partition queue failed");
                continue;
            };
            let (epoch, stop) = lock(&self.state).assign(partition, &self.stop);
            let _ = self.assigned.send(Assigned {
                partition,
                epoch,
                stop,
                queue,
            });
        }
    }
}

impl ConsumerContext for LagContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        if assigned.count() == 0 {
            return;
        }
        if let Some(start) = self.start_at {
            self.start_at(consumer, assigned, start);
        }
        self.split(assigned);
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
                // Its worker reads no further record of its queue.
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

/// The consumer of `flow`'s source, configured from the flow; the partitions it is assigned
/// arrive on `assigned`, each with its own queue.
fn consumer(
    flow: &Pipeline,
    src: &KafkaSourceConfig,
    state: Arc<Mutex<State>>,
    transactions: Option<Arc<Transactions>>,
    stop: CancellationToken,
    assigned: mpsc::UnboundedSender<Assigned>,
) -> Result<Arc<SourceConsumer>, KafkaSourceError> {
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
    let queued_min = max_in_flight(src)
        .saturating_mul(QUEUED_PER_IN_FLIGHT)
        .max(QUEUED_MIN_MESSAGES);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES.to_string())
        .set("queued.min.messages", queued_min.to_string())
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    for (k, v) in &src.consumer_properties {
        config.set(k, v);
    }
    // Offsets are ours to commit: a passthrough property must not turn auto-commit back on.
    config.set("enable.auto.commit", "false");
    let consumer: Arc<SourceConsumer> = Arc::new(config.create_with_context(LagContext {
        flow: flow.name.clone(),
        metrics: flow.metrics().clone(),
        topic: src.topic.clone(),
        state,
        start_at,
        transactions,
        consumer: OnceLock::new(),
        stop,
        assigned,
    })?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    Ok(consumer)
}

fn max_in_flight(src: &KafkaSourceConfig) -> u32 {
    src.max_in_flight_per_partition
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT_PER_PARTITION)
        .clamp(1, MAX_IN_FLIGHT_PER_PARTITION)
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

    /// Runs `flow`'s consumer until `cancel`; `ready` is called once it subscribed. Each record
    /// goes through the pipeline current when it is taken from its queue.
    pub async fn run(
        &self,
        flow: &LivePipeline,
        cancel: &CancellationToken,
        ready: impl FnOnce(),
    ) -> Result<(), KafkaSourceError> {
        consume(&self.cfg, flow, cancel, ready).await
    }
}

/// Whether a flow changing from `old` to `new` keeps its consumer: same source section, same
/// cluster settings and no producer transaction (whose producer is the sink's, and whose
/// offsets go with it) on either side. Then only the pipeline is swapped.
pub fn consumer_unchanged(old: &Pipeline, new: &Pipeline) -> bool {
    let SourceSpec::Kafka(src) = &old.config.source else {
        return false;
    };
    let cluster = |p: &Pipeline| {
        find_cluster(
            p.config.kafka.as_ref(),
            Some(&src.cluster),
            "source.cluster",
        )
        .ok()
        .map(|(_, c)| c.clone())
    };
    old.name == new.name
        && old.config.source == new.config.source
        && cluster(old).is_some()
        && cluster(old) == cluster(new)
        && old.transactions().is_none()
        && new.transactions().is_none()
}

async fn consume(
    src: &KafkaSourceConfig,
    flows: &LivePipeline,
    cancel: &CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), KafkaSourceError> {
    // What the consumer is built from, which a swap leaves alone (see `consumer_unchanged`).
    let flow = &flows.load_full();
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
    let batch = src
        .commit_batch_size
        .unwrap_or(DEFAULT_COMMIT_BATCH_SIZE)
        .max(1);
    let state = Arc::new(Mutex::new(State {
        commit_batch: batch,
        ..State::default()
    }));
    let failed = lock(&state).failed.clone();
    let stop = CancellationToken::new();
    let (assigned_tx, mut assigned_rx) = mpsc::unbounded_channel::<Assigned>();
    let consumer = consumer(
        flow,
        src,
        Arc::clone(&state),
        transactions.clone(),
        stop.clone(),
        assigned_tx,
    )?;
    consumer.subscribe(&[src.topic.as_str()])?;
    ready();
    let committer = Committer {
        state: &state,
        consumer: &consumer,
        topic: &src.topic,
        transactions: transactions.as_deref(),
    };
    let interval = src.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
    let window = max_in_flight(src) as usize;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One worker per partition: partitions are processed concurrently, each in order.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
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
                // Several workers may have seen the same batch fill up: one commit takes it.
                Ok(()) => {
                    if lock(&state).commits.count >= batch {
                        committer.commit(CommitMode::Async).await?;
                    }
                }
                Err(e) => break Err(e),
            },
            _ = ticker.tick() => committer.commit(CommitMode::Async).await?,
            Some(a) = assigned_rx.recv() => {
                match ordering {
                    DeliveryOrdering::Partition => tasks.spawn(partition_worker(
                        Arc::clone(flows),
                        a.queue,
                        done_tx.clone(),
                        a.stop,
                        Arc::clone(&state),
                        a.epoch,
                        transactions.clone(),
                    )),
                    // Validation refuses these with `kafka_transaction`.
                    DeliveryOrdering::Key | DeliveryOrdering::Unordered => {
                        tasks.spawn(concurrent_worker(
                            Arc::clone(flows),
                            a.queue,
                            Partition::new(a.partition, a.epoch, Arc::clone(&state), done_tx.clone()),
                            a.stop,
                            ordering,
                            window,
                        ))
                    }
                };
            }
            // Serves rebalances, errors and statistics; records come on the partition queues.
            received = consumer.recv() => match received {
                Ok(m) => {
                    // Not split off in time: processing it here could overtake or trail its
                    // partition's worker, so the consumer restarts from the committed offsets.
                    break Err(KafkaSourceError::Unsplit {
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                    });
                }
                Err(e) => tracing::warn!(flow = %flow.name, error = %e, "kafka consumer error"),
            },
        }
    };
    // Workers finish the record in hand; what they finished is committed before returning, so
    // a restart resumes right after the last record delivered or dead-lettered.
    stop.cancel();
    drop(assigned_rx);
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    match (&result, transactions.as_deref()) {
        // The rebalance aborted the transaction already.
        (Err(KafkaSourceError::Transaction(_)), Some(_)) => {}
        _ => committer.commit(CommitMode::Sync).await?,
    }
    result
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
