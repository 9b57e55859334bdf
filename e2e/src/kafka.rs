//! Kafka helpers for tests on the broker of `cargo xtask infra up` (`FISO_E2E_KAFKA_BROKERS`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::infra;

/// Bootstrap brokers of the test broker.
pub fn brokers() -> String {
    infra::var("FISO_E2E_KAFKA_BROKERS")
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// One consumed record.
#[derive(Debug)]
pub struct Consumed {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

/// Reads `n` records of `topic` from the beginning with a fresh group (blocking; run it on a
/// blocking thread or use [`consume`]).
pub fn consume_blocking(topic: &str, n: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("e2e-group"))
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for h in h.iter() {
                        headers.insert(
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Consumed {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    assert_eq!(out.len(), n, "records read from {topic} within 30 s");
    out
}

/// [`consume_blocking`] on a blocking thread.
pub async fn consume(topic: &str, n: usize) -> Vec<Consumed> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || consume_blocking(&topic, n))
        .await
        .unwrap()
}

/// The offset `group` committed for `partition` of `topic` (`None`: nothing committed).
pub async fn committed(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        match got.find_partition(&topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        }
    })
    .await
    .unwrap()
}

/// How many records `topic` holds, over all its partitions (0 while it does not exist).
pub async fn record_count(topic: &str) -> i64 {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("e2e-count"))
            .create()
            .expect("consumer");
        let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)) else {
            return 0;
        };
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions
            .into_iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(5))
                    .map_or(0, |(low, high)| high - low)
            })
            .sum()
    })
    .await
    .unwrap()
}

/// The `source:` section reading `topic` from the earliest offset as `group`.
pub fn kafka_source(topic: &str, group: &str) -> String {
    format!(
        "kafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\n\
         source:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n\
         \x20   consumerGroup: {group}\n    startOffset: earliest\n    commitInterval: 100ms\n\
         \x20   consumerProperties:\n      session.timeout.ms: \"2000\"\n      heartbeat.interval.ms: \"500\"\n",
        brokers()
    )
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// A producer for the test broker.
pub fn producer() -> rdkafka::producer::FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer")
}

/// Produces `value` to `partition` of `topic` and waits for the broker; returns its
/// `(partition, offset)`.
pub async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partition: i32,
    value: &str,
) -> (i32, i64) {
    let record = rdkafka::producer::FutureRecord::<str, str>::to(topic)
        .partition(partition)
        .payload(value);
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    (delivery.partition, delivery.offset)
}

/// Produces `values` to `topic` round-robin over `partitions` partitions (record `i` to
/// partition `i % partitions`) with many sends in flight: fast enough for 100k records.
/// Returns, per record, its `(partition, offset)`.
pub async fn produce_many(topic: &str, partitions: i32, values: &[Vec<u8>]) -> Vec<(i32, i64)> {
    use futures::StreamExt;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    futures::stream::iter(values.iter().enumerate())
        .map(|(i, v)| {
            let producer = &producer;
            async move {
                let record = FutureRecord::<str, [u8]>::to(topic)
                    .partition(i as i32 % partitions)
                    .payload(&v[..]);
                let delivery = producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
                (delivery.partition, delivery.offset)
            }
        })
        .buffered(1000)
        .collect()
        .await
}

/// A record to produce: its headers (name, value) and its value.
pub type HeadersAndValue = (Vec<(String, Vec<u8>)>, Vec<u8>);

/// Produces `records` to partition 0 of `topic`, in order, one at a time: a record's position
/// is its offset.
pub async fn produce_in_order(topic: &str, records: &[HeadersAndValue]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    for (headers, value) in records {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v),
            })
        });
        producer
            .send(
                FutureRecord::<str, [u8]>::to(topic)
                    .partition(0)
                    .payload(&value[..])
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
}
