//! Kafka source: a consumer group per flow, at-least-once.
//!
//! Each record becomes an event (JSON value; CloudEvents Kafka binding `ce_*` headers in; id
//! `<topic>-<partition>-<offset>` unless the event names its own) and goes through
//! [`FlowInstance::handle`]. An offset is committed only once its record was delivered or
//! dead-lettered; commits are batched (`commitInterval` / `commitBatchSize`), asynchronous, with
//! a final synchronous commit when the flow stops. A record that can be neither delivered nor
//! dead-lettered stops the consumer (after committing what came before it) so the supervisor
//! restarts it from the last committed offset: nothing is ever skipped.
//!
//! Each assigned partition has its own worker: partitions are processed concurrently, the
//! records of one partition in order (`maxInFlightPerPartition` records queue per partition).
//!
//! On a rebalance, what was processed of the revoked partitions is committed synchronously
//! before they are revoked and their workers stop (a record in hand is finished but no longer
//! committed: the new owner reads it again). An integer `startOffset` applies to the assigned
//! partitions the group has no committed offset for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fiso_config::flow::{KafkaSourceConfig, SourceSpec, StartOffset};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::client_config;
use super::sink::find_cluster;
use crate::instance::{FlowInstance, Outcome};
use crate::metrics::FlowMetrics;
use crate::sink::http::{DeliveryContext, KafkaOrigin, CORRELATION_HEADER};
use crate::{FlowError, InputEvent};

pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_COMMIT_BATCH_SIZE: u32 = 500;
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: u32 = 64;

/// Why a Kafka source stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka source configuration: {0}")]
    Config(String),
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
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
}

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
}

/// What the consumer loop, its partition workers and the rebalance callback share.
#[derive(Default)]
struct State {
    commits: Commits,
    /// Partitions owned now, each with the epoch of its current worker.
    owned: HashMap<i32, Owned>,
    epoch: u64,
}

struct Owned {
    epoch: u64,
    stop: CancellationToken,
}

impl State {
    /// The current ownership of `partition` (taken now if it had none): its epoch and stop token.
    fn own(&mut self, partition: i32, parent: &CancellationToken) -> (u64, CancellationToken) {
        let next = self.epoch + 1;
        let owned = self.owned.entry(partition).or_insert_with(|| Owned {
            epoch: next,
            stop: parent.child_token(),
        });
        if owned.epoch == next {
            self.epoch = next;
        }
        (owned.epoch, owned.stop.clone())
    }

    /// A record of `partition` is done by the worker of `epoch`: counted for the next commit
    /// unless the partition was revoked since.
    fn done(&mut self, partition: i32, epoch: u64, next: i64) {
        if self.owned.get(&partition).map(|o| o.epoch) == Some(epoch) {
            self.commits.done(partition, next);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut tpl = TopicPartitionList::new();
        {
            let mut state = lock(&self.state);
            for e in revoked.elements_for_topic(&self.topic) {
                let p = e.partition();
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
    flow: &FlowInstance,
    src: &KafkaSourceConfig,
    state: Arc<Mutex<State>>,
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
    })?)
}

/// Runs `flow`'s consumer until `cancel`; `ready` is called once it subscribed.
pub async fn run(
    flow: &Arc<FlowInstance>,
    cancel: &CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), KafkaSourceError> {
    let SourceSpec::Kafka(src) = &flow.config.source else {
        return Err(KafkaSourceError::Config("not a kafka source".into()));
    };
    let state = Arc::new(Mutex::new(State::default()));
    let consumer = consumer(flow, src, Arc::clone(&state))?;
    consumer.subscribe(&[src.topic.as_str()])?;
    ready();
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
    let mut workers: HashMap<i32, (u64, mpsc::Sender<OwnedMessage>)> = HashMap::new();
    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            Some(done) = done_rx.recv() => match done {
                Ok(()) => {
                    if lock(&state).commits.count >= batch {
                        commit(&state, &consumer, &src.topic, CommitMode::Async)?;
                    }
                }
                Err(e) => break Err(e),
            },
            _ = ticker.tick() => commit(&state, &consumer, &src.topic, CommitMode::Async)?,
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
                if workers.get(&partition).is_none_or(|(e, _)| *e != epoch) {
                    let (tx, rx) = mpsc::channel(queue);
                    tasks.spawn(partition_worker(
                        Arc::clone(flow),
                        rx,
                        done_tx.clone(),
                        partition_stop,
                        Arc::clone(&state),
                        epoch,
                    ));
                    workers.insert(partition, (epoch, tx));
                }
                let (_, worker) = &workers[&partition];
                // A full queue holds the consumer back, but not the commits of what the other
                // workers finish meanwhile; a stopped worker has reported why.
                let permit = loop {
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break None,
                        _ = ticker.tick() => {
                            commit(&state, &consumer, &src.topic, CommitMode::Async)?
                        }
                        p = worker.reserve() => break Some(p),
                    }
                };
                match permit {
                    None => break Ok(()),
                    Some(Ok(permit)) => permit.send(message),
                    Some(Err(_)) => {}
                }
            }
        }
    };
    // Workers finish the record in hand; what they finished is committed before returning, so
    // a restart resumes right after the last record delivered or dead-lettered.
    stop.cancel();
    drop(workers);
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    commit(&state, &consumer, &src.topic, CommitMode::Sync)?;
    result
}

/// Commits what was processed and not committed yet.
fn commit(
    state: &Mutex<State>,
    consumer: &SourceConsumer,
    topic: &str,
    mode: CommitMode,
) -> Result<(), KafkaSourceError> {
    let tpl = lock(state).commits.take(topic)?;
    if tpl.count() == 0 {
        return Ok(());
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {}
        // Partitions revoked by a rebalance: their records are read again by the new owner.
        Err(e) => tracing::warn!(topic, error = %e, "offset commit failed"),
    }
    Ok(())
}

/// A partition worker's report: `Ok` once a record is done (its offset is in the shared
/// [`Commits`]), or why it stopped.
type Done = Result<(), KafkaSourceError>;

/// Processes one partition's records in order until `stop`, its queue closes or a record can
/// be neither delivered nor dead-lettered (then the partition stops there).
async fn partition_worker(
    flow: Arc<FlowInstance>,
    mut records: mpsc::Receiver<OwnedMessage>,
    done: mpsc::UnboundedSender<Done>,
    stop: CancellationToken,
    state: Arc<Mutex<State>>,
    epoch: u64,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            m = records.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let partition = message.partition();
        match process(&flow, &message).await {
            Ok(()) => {
                lock(&state).done(partition, epoch, message.offset() + 1);
                let _ = done.send(Ok(()));
            }
            Err(e) => {
                let _ = done.send(Err(e));
                return;
            }
        }
    }
}

/// Offsets processed but not committed yet: partition → next offset to read.
#[derive(Default)]
struct Commits {
    next: BTreeMap<i32, i64>,
    /// Highest next offset seen per partition: a record read again after a rebalance never
    /// moves a commit backwards.
    highest: HashMap<i32, i64>,
    count: u32,
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
    fn take(&mut self, topic: &str) -> Result<TopicPartitionList, KafkaSourceError> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.next {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
        }
        self.next.clear();
        self.count = 0;
        Ok(tpl)
    }
}

/// One record through the flow: `Ok` once it was delivered or dead-lettered.
async fn process(flow: &FlowInstance, m: &OwnedMessage) -> Result<(), KafkaSourceError> {
    let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
    let kafka_id = format!("{topic}-{partition}-{offset}");
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                headers.push((h.key.to_owned(), v.to_owned()));
            }
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = Bytes::copy_from_slice(m.payload().unwrap_or_default());
    let mut defaults = flow
        .compiled()
        .defaults()
        .event()
        .with_kafka_id(&topic, partition, offset);
    if let Some(ms) = m.timestamp().to_millis() {
        if let Some(at) = chrono::DateTime::from_timestamp_millis(ms) {
            defaults = defaults.received_at(at);
        }
    }
    let input = parse_record(&headers, &body, &kafka_id, defaults);
    let correlation_id = header(CORRELATION_HEADER)
        .filter(|v| !v.trim().is_empty())
        .or_else(|| input.as_ref().ok().map(|e| e.id().to_owned()))
        .unwrap_or_else(|| kafka_id.clone());
    let ctx = DeliveryContext {
        correlation_id,
        traceparent: header("traceparent").or_else(|| header("ce_traceparent")),
        body,
        origin: Some(KafkaOrigin {
            topic: topic.clone(),
            partition,
            offset,
            key: m.key().map(<[u8]>::to_vec),
        }),
    };
    let undelivered = |reason: String| KafkaSourceError::Undelivered {
        topic: topic.clone(),
        partition,
        offset,
        reason,
    };
    match flow.handle(input, &ctx).await {
        Outcome::Delivered(_) | Outcome::Published { .. } | Outcome::DeadLettered { .. } => Ok(()),
        Outcome::Failed(e) => Err(undelivered(e.to_string())),
        Outcome::Invalid(e) => match flow.dead_letter_refused(&e, &ctx).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(undelivered(format!(
                "{}: {e} (no dead-letter queue)",
                e.code()
            ))),
            Err(dlq) => Err(undelivered(format!(
                "{}: {e}; DLQ write failed: {dlq}",
                e.code()
            ))),
        },
    }
}

/// A record's value as JSON: a bare payload or a structured CloudEvent; with `ce_specversion`
/// among the headers, a binary-mode CloudEvent whose attributes are the `ce_*` headers.
fn parse_record(
    headers: &[(String, String)],
    body: &[u8],
    kafka_id: &str,
    defaults: crate::event::EventDefaults<'_>,
) -> Result<InputEvent, FlowError> {
    let invalid = |message: String| FlowError::InvalidInput { message };
    let value = |body: &[u8]| -> Result<Value, FlowError> {
        serde_json::from_slice(body)
            .map_err(|e| invalid(format!("record value is not valid JSON: {e}")))
    };
    if headers.iter().any(|(k, _)| k == "ce_specversion") {
        let mut obj = Map::new();
        for (k, v) in headers {
            if let Some(attr) = k.strip_prefix("ce_") {
                obj.insert(attr.to_owned(), Value::String(v.clone()));
            }
        }
        obj.entry("id")
            .or_insert_with(|| Value::String(kafka_id.to_owned()));
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        let data = if body.is_empty() {
            Value::Null
        } else if content_type.is_none_or(|ct| ct.contains("json")) {
            value(body)?
        } else {
            Value::String(
                String::from_utf8(body.to_vec())
                    .map_err(|_| invalid("binary-mode value is not UTF-8 text".into()))?,
            )
        };
        if let Some(ct) = content_type {
            obj.insert("datacontenttype".into(), Value::String(ct.to_owned()));
        }
        obj.insert("data".into(), data);
        return InputEvent::from_json(Value::Object(obj), defaults);
    }
    if body.is_empty() {
        return Err(invalid("the record has no value".into()));
    }
    InputEvent::from_json(value(body)?, defaults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowDefaults;

    fn parse(headers: &[(&str, &str)], body: &[u8]) -> Result<InputEvent, FlowError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let defaults = FlowDefaults::new("f");
        parse_record(
            &headers,
            body,
            "t-0-7",
            defaults.event().with_kafka_id("t", 0, 7),
        )
    }

    #[test]
    fn a_bare_payload_gets_the_record_id() {
        let e = parse(&[("x", "y")], br#"{"a":1}"#).unwrap();
        assert_eq!(e.id(), "t-0-7");
        assert_eq!(e.source(), "fiso-flow/f");
        assert_eq!(e.data(), &serde_json::json!({"a": 1}));
    }

    #[test]
    fn ce_headers_are_attributes() {
        let e = parse(
            &[
                ("ce_specversion", "1.0"),
                ("ce_type", "order.paid"),
                ("ce_source", "/shop"),
                ("ce_myext", "v"),
                ("content-type", "application/json"),
            ],
            br#"{"a":1}"#,
        )
        .unwrap();
        assert_eq!(e.id(), "t-0-7", "no ce_id: the record's coordinates");
        assert_eq!(e.type_(), "order.paid");
        assert_eq!(e.source(), "/shop");
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert!(e.extensions().contains_key("myext"));

        let e = parse(
            &[
                ("ce_specversion", "1.0"),
                ("ce_id", "own"),
                ("ce_type", "t"),
                ("ce_source", "s"),
                ("content-type", "text/plain"),
            ],
            b"hello",
        )
        .unwrap();
        assert_eq!(e.id(), "own");
        assert_eq!(e.data(), &serde_json::json!("hello"));
    }

    #[test]
    fn invalid_values_are_invalid_input() {
        for body in [&b"not json{"[..], b""] {
            let e = parse(&[], body).unwrap_err();
            assert_eq!(e.code(), "INPUT_INVALID", "{e}");
        }
    }
}
