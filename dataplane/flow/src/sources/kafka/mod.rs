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
//! thread's timeout — and a fetch for partitions with nothing new is held by the broker at most
//! `fetch.wait.max.ms` ([`FETCH_WAIT_MAX_MS`]), so a partition with a backlog does not wait on
//! one either. Memory per assigned partition is bounded by
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
//!
//! The flow is ready (`/readyz`) once the group assigned the consumer its partitions (see
//! [`group`] for what counts); until then, and again after a revocation left it none, it says
//! what it waits for, on `/readyz` and in a log line every `status_interval`. Assignments and
//! revocations are logged with their partitions. When the flow stops (shutdown, reload,
//! removal) the consumer commits what was processed and then leaves its group, so the next
//! consumer of the group gets the partitions without waiting for this one's session to expire.

mod group;
mod options;
mod partition;
mod record;
mod state;
mod transaction;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use fiso_config::flow::{
    DeliveryOrdering, KafkaSourceConfig, SourceSpec, StartOffset, MAX_IN_FLIGHT_PER_PARTITION,
};
use fiso_runtime::server::CoreThreads;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::status::SourceStatus;
use crate::kafka::client::error_text::{connection_failure, describe, unreachable};
use crate::kafka::client::{client_config, find_cluster};
use crate::metrics::FlowMetrics;
use crate::pipeline::LivePipeline;
use crate::pipeline::Pipeline;
use group::Membership;
use partition::{concurrent_worker, partition_worker, Partition};
use state::{lock, Done, State};
use transaction::Transactions;

pub use options::KafkaSourceOptions;
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

/// `fetch.wait.max.ms`: how long the broker may hold a fetch for partitions with nothing new.
/// librdkafka keeps one fetch in flight per broker, so a partition whose queue was full when a
/// fetch for caught-up partitions went out is fetched again only once that fetch is answered:
/// with librdkafka's 500 ms, a backlog on one partition beside idle ones drained at ~4 000
/// records/s. This is about the time a worker takes to drain a full queue, so the refill is
/// under way before the queue runs dry; an idle consumer asks each broker at most 50 times a
/// second.
const FETCH_WAIT_MAX_MS: &str = "20";

/// How long the committed offsets of newly assigned partitions are waited for.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an empty assignment waits to learn whether the topic exists.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a consumer told to stop in the middle of a group join waits for the join to
/// finish before it leaves (see [`Consuming::run`]).
const JOIN_BEFORE_LEAVE: Duration = Duration::from_secs(10);

/// How often librdkafka reports statistics, the source of `fiso_flow_consumer_lag`.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// A partition's own librdkafka queue.
type PartitionQueue = StreamPartitionQueue<SourceContext>;

/// A partition just assigned, with its queue split off: the consumer loop starts its worker.
struct Assigned {
    partition: i32,
    epoch: u64,
    stop: CancellationToken,
    queue: PartitionQueue,
}

/// What the rebalance callback tells the consumer loop.
enum Event {
    /// A partition to start a worker for.
    Partition(Assigned),
    /// The assignment changed: whether the flow serves may have too.
    Rebalanced,
}

/// Publishes the per-partition consumer lag as `fiso_flow_consumer_lag{flow,partition}`, keeps
/// the consumer's [`Membership`] current, and hands partitions over on a rebalance: an
/// assigned partition's queue is split off for its worker; before a partition is revoked, what
/// was processed of it is committed synchronously and its worker is stopped (the record in hand
/// is finished but no longer committed: the new owner reads it again).
struct SourceContext {
    flow: String,
    metrics: FlowMetrics,
    topic: String,
    membership: Arc<Membership>,
    state: Arc<Mutex<State>>,
    /// An integer `startOffset`: where a partition without a committed offset starts.
    start_at: Option<i64>,
    transactions: Option<Arc<Transactions>>,
    /// The consumer itself, to split partition queues off (set once it is created).
    consumer: OnceLock<Weak<SourceConsumer>>,
    /// Parent of every partition worker's stop token.
    stop: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
}

impl ClientContext for SourceContext {
    /// Lag: the high watermark minus the committed offset; for a partition the group has not
    /// committed anything of yet (librdkafka says -1), minus the first offset this consumer
    /// read of it, so a new group's backlog shows as well.
    fn stats(&self, statistics: Statistics) {
        let mut state = lock(&self.state);
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (&partition, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                let Some(owned) = state.owned.get(&partition).filter(|_| partition >= 0) else {
                    continue;
                };
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else {
                    match owned.read_from {
                        Some(first) if p.hi_offset >= first => p.hi_offset - first,
                        _ => continue,
                    }
                };
                self.metrics.consumer_lag(&self.flow, partition, lag);
                state.lag.insert(partition, lag);
            }
        }
        drop(state);
        if self.membership.statistics(&statistics) {
            tracing::info!(flow = %self.flow, brokers = %self.membership.bootstrap, "connected to the Kafka broker");
        }
    }

    /// librdkafka's own log, at debug level (the consumer says what matters itself); a failed
    /// broker connection's words are kept for the warning about it.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" && (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.membership
                .connection_failed(&connection_failure(message));
        }
        tracing::debug!(target: "librdkafka", flow = %self.flow, level = level as i32, facility = fac, "{message}");
    }
}

impl SourceContext {
    /// With an integer `startOffset`, the partitions just assigned that have no committed offset
    /// are assigned again starting there (the others resume from their committed offset).
    fn start_at(&self, consumer: &BaseConsumer<Self>, assigned: &TopicPartitionList, start: i64) {
        let committed = match consumer.committed_offsets(assigned.clone(), COMMITTED_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(flow = %self.flow, error = %describe(&e), "reading committed offsets failed");
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
                tracing::warn!(flow = %self.flow, error = %describe(&e), "assigning at startOffset failed");
            }
        }
    }

    /// Whether the topic exists (has partitions), from the brokers' metadata.
    fn topic_exists(&self, consumer: &BaseConsumer<Self>) -> bool {
        match consumer.fetch_metadata(Some(&self.topic), METADATA_TIMEOUT) {
            Ok(m) => m.topics().iter().any(|t| {
                t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty()
            }),
            Err(e) => {
                tracing::debug!(flow = %self.flow, error = %describe(&e), "reading the topic's metadata failed");
                false
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
            let _ = self.events.send(Event::Partition(Assigned {
                partition,
                epoch,
                stop,
                queue,
            }));
        }
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = match rebalance {
            Rebalance::Assign(assigned) => assigned,
            Rebalance::Revoke(_) => return,
            Rebalance::Error(e) => {
                tracing::warn!(flow = %self.flow, group = %self.membership.group, error = %describe(e), "kafka rebalance failed");
                return;
            }
        };
        let partitions = partitions_of(assigned, &self.topic);
        if partitions.is_empty() {
            let exists = self.topic_exists(consumer);
            self.membership.assigned(&partitions, exists);
            if exists {
                tracing::info!(
                    flow = %self.flow, group = %self.membership.group, topic = %self.topic,
                    "joined the group without partitions: the other members have all of them"
                );
            } else {
                tracing::info!(
                    flow = %self.flow, group = %self.membership.group, topic = %self.topic,
                    "joined the group; the topic does not exist yet"
                );
            }
            let _ = self.events.send(Event::Rebalanced);
            return;
        }
        tracing::info!(
            flow = %self.flow, group = %self.membership.group, topic = %self.topic,
            partitions = %list(&partitions), "partitions assigned"
        );
        if let Some(start) = self.start_at {
            self.start_at(consumer, assigned, start);
        }
        self.split(assigned);
        self.membership.assigned(&partitions, true);
        let _ = self.events.send(Event::Rebalanced);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let revoked = partitions_of(revoked, &self.topic);
        if !revoked.is_empty() {
            tracing::info!(
                flow = %self.flow, group = %self.membership.group, topic = %self.topic,
                partitions = %list(&revoked), "partitions revoked"
            );
            self.membership.revoked(&revoked);
            let mut state = lock(&self.state);
            for p in &revoked {
                state.lag.remove(p);
                self.metrics.forget_lag(&self.flow, *p);
            }
            drop(state);
            let _ = self.events.send(Event::Rebalanced);
        }
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
                tracing::warn!(flow = %self.flow, error = %describe(&e), "commit before rebalance failed")
            }
        }
    }
}

type SourceConsumer = StreamConsumer<SourceContext>;

/// The partitions of `topic` in `list`, in order.
fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut partitions: Vec<i32> = list
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    partitions.sort_unstable();
    partitions
}

/// `0,1,2` for a log field.
fn list(partitions: &[i32]) -> String {
    partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The consumer of `flow`'s source, configured from the flow; the partitions it is assigned
/// arrive on `assigned`, each with its own queue.
fn consumer(
    flow: &Pipeline,
    src: &KafkaSourceConfig,
    options: &KafkaSourceOptions,
    state: Arc<Mutex<State>>,
    transactions: Option<Arc<Transactions>>,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
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
    consumer_settings(&mut config, src, options, &group);
    let start_at = match src.start_offset {
        StartOffset::Offset(n) => Some(n),
        _ => None,
    };
    let bootstrap = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_owned();
    let consumer: Arc<SourceConsumer> = Arc::new(config.create_with_context(SourceContext {
        flow: flow.name.clone(),
        metrics: flow.metrics().clone(),
        topic: src.topic.clone(),
        membership: Arc::new(Membership::new(group, src.topic.clone(), bootstrap)),
        state,
        start_at,
        transactions,
        consumer: OnceLock::new(),
        stop,
        events,
    })?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    Ok(consumer)
}

/// The consumer's librdkafka settings over the cluster's client settings: the source's defaults
/// (`options`), Fiso's own, then the flow's `consumerProperties`, except that offsets stay Fiso's
/// to commit.
fn consumer_settings(
    config: &mut ClientConfig,
    src: &KafkaSourceConfig,
    options: &KafkaSourceOptions,
    group: &str,
) {
    let reset = match src.start_offset {
        StartOffset::Earliest => "earliest",
        StartOffset::Latest => "latest",
        // Partitions without a committed offset start there (see `post_rebalance`); past the
        // end of a partition, from its beginning.
        StartOffset::Offset(_) => "earliest",
    };
    let queued_min = max_in_flight(src)
        .saturating_mul(QUEUED_PER_IN_FLIGHT)
        .max(QUEUED_MIN_MESSAGES);
    for (k, v) in &options.consumer_defaults {
        config.set(k, v);
    }
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES.to_string())
        .set("queued.min.messages", queued_min.to_string())
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
    for (k, v) in &src.consumer_properties {
        config.set(k, v);
    }
    // Offsets are ours to commit: a passthrough property must not turn auto-commit back on.
    config.set("enable.auto.commit", "false");
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
    options: Arc<KafkaSourceOptions>,
}

impl KafkaSource {
    pub fn new(cfg: &KafkaSourceConfig, options: &KafkaSourceOptions) -> Self {
        KafkaSource {
            cfg: cfg.clone(),
            options: Arc::new(options.clone()),
        }
    }

    /// The cluster it consumes.
    pub fn cluster(&self) -> &str {
        &self.cfg.cluster
    }

    /// Runs `flow`'s consumer until `cancel`, reporting on `status` whether it has its
    /// partitions. Each record goes through the pipeline current when it is taken from its
    /// queue.
    pub async fn run(
        &self,
        flow: &LivePipeline,
        cancel: &CancellationToken,
        status: &SourceStatus,
    ) -> Result<(), KafkaSourceError> {
        consume(&self.cfg, &self.options, flow, cancel, status).await
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
    options: &KafkaSourceOptions,
    flows: &LivePipeline,
    cancel: &CancellationToken,
    status: &SourceStatus,
) -> Result<(), KafkaSourceError> {
    // What the consumer is built from, which a swap leaves alone (see `consumer_unchanged`).
    let flow = &flows.load_full();
    let transactions = match flow.transactions() {
        Some(producer) => Some(Arc::new(Transactions::new(
            producer.begin().await.map_err(|e| {
                KafkaSourceError::Transaction(format!("starting a transaction: {}", describe(&e)))
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
    let stop = CancellationToken::new();
    let (events_tx, events_rx) = mpsc::unbounded_channel::<Event>();
    let consumer = consumer(
        flow,
        src,
        options,
        Arc::clone(&state),
        transactions.clone(),
        stop.clone(),
        events_tx,
    )?;
    let consuming = Consuming {
        src,
        options,
        flows,
        consumer: &consumer,
        state: &state,
        transactions,
        stop,
        status,
    };
    let result = consuming.run(events_rx, cancel).await;
    leave(consumer, &flow.name).await;
    result
}

/// A consumer's loop and what it works with.
struct Consuming<'a> {
    src: &'a KafkaSourceConfig,
    options: &'a KafkaSourceOptions,
    flows: &'a LivePipeline,
    consumer: &'a Arc<SourceConsumer>,
    state: &'a Arc<Mutex<State>>,
    transactions: Option<Arc<Transactions>>,
    /// Stops every partition worker.
    stop: CancellationToken,
    status: &'a SourceStatus,
}

impl Consuming<'_> {
    /// Subscribes and consumes until `cancel` or a failure; then what the workers finished is
    /// committed.
    async fn run(
        &self,
        mut events: mpsc::UnboundedReceiver<Event>,
        cancel: &CancellationToken,
    ) -> Result<(), KafkaSourceError> {
        let (src, state, consumer) = (self.src, self.state, self.consumer);
        let flow_name = self.flows.load().name.clone();
        let membership = Arc::clone(&consumer.context().membership);
        consumer.subscribe(&[src.topic.as_str()])?;
        self.status.waiting(membership.reason());
        let failed = lock(state).failed.clone();
        let committer = Committer {
            state,
            consumer,
            topic: &src.topic,
            transactions: self.transactions.as_deref(),
        };
        let batch = lock(state).commit_batch;
        let interval = src.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
        let window = max_in_flight(src) as usize;
        let ordering = src.ordering.unwrap_or_default();
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_ticker = tokio::time::interval(self.options.status_interval);
        status_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lag_said = LagReport::default();
        // Told to stop in the middle of a join: until the join is over (or this passed).
        let mut leaving: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // One worker per partition: partitions are processed concurrently, each in order.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut tasks = JoinSet::new();
        let result = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if leaving.is_none() => {
                    if membership.joined() || membership.is_unreachable() {
                        break Ok(());
                    }
                    // A member that leaves in the middle of its join may stay in the group as
                    // one that never answers (tansu keeps it for good, a Kafka broker until its
                    // session expires), and every later join of the group waits for it: finish
                    // the join, then leave.
                    tracing::info!(flow = %flow_name, group = %membership.group, "stopping once the group join under way is over");
                    leaving = Some(Box::pin(tokio::time::sleep(JOIN_BEFORE_LEAVE)));
                }
                _ = async { leaving.as_mut().expect("guarded").await }, if leaving.is_some() => break Ok(()),
                _ = failed.cancelled() => {
                    break Err(lock(state).failure.take().unwrap_or_else(|| {
                        KafkaSourceError::Transaction("stopped by the rebalance".into())
                    }))
                }
                Some(done) = done_rx.recv() => match done {
                    // Several workers may have seen the same batch fill up: one commit takes it.
                    Ok(()) => {
                        if lock(state).commits.count >= batch {
                            committer.commit(CommitMode::Async).await?;
                        }
                    }
                    Err(e) => break Err(e),
                },
                _ = ticker.tick() => committer.commit(CommitMode::Async).await?,
                Some(event) = events.recv() => match event {
                    // Leaving: nothing of it is read (or committed); its next owner reads it.
                    Event::Partition(_) if leaving.is_some() => {}
                    Event::Partition(a) => {
                        let part = Partition::new(
                            a.partition,
                            a.epoch,
                            Arc::clone(state),
                            done_tx.clone(),
                            Handle::current(),
                        );
                        match ordering {
                            DeliveryOrdering::Partition => spawn_worker(&mut tasks, partition_worker(
                                Arc::clone(self.flows),
                                a.queue,
                                part,
                                a.stop,
                                self.transactions.clone(),
                            )),
                            // Validation refuses these with `kafka_transaction`.
                            DeliveryOrdering::Key | DeliveryOrdering::Unordered => {
                                spawn_worker(&mut tasks, concurrent_worker(
                                    Arc::clone(self.flows),
                                    a.queue,
                                    part,
                                    a.stop,
                                    ordering,
                                    window,
                                ))
                            }
                        };
                    }
                    Event::Rebalanced => {
                        self.report(&membership);
                        if leaving.is_some() && membership.joined() {
                            break Ok(());
                        }
                    }
                },
                _ = status_ticker.tick() => {
                    if membership.serving() {
                        if self.options.log_lag {
                            lag_said.log(&flow_name, &lock(state).lag);
                        }
                    } else {
                        let waiting = membership.waiting();
                        let join_state = match &waiting {
                            group::Waiting::Joining(s) => s.clone(),
                            _ => None,
                        };
                        tracing::info!(
                            flow = %flow_name, group = %membership.group, topic = %src.topic,
                            state = %membership.describe(&waiting),
                            join_state = join_state.as_deref().unwrap_or("-"),
                            "waiting for partition assignment"
                        );
                        self.report(&membership);
                    }
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
                    Err(e) => self.consumer_error(&flow_name, &membership, &e),
                },
            }
        };
        // Workers finish the record in hand; what they finished is committed before returning,
        // so a restart resumes right after the last record delivered or dead-lettered.
        self.stop.cancel();
        drop(events);
        while tasks.join_next().await.is_some() {}
        drop(done_tx);
        match (&result, &self.transactions) {
            // The rebalance aborted the transaction already.
            (Err(KafkaSourceError::Transaction(_)), Some(_)) => {}
            _ => committer.commit(CommitMode::Sync).await?,
        }
        result
    }

    /// `/readyz` for the consumer's standing now.
    fn report(&self, membership: &Membership) {
        if membership.serving() {
            self.status.serving();
        } else {
            self.status.waiting(membership.reason());
        }
    }

    /// An error on the consumer's main queue: the brokers cannot be reached (said once per
    /// outage, with how to fix it), the topic does not exist (said once), anything else.
    fn consumer_error(&self, flow: &str, membership: &Membership, e: &KafkaError) {
        match e.rdkafka_error_code() {
            Some(code) if unreachable(code) => {
                if membership.unreachable() {
                    tracing::warn!(
                        flow = %flow, group = %membership.group, topic = %membership.topic,
                        error = %membership.describe(&membership.waiting()),
                        "kafka broker unreachable"
                    );
                }
                self.report(membership);
            }
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                if membership.topic_missing() {
                    tracing::info!(
                        flow = %flow, group = %membership.group, topic = %membership.topic,
                        "the topic does not exist yet; waiting for it"
                    );
                }
                self.report(membership);
            }
            _ => tracing::warn!(flow = %flow, error = %describe(e), "kafka consumer error"),
        }
    }
}

/// Starts a partition's worker on the least busy core's thread: the worker, the deliveries it
/// starts and their upstream connections then run on one thread, woken by nothing on another
/// (or on this runtime, when those threads could not be started).
fn spawn_worker(tasks: &mut JoinSet<()>, worker: impl Future<Output = ()> + Send + 'static) {
    match CoreThreads::get() {
        Some(cores) => {
            let lease = cores.lease();
            let runtime = lease.runtime().clone();
            tasks.spawn_on(
                async move {
                    let _lease = lease;
                    worker.await
                },
                &runtime,
            );
        }
        None => {
            tasks.spawn(worker);
        }
    }
}

/// Leaves the group: closing the consumer revokes its partitions (all they had processed is
/// committed already) and tells the coordinator, so the group rebalances at once instead of
/// waiting for this member's session to expire. librdkafka blocks while closing: off the async
/// workers.
async fn leave(consumer: Arc<SourceConsumer>, flow: &str) {
    let membership = Arc::clone(&consumer.context().membership);
    // Only the last handle closes the consumer (the workers' partition queues are gone by now).
    let Ok(consumer) = Arc::try_unwrap(consumer) else {
        return;
    };
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || drop(consumer)).await;
    if closed.is_ok() {
        tracing::info!(
            flow = %flow, group = %membership.group,
            took_ms = started.elapsed().as_millis() as u64,
            "left the consumer group"
        );
    }
}

/// What the last lag line said, so that only a change is logged (and a lag of zero only once,
/// right after there was some).
#[derive(Default)]
struct LagReport {
    said: Option<BTreeMap<i32, i64>>,
}

impl LagReport {
    fn log(&mut self, flow: &str, lag: &BTreeMap<i32, i64>) {
        let total: i64 = lag.values().sum();
        let before: i64 = self.said.iter().flat_map(|s| s.values()).sum();
        if self.said.as_ref() == Some(lag) || (total == 0 && before == 0) {
            self.said = Some(lag.clone());
            return;
        }
        // `partition:lag` pairs, e.g. `0:12, 1:0`.
        let by_partition = lag
            .iter()
            .map(|(p, l)| format!("{p}:{l}"))
            .collect::<Vec<_>>()
            .join(", ");
        if total > 0 {
            tracing::info!(flow = %flow, lag = total, by_partition = %by_partition, "consumer lag: {total} record(s) not processed yet");
        } else {
            tracing::info!(flow = %flow, lag = 0, "consumer caught up");
        }
        self.said = Some(lag.clone());
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
            Err(e) => {
                tracing::warn!(topic = self.topic, error = %describe(&e), "offset commit failed")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
