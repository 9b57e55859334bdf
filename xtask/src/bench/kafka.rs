//! Flow Kafka → HTTP: how fast `fiso flow` drains a pre-filled topic into the upstream, next to
//! a bare rdkafka consumer draining the same topic with Fiso's client settings and commit policy
//! and no processing (the client library's ceiling), to the upstream Go Fiso's design point
//! (one record at a time, a synchronous commit after each), and to the same consumer posting
//! each value through Fiso's own client pool ([`BareClient`]: the floor of the drain on Fiso's
//! libraries) and through hyper-util's general client.
//!
//! The broker is the one of `cargo xtask infra up kafka` (tansu, in memory), started here when
//! it is not running and stopped again if this run started it. The producer and the bare consumer
//! run as `xtask bench kafka-fill|kafka-drain` from the release build, like the upstream, so the
//! baseline is not a debug build.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::bare_client::BareClient;
use super::payload;
use super::procs::{cpu_seconds, peak_rss, quiet, Procs};
use super::profile::{self, Profile};
use super::stats::median;
use super::wrk;
use crate::infra;

/// Partitions of the benchmark topic: Fiso delivers the records of a partition one after the
/// other and partitions concurrently, so this is its delivery concurrency.
pub const PARTITIONS: i32 = 4;
/// Distinct record keys (like customer ids): what `ordering: key` may deliver concurrently.
const KEYS: usize = 1000;
/// The flow's `ordering` per Fiso variant: the default, then records of different keys at once,
/// then any records of a partition at once.
const ORDERINGS: [&str; 3] = ["partition", "key", "unordered"];

/// `maxInFlightPerPartition`'s default, the window of `ordering: key | unordered`.
const MAX_IN_FLIGHT: u32 = 64;
/// Fiso's defaults (`commitInterval`, `commitBatchSize`), which the bare consumer copies.
pub(super) const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
pub(super) const COMMIT_BATCH: usize = 500;
/// tansu joins a classic group in about half the session timeout (see DESIGN.md).
const SESSION_TIMEOUT_MS: &str = "2000";
const HEARTBEAT_INTERVAL_MS: &str = "500";
/// Longest a drain may take before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// The consumer settings of Fiso's Kafka source (`fiso-flow` `kafka::source::consumer` on the
/// client config of `fiso-runtime` `kafka::client_config` for a plaintext cluster) with the
/// consumer properties the benchmark flow sets.
fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("security.protocol", "PLAINTEXT")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
    config
}

/// `xtask bench kafka-fill <brokers> <topic> <records> [--one-partition]`: creates `topic` with
/// [`PARTITIONS`] partitions and produces `records` 1 KiB JSON records round-robin (or all to
/// partition 0, the others left empty), keyed by one of [`KEYS`].
pub fn fill(args: &[String]) -> Result<()> {
    let (brokers, topic, records, used) = match args {
        [brokers, topic, records] => (brokers, topic, records, PARTITIONS as usize),
        [brokers, topic, records, flag] if flag == "--one-partition" => {
            (brokers, topic, records, 1)
        }
        _ => bail!("usage: xtask bench kafka-fill <brokers> <topic> <records> [--one-partition]"),
    };
    let records: usize = records.parse()?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let created = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))?;
    for result in created {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let body = payload();
    for i in 0..records {
        let partition = (i % used) as i32;
        let key = format!("customer-{}", i % KEYS);
        let mut record = BaseRecord::<str, str>::to(topic)
            .partition(partition)
            .key(key.as_str())
            .payload(body.as_str());
        // A full local queue only means the broker is behind: wait for room.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    println!("filled {records}");
    Ok(())
}

/// `xtask bench kafka-drain <brokers> <topic> <group> <records> [--sync-each] [--max-seconds S]
/// [--deliver <url> --in-flight N [--lean]]`: consumes until `records` records (or `S`
/// seconds), without processing them. By default commits like Fiso (asynchronously, every
/// second or every 500 records); with `--sync-each` like the Go Fiso (a synchronous commit after
/// each record); with `--deliver` posts each value to `url`, `N` at once ([`BareClient`];
/// `--lean`: through Fiso's own pool, else hyper-util's client). Prints
/// `drained <n> <first> <done> <cpu>` ([`print_drained`]).
pub fn drain(args: &[String]) -> Result<()> {
    let started = Instant::now();
    let (brokers, topic, group, records) = match args {
        [b, t, g, r, ..] => (b, t, g, r.parse::<usize>()?),
        _ => bail!("usage: xtask bench kafka-drain <brokers> <topic> <group> <records> [--sync-each] [--max-seconds S] [--deliver <url> --in-flight N [--lean]]"),
    };
    let sync_each = args.iter().any(|a| a == "--sync-each");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let max = flag("--max-seconds")
        .map(|s| s.parse::<u64>().map(Duration::from_secs))
        .transpose()?
        .unwrap_or(DRAIN_TIMEOUT);
    if let Some(url) = flag("--deliver") {
        let client = BareClient {
            upstream: url.parse()?,
            in_flight: flag("--in-flight").map_or(Ok(1), |n| n.parse())?,
            lean: args.iter().any(|a| a == "--lean"),
        };
        let d = client.drain(
            &consumer_config(brokers, group),
            topic,
            records,
            max,
            started,
        )?;
        print_drained(d.records, d.first, d.done);
        return Ok(());
    }
    let consumer: BaseConsumer = consumer_config(brokers, group).create()?;
    consumer.subscribe(&[topic.as_str()])?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut uncommitted = 0;
    let mut last_commit = Instant::now();
    let mut first = None;
    let mut n = 0;
    while n < records && started.elapsed() < max {
        let message = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                eprintln!("kafka-drain: {e}");
                continue;
            }
            None => continue,
        };
        first.get_or_insert_with(|| started.elapsed());
        n += 1;
        if sync_each {
            consumer.commit_message(&message, CommitMode::Sync)?;
            continue;
        }
        next.insert(message.partition(), message.offset() + 1);
        uncommitted += 1;
        if uncommitted >= COMMIT_BATCH || last_commit.elapsed() >= COMMIT_INTERVAL {
            commit(&consumer, topic, &mut next, CommitMode::Async)?;
            uncommitted = 0;
            last_commit = Instant::now();
        }
    }
    let done = started.elapsed();
    // Like Fiso when it stops: what is left, synchronously (after the measured time).
    commit(&consumer, topic, &mut next, CommitMode::Sync)?;
    print_drained(n, first.unwrap_or(done), done);
    Ok(())
}

/// `drained <n> <first> <done> <cpu>`: seconds since start of the first record and of the
/// end, and the CPU seconds this process spent.
fn print_drained(n: usize, first: Duration, done: Duration) {
    println!(
        "drained {n} {:.6} {:.6} {:.6}",
        first.as_secs_f64(),
        done.as_secs_f64(),
        cpu_seconds(std::process::id())
    );
}

pub(super) fn commit(
    consumer: &impl Consumer,
    topic: &str,
    next: &mut HashMap<i32, i64>,
    mode: CommitMode,
) -> Result<()> {
    if next.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in next.drain() {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&tpl, mode)?;
    Ok(())
}

/// One drain of the topic.
#[derive(Debug, Clone)]
struct Drained {
    records: usize,
    /// From start to the last record.
    wall_s: f64,
    /// From the first record to the last: the rate once the group is joined.
    steady_s: f64,
    /// CPU seconds of the Fiso process per 1000 records.
    cpu_per_1000: Option<f64>,
}

impl Drained {
    fn rate(&self) -> f64 {
        self.records as f64 / self.wall_s
    }

    fn steady_rate(&self) -> f64 {
        self.records as f64 / self.steady_s
    }
}

/// Everything the scenario needs from the harness.
pub struct Setup<'a> {
    pub root: &'a Path,
    pub xtask: &'a Path,
    pub fiso: &'a Path,
    pub dir: &'a Path,
    pub upstream: SocketAddr,
    pub records: usize,
    pub rounds: usize,
    /// How long the Go design point may take per round (it is far slower).
    pub sync_each_seconds: u64,
    /// Profile one extra Fiso drain with perf.
    pub profile: bool,
    /// Seconds of wrk per direct run of the upstream.
    pub direct_seconds: u32,
    /// Environment of every `fiso` started.
    pub env: &'a [(&'a str, String)],
}

/// Starts the broker if needed, fills a fresh topic, drains it `rounds` times with each variant
/// (alternating, a fresh consumer group each time), stops the broker if it started it.
pub fn bench(s: &Setup) -> Result<Value> {
    with_broker(s, |brokers| run(s, brokers))
}

/// `f` with the broker's address, the broker started first if needed and then stopped again.
fn with_broker<T>(s: &Setup, f: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let ctx = infra::Ctx::new(s.root);
    infra::with_servers(&ctx, &["kafka"], || {
        let brokers = infra::env_vars(&ctx)
            .remove("FISO_E2E_KAFKA_BROKERS")
            .context("the Kafka broker is up but has no address")?;
        f(&brokers)
    })
}

/// The Kafka load `cargo xtask pgo` profiles `fiso` under: one fresh topic of `s.records`,
/// drained once with each `ordering`, the last with a hot reload halfway.
pub fn train(s: &Setup) -> Result<()> {
    with_broker(s, |brokers| {
        let topic = unique("fiso-pgo");
        fill_topic(s, brokers, &topic, s.records, &[])?;
        for (i, ordering) in ORDERINGS.iter().enumerate() {
            let reload = i + 1 == ORDERINGS.len();
            let (drained, ..) = fiso_drain(s, brokers, &topic, ordering, &[], false, reload)?;
            println!("pgo: kafka ({ordering}) {:.0} records/s", drained.rate());
        }
        delete_topic(brokers, &topic);
        Ok(())
    })
}

fn run(s: &Setup, brokers: &str) -> Result<Value> {
    let topic = unique("fiso-bench-drain");
    println!(
        "bench: Kafka drain: filling {topic} with {} records",
        s.records
    );
    fill_topic(s, brokers, &topic, s.records, &[])?;

    let mut bare = Vec::new();
    let mut fiso: [Vec<Drained>; ORDERINGS.len()] = Default::default();
    let mut sync_each = Vec::new();
    let (mut hyper_util_in_order, mut hyper_util_windowed) = (Vec::new(), Vec::new());
    let (mut fiso_pool_in_order, mut fiso_pool_windowed) = (Vec::new(), Vec::new());
    let (in_order, windowed) = (PARTITIONS as u32, PARTITIONS as u32 * MAX_IN_FLIGHT);
    let url = format!("http://{}/kafka", s.upstream);
    std::fs::write(s.dir.join("post.lua"), wrk::script())?;
    // The sink's own ceiling: the upstream driven directly at the concurrency of Fiso's
    // deliveries (one per partition with `ordering: partition`, every partition's window
    // otherwise), measured in every round right after Fiso's drains: this machine's speed
    // drifts by a third between minutes, Fiso and the direct rate alike, so a ratio is only
    // worth something between measurements this close.
    // The rate is printed with the round too: a run cut short before its report still gives
    // the ratios of the rounds it finished.
    let direct = |connections: u32| -> Result<f64> {
        let rps = wrk::run_with(s.dir, &url, s.direct_seconds, None, connections)?.rps;
        println!("bench:   the upstream directly, {connections} connections: {rps:.0} req/s");
        Ok(rps)
    };
    let (mut direct_in_order, mut direct_windowed) = (Vec::new(), Vec::new());
    let mut fiso_rss = 0;
    for round in 0..s.rounds {
        println!("bench: Kafka drain round {}/{}", round + 1, s.rounds);
        let d = bare_drain(s, brokers, &topic, &[])?;
        report("bare consumer", &d);
        bare.push(d);
        for (ordering, runs) in ORDERINGS.iter().zip(&mut fiso) {
            let (d, rss, _, _) = fiso_drain(s, brokers, &topic, ordering, &[], false, false)?;
            report(&format!("fiso ({ordering})"), &d);
            fiso_rss = fiso_rss.max(rss);
            runs.push(d);
        }
        direct_in_order.push(direct(in_order)?);
        direct_windowed.push(direct(windowed)?);
        let max = s.sync_each_seconds.to_string();
        let d = bare_drain(
            s,
            brokers,
            &topic,
            &["--sync-each", "--max-seconds", max.as_str()],
        )?;
        report("sync each", &d);
        sync_each.push(d);
        for (in_flight, lean, runs) in [
            (in_order, false, &mut hyper_util_in_order),
            (windowed, false, &mut hyper_util_windowed),
            (in_order, true, &mut fiso_pool_in_order),
            (windowed, true, &mut fiso_pool_windowed),
        ] {
            let n = in_flight.to_string();
            let mut flags = vec!["--deliver", &url, "--in-flight", &n];
            flags.extend(lean.then_some("--lean"));
            let d = bare_drain(s, brokers, &topic, &flags)?;
            let client = if lean { "lean" } else { "client" };
            report(&format!("bare {client} {n}"), &d);
            runs.push(d);
        }
    }
    println!("bench: Kafka drain with a hot reload of the transform half-way");
    let (d, _, _, reload_gap) = fiso_drain(s, brokers, &topic, "partition", &[], false, true)?;
    report("fiso (reload)", &d);
    let reload_gap_ms = reload_gap.map(|g| g.as_secs_f64() * 1e3);
    println!("bench:   longest wait for a record after the reload: {reload_gap_ms:?} ms");
    let costs = if s.profile {
        println!("bench: Kafka drain under perf");
        fiso_drain(s, brokers, &topic, "key", &[], true, false)?.2
    } else {
        None
    };
    delete_topic(brokers, &topic);
    let one_partition = one_partition(s, brokers)?;

    let summary = |name: &str, runs: &[Drained]| {
        json!({
            "name": name,
            "records": runs.iter().map(|d| d.records).min(),
            "records_per_s": median(runs.iter().map(Drained::rate).collect()),
            "steady_records_per_s": median(runs.iter().map(Drained::steady_rate).collect()),
            "wall_s": median(runs.iter().map(|d| d.wall_s).collect()),
            "cpu_s_per_1000": median(runs.iter().filter_map(|d| d.cpu_per_1000).collect()),
        })
    };
    let rate = |runs: &[Drained]| median(runs.iter().map(Drained::rate).collect());
    // The median of the rounds' ratios, each between measurements of the same round.
    let per_round = |runs: &[Drained], reference: &[f64]| {
        median(
            runs.iter()
                .zip(reference)
                .map(|(d, r)| d.steady_rate() / r)
                .collect(),
        )
    };
    let paired = |runs: &[Drained], floor: &[Drained]| {
        per_round(
            runs,
            &floor.iter().map(Drained::steady_rate).collect::<Vec<_>>(),
        )
    };
    Ok(json!({
        "records": s.records,
        "partitions": PARTITIONS,
        "sync_each_max_seconds": s.sync_each_seconds,
        "keys": KEYS,
        "variants": [
            summary("bare rdkafka consumer", &bare),
            summary("fiso flow (ordering: partition, the default)", &fiso[0]),
            summary("fiso flow (ordering: key)", &fiso[1]),
            summary("fiso flow (ordering: unordered)", &fiso[2]),
            summary("Go Fiso design point (sync commit per record)", &sync_each),
            summary(&format!("bare consumer + hyper-util client, {in_order} in flight"), &hyper_util_in_order),
            summary(&format!("bare consumer + hyper-util client, {windowed} in flight"), &hyper_util_windowed),
            summary(&format!("bare consumer + Fiso's own client pool, {in_order} in flight"), &fiso_pool_in_order),
            summary(&format!("bare consumer + Fiso's own client pool, {windowed} in flight"), &fiso_pool_windowed),
        ],
        "fiso_vs_bare_rps": rate(&fiso[0]) / rate(&bare),
        "fiso_vs_sync_each_rps": rate(&fiso[0]) / rate(&sync_each),
        "fiso_key_vs_bare_rps": rate(&fiso[1]) / rate(&bare),
        "fiso_key_vs_sync_each_rps": rate(&fiso[1]) / rate(&sync_each),
        "fiso_unordered_vs_bare_rps": rate(&fiso[2]) / rate(&bare),
        "direct": {
            "partition_connections": in_order,
            "partition_rps": median(direct_in_order.clone()),
            "partition_rps_per_round": direct_in_order,
            "windowed_connections": windowed,
            "windowed_rps": median(direct_windowed.clone()),
            "windowed_rps_per_round": direct_windowed,
        },
        "steady_vs_direct": {
            "partition": per_round(&fiso[0], &direct_in_order),
            "key": per_round(&fiso[1], &direct_windowed),
            "unordered": per_round(&fiso[2], &direct_windowed),
        },
        // The floor of a Kafka → HTTP bridge on Fiso's libraries (rdkafka, and Fiso's own
        // pool), beside the direct rate and beside Fiso.
        "bare_client": {
            "partition_vs_direct": per_round(&fiso_pool_in_order, &direct_in_order),
            "windowed_vs_direct": per_round(&fiso_pool_windowed, &direct_windowed),
            "fiso_partition": paired(&fiso[0], &fiso_pool_in_order),
            "fiso_key": paired(&fiso[1], &fiso_pool_windowed),
            "fiso_unordered": paired(&fiso[2], &fiso_pool_windowed),
        },
        // The same drain through hyper-util's general client: what it would cost.
        "hyper_util_client": {
            "partition_vs_direct": per_round(&hyper_util_in_order, &direct_in_order),
            "windowed_vs_direct": per_round(&hyper_util_windowed, &direct_windowed),
        },
        "reload_gap_ms": reload_gap_ms,
        "one_partition": one_partition,
        "fiso_peak_rss_bytes": fiso_rss,
        "profile": costs.map(|c| profile::to_json(&c)),
    }))
}

fn report(name: &str, d: &Drained) {
    println!(
        "bench:   {name:<16} {:>6} records in {:.2} s: {:>8.0} rec/s ({:.0} rec/s after the first)",
        d.records,
        d.wall_s,
        d.rate(),
        d.steady_rate()
    );
}

fn fill_topic(s: &Setup, brokers: &str, topic: &str, records: usize, flags: &[&str]) -> Result<()> {
    let out = Command::new(s.xtask)
        .args(["bench", "kafka-fill", brokers, topic, &records.to_string()])
        .args(flags)
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "kafka-fill failed");
    Ok(())
}

/// A backlog on one partition while the topic's other partitions are caught up: every fetch
/// librdkafka sends then names idle partitions, which the broker may hold for up to
/// `fetch.wait.max.ms`, and librdkafka sends no other fetch to that broker meanwhile. Fiso's
/// `key` drain with its own setting and with librdkafka's default, beside the bare consumer.
fn one_partition(s: &Setup, brokers: &str) -> Result<Value> {
    let topic = unique("fiso-bench-one-partition");
    let records = s.records / PARTITIONS as usize;
    println!("bench: Kafka drain of {records} records, all on one partition of {PARTITIONS}");
    fill_topic(s, brokers, &topic, records, &["--one-partition"])?;
    let run = |name: &str, d: Drained| {
        report(name, &d);
        json!({
            "steady_records_per_s": d.steady_rate(),
            "cpu_s_per_1000": d.cpu_per_1000,
        })
    };
    let s = &Setup { records, ..*s };
    let bare = run("bare consumer", bare_drain(s, brokers, &topic, &[])?);
    let fiso = run(
        "fiso (key)",
        fiso_drain(s, brokers, &topic, "key", &[], false, false)?.0,
    );
    let librdkafka_wait = [("fetch.wait.max.ms", "500")];
    let default_wait = run(
        "fiso (key), fetch wait 500 ms",
        fiso_drain(s, brokers, &topic, "key", &librdkafka_wait, false, false)?.0,
    );
    delete_topic(brokers, &topic);
    Ok(json!({
        "records": records,
        "bare": bare,
        "fiso_key": fiso,
        "fiso_key_fetch_wait_500ms": default_wait,
    }))
}

fn bare_drain(s: &Setup, brokers: &str, topic: &str, flags: &[&str]) -> Result<Drained> {
    let out = Command::new(s.xtask)
        .args(["bench", "kafka-drain", brokers, topic, &unique("bare")])
        .arg(s.records.to_string())
        .args(flags)
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "kafka-drain failed: {text}");
    let fields: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("drained "))
        .with_context(|| format!("kafka-drain printed no result: {text}"))?
        .split_whitespace()
        .collect();
    let [n, first, done, cpu] = fields[..] else {
        bail!("kafka-drain: unexpected result {text}");
    };
    let (n, first, done, cpu): (usize, f64, f64, f64) =
        (n.parse()?, first.parse()?, done.parse()?, cpu.parse()?);
    Ok(Drained {
        records: n,
        wall_s: done,
        steady_s: done - first,
        cpu_per_1000: Some(cpu / (n as f64 / 1000.0)),
    })
}

/// `fiso flow` with a Kafka → HTTP flow (`ordering` as given) into the upstream, a fresh
/// consumer group, from spawn until the upstream counted every record. Returns the drain, the
/// peak RSS, with `profile` the top costs perf saw, and with `reload` (the flow's transform is
/// changed once half the records were delivered) the longest time without a delivery from the
/// reload on.
fn fiso_drain(
    s: &Setup,
    brokers: &str,
    topic: &str,
    ordering: &str,
    consumer_properties: &[(&str, &str)],
    profile: bool,
    reload: bool,
) -> Result<(Drained, u64, Option<Profile>, Option<Duration>)> {
    let group = unique("fiso");
    let flows = s.dir.join(format!("flows-{group}"));
    std::fs::create_dir_all(&flows)?;
    let transform = |v: &str| {
        if reload {
            format!("transform:\n  fields:\n    v: '\"{v}\"'\n    order: data.order_id\n")
        } else {
            String::new()
        }
    };
    let extra: String = consumer_properties
        .iter()
        .map(|(k, v)| format!("      {k}: \"{v}\"\n"))
        .collect();
    let yaml = |transform: String| {
        format!(
            "name: drain\n\
             kafka:\n  clusters:\n    main:\n      brokers: [\"{brokers}\"]\n\
             source:\n  type: kafka\n  config:\n    cluster: main\n    topic: {topic}\n\
             \x20   consumerGroup: {group}\n    startOffset: earliest\n    ordering: {ordering}\n\
             \x20   consumerProperties:\n      session.timeout.ms: \"{SESSION_TIMEOUT_MS}\"\n\
             \x20     heartbeat.interval.ms: \"{HEARTBEAT_INTERVAL_MS}\"\n\
             {extra}\
             sink:\n  type: http\n  config:\n    url: http://{}/kafka\n{transform}",
            s.upstream
        )
    };
    std::fs::write(flows.join("drain.yaml"), yaml(transform("one")))?;
    let before = served(s.upstream)?;
    let started = Instant::now();
    let mut procs = Procs::default();
    let child = quiet(
        Command::new(s.fiso)
            .arg("flow")
            .arg("--config-dir")
            .arg(&flows)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .envs(s.env.iter().map(|(k, v)| (k, v))),
    )
    .spawn()?;
    let pid = child.id();
    procs.push(child);
    let recording = profile
        .then(|| profile::Recording::start(pid, &s.dir.join("perf-kafka.data")))
        .transpose()?;
    let mut first = None;
    let (mut reloaded, mut gap, mut last, mut seen) = (false, None::<Duration>, Instant::now(), 0);
    let done = loop {
        let n = served(s.upstream)? - before;
        if n > 0 {
            first.get_or_insert_with(|| started.elapsed());
        }
        if n > seen {
            if reloaded {
                let waited = last.elapsed();
                gap = Some(gap.map_or(waited, |g| g.max(waited)));
            }
            (seen, last) = (n, Instant::now());
        }
        if reload && !reloaded && n >= s.records as u64 / 2 {
            std::fs::write(flows.join("drain.yaml"), yaml(transform("two")))?;
            (reloaded, last) = (true, Instant::now());
        }
        if n >= s.records as u64 {
            break started.elapsed();
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            bail!("fiso flow delivered {n} of {} records", s.records);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let cpu = cpu_seconds(pid);
    let rss = peak_rss(pid);
    let costs = recording.map(profile::Recording::finish).transpose()?;
    drop(procs);
    let first = first.unwrap_or(done);
    Ok((
        Drained {
            records: s.records,
            wall_s: done.as_secs_f64(),
            steady_s: (done - first).as_secs_f64(),
            cpu_per_1000: Some(cpu / (s.records as f64 / 1000.0)),
        },
        rss,
        costs,
        gap,
    ))
}

/// The upstream's request count (`GET /__count`).
fn served(upstream: SocketAddr) -> Result<u64> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(upstream)?;
    tcp.write_all(b"GET /__count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    text.split_once("\r\n\r\n")
        .and_then(|(_, body)| body.trim().parse().ok())
        .with_context(|| format!("the upstream's /__count answered {text:?}"))
}

/// Frees the broker's memory (tansu keeps everything in memory); best effort.
fn delete_topic(brokers: &str, topic: &str) {
    let deleted = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
        .map_err(anyhow::Error::from)
        .and_then(|admin| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(admin.delete_topics(&[topic], &AdminOptions::new()))?;
            Ok(())
        });
    if let Err(e) = deleted {
        eprintln!("bench: deleting {topic}: {e:#}");
    }
}

/// A name no earlier run used (the broker may outlive the benchmark).
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}
