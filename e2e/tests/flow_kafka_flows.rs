//! Kafka source flows end to end, on the real broker from `cargo xtask infra up`
//! (`FISO_E2E_KAFKA_BROKERS`): Kafka → Kafka with a key, a static header and the binary
//! CloudEvents binding; Kafka → HTTP through a sink outage, every record either delivered or
//! dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fiso_e2e::kafka::{self, brokers, consume, kafka_source, record_count, unique, Consumed};
use fiso_e2e::{eventually, FisoProcess, FlowDir, Reply, Script, SinkServer};
use pretty_assertions::assert_eq;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

/// Produces `values` to partition 0 of the fresh `topic`, in order (offsets 0..).
async fn produce(topic: &str, values: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    for (i, v) in values.iter().enumerate() {
        let delivery = producer
            .send(
                FutureRecord::<str, [u8]>::to(topic)
                    .partition(0)
                    .payload(&v[..]),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        assert_eq!(
            (delivery.partition, delivery.offset),
            (0, i as i64),
            "fresh topic {topic}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_with_key_static_header_and_binary_cloudevent() {
    let from = unique("k2k-in");
    let to = unique("k2k-out");
    let group = unique("k2k-group");
    let inputs: Vec<Value> = (1..=3)
        .map(|i| json!({"id": format!("o-{i}"), "total": i * 10, "ignored": true}))
        .collect();
    let values: Vec<Vec<u8>> = inputs
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    produce(&from, &values).await;
    let dir = FlowDir::new();
    dir.write(
        "k2k.yaml",
        &format!(
            "name: k2k\n\
             {}\
             transform:\n  fields:\n    id: data.id\n    amount: data.total\n\
             sink:\n  type: kafka\n  config:\n    cluster: main\n    topic: {to}\n\
             \x20   key: data.id\n    headers:\n      x-team: payments\n",
            kafka_source(&from, &group)
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let written = eventually(Duration::from_secs(30), || async {
        Some(record_count(&to).await).filter(|&n| n >= 3)
    })
    .await;
    assert_eq!(
        written,
        Some(3),
        "records in {to}\n{}",
        fiso.logs().tail(40)
    );
    let records = consume(&to, 3).await;
    let mut by_key: BTreeMap<String, &Consumed> = BTreeMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("a key")).unwrap();
        assert!(by_key.insert(key, r).is_none(), "{records:?}");
    }
    assert_eq!(
        by_key.keys().cloned().collect::<Vec<_>>(),
        ["o-1", "o-2", "o-3"],
        "{}",
        fiso.logs().tail(40)
    );
    for (offset, (key, r)) in by_key.iter().enumerate() {
        let value: Value = serde_json::from_slice(&r.value).unwrap();
        let n = offset as i64 + 1;
        assert_eq!(value, json!({"id": key, "amount": n * 10}), "{r:?}");
        let h = &r.headers;
        let get = |k: &str| h.get(k).map(String::as_str);
        assert_eq!(
            get("ce_id"),
            Some(format!("{from}-0-{offset}").as_str()),
            "{h:?}"
        );
        assert_eq!(get("ce_type"), Some("fiso.event"), "{h:?}");
        assert_eq!(get("ce_specversion"), Some("1.0"), "{h:?}");
        assert_eq!(get("x-team"), Some("payments"), "{h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_outage_every_record_is_delivered_or_dead_lettered() {
    const N: usize = 10;
    const FAILING: usize = 5;
    let topic = unique("outage-in");
    let group = unique("outage-group");
    let dlq = unique("outage-dlq");
    let values: Vec<Vec<u8>> = (0..N)
        .map(|i| format!(r#"{{"n":{i}}}"#).into_bytes())
        .collect();
    produce(&topic, &values).await;
    // The first FAILING requests are answered 503, every later one 200.
    let sink = SinkServer::start(Script::first(
        (0..FAILING).map(|_| Reply::status(503)),
        Reply::status(200),
    ))
    .await;
    let dir = FlowDir::new();
    dir.write(
        "outage.yaml",
        &format!(
            "name: outage\n\
             {}\
             sink:\n  type: http\n  config:\n    url: {}\n\
             errorHandling:\n  maxRetries: 1\n  initialInterval: 10ms\n  maxInterval: 20ms\n\
             \x20 deadLetterTopic: {dlq}\n",
            kafka_source(&topic, &group),
            sink.url("/events")
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    // Requests are answered in arrival order: those past the first FAILING got a 200.
    let delivered = |sink: &SinkServer| -> BTreeSet<String> {
        sink.requests()
            .iter()
            .skip(FAILING)
            .map(|r| r.json()["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let settled = eventually(Duration::from_secs(30), || async {
        let d = delivered(&sink).len() as i64;
        let dead = record_count(&dlq).await;
        Some((d, dead)).filter(|(d, dead)| d + dead == N as i64)
    })
    .await;
    let (_, dead) = settled.unwrap_or_else(|| {
        panic!(
            "delivered {:?}, DLQ topic {}\n{}",
            delivered(&sink),
            dlq,
            fiso.logs().tail(40)
        )
    });
    let delivered = delivered(&sink);
    let dead_ids: BTreeSet<String> = consume(&dlq, dead as usize)
        .await
        .iter()
        .map(|r| {
            let offset = r
                .headers
                .get("fiso-original-offset")
                .expect("fiso-original-offset");
            format!("{topic}-0-{offset}")
        })
        .collect();
    assert_eq!(dead_ids.len(), dead as usize, "distinct DLQ records");
    let produced: BTreeSet<String> = (0..N).map(|i| format!("{topic}-0-{i}")).collect();
    assert!(
        delivered.is_disjoint(&dead_ids),
        "delivered {delivered:?} DLQ {dead_ids:?}"
    );
    let union: BTreeSet<String> = delivered.union(&dead_ids).cloned().collect();
    assert_eq!(union, produced, "delivered {delivered:?} DLQ {dead_ids:?}");
    assert_eq!(delivered.len() + dead_ids.len(), N);
    println!(
        "outage test: {} delivered, {} dead-lettered, {} requests",
        delivered.len(),
        dead_ids.len(),
        sink.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transaction_commits_records_and_offsets_together() {
    let from = unique("ktx-in");
    let to = unique("ktx-out");
    let group = unique("ktx-group");
    let values: Vec<Vec<u8>> = (0..4)
        .map(|i| serde_json::to_vec(&json!({"n": i})).unwrap())
        .collect();
    produce(&from, &values).await;
    let dir = FlowDir::new();
    dir.write(
        "ktx.yaml",
        &format!(
            "name: ktx\n\
             {}\
             sink:\n  type: kafka\n  config:\n    cluster: main\n    topic: {to}\n\
             errorHandling:\n  commitPolicy: kafka_transaction\n  transactionalId: {group}-tx\n",
            kafka_source(&from, &group)
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    // The consumer never commits by itself under this policy: the group's offset can only
    // have come through the producer's transaction.
    let committed = eventually(Duration::from_secs(30), || async {
        kafka::committed(&group, &from, 0).await.filter(|&o| o == 4)
    })
    .await;
    assert_eq!(committed, Some(4), "{}", fiso.logs().tail(40));
    let records = consume(&to, 4).await;
    let ns: BTreeSet<i64> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.value).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, BTreeSet::from([0, 1, 2, 3]));
    // Offsets past the four records hold the transactions' commit markers.
    assert!(record_count(&to).await > 4, "{}", fiso.logs().tail(40));
    let aborted = fiso
        .logs()
        .matching(0, |l| l.raw.contains("transaction aborted"));
    assert!(aborted.is_empty(), "{aborted:?}");
}
