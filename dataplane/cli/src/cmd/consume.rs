//! `fiso consume --topic T [--from-beginning] [--max-messages N] [--exit-at-end] [--timeout D]
//! [--group G] [--format json|pretty]`: print a topic's records (key, headers, partition,
//! offset, value).
//!
//! Without `--group` the partitions are assigned directly (no group join, nothing committed);
//! with `--group` the consumer joins that group and commits what it printed. Like kcat -C and
//! kafka-console-consumer it waits for records until Ctrl-C, `--max-messages` or `--timeout`;
//! `--exit-at-end` stops once every partition is read to its end.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Map, Value};

use super::produce::{client_config, kafka_error, resolve_cluster, ConnectionFailures};

/// The consumer's context: keeps librdkafka's word on failed broker connections.
#[derive(Default)]
struct Watch {
    connections: ConnectionFailures,
}

impl ClientContext for Watch {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.connections.log(level, fac, message);
    }
}

impl ConsumerContext for Watch {}

/// How long to wait for the brokers to answer a metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsumeFormat {
    /// One JSON object per record and line.
    Json,
    /// Readable, value pretty-printed.
    Pretty,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Start at the oldest record (default: only records produced from now on).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, short = 'c')]
    pub max_messages: Option<usize>,
    /// Stop once every partition is read to its end (kcat's `-e`). By default `consume` waits
    /// for records until Ctrl-C, `--max-messages` or `--timeout`, like kcat -C and
    /// kafka-console-consumer.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Stop when no record arrived for this long, e.g. `10s` (kafka-console-consumer's
    /// `--timeout-ms`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Wait for new records: the default (kept for earlier scripts).
    #[arg(long, short = 'f', hide = true, conflicts_with = "exit_at_end")]
    pub follow: bool,
    /// Consumer group to join and commit offsets for (default: none, nothing committed).
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ConsumeFormat::Pretty)]
    pub format: ConsumeFormat,
    /// Bootstrap brokers, comma-separated (default: the project's first Kafka cluster, else
    /// localhost:9092).
    #[arg(long, short = 'b', env = "FISO_KAFKA_BROKERS", hide_env_values = true)]
    pub brokers: Option<String>,
}

/// A record as printed by `--format json`.
pub fn record_json(msg: &BorrowedMessage<'_>) -> Value {
    let mut headers = Map::new();
    if let Some(hs) = msg.headers() {
        for h in hs.iter() {
            let v = h.value.map_or(Value::Null, |v| {
                Value::String(String::from_utf8_lossy(v).into())
            });
            headers.insert(h.key.to_string(), v);
        }
    }
    json!({
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": msg.timestamp().to_millis(),
        "key": msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": headers,
        "value": payload_value(msg.payload()),
    })
}

/// JSON payloads as JSON, anything else as a (lossy UTF-8) string; no payload as null.
pub fn payload_value(payload: Option<&[u8]>) -> Value {
    match payload {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into())),
    }
}

fn print_pretty(out: &mut impl Write, record: &Value) -> std::io::Result<()> {
    let key = match &record["key"] {
        Value::String(s) => s.clone(),
        _ => "(none)".into(),
    };
    writeln!(
        out,
        "{} partition={} offset={} key={key}",
        console::style(record["topic"].as_str().unwrap_or_default()).bold(),
        record["partition"],
        record["offset"],
    )?;
    if let Some(headers) = record["headers"].as_object() {
        for (k, v) in headers {
            writeln!(out, "  {k}: {}", v.as_str().unwrap_or("(null)"))?;
        }
    }
    let value = serde_json::to_string_pretty(&record["value"]).unwrap_or_default();
    writeln!(out, "{value}")?;
    writeln!(out)
}

pub fn run(args: ConsumeArgs) -> Result<ExitCode> {
    let cluster = resolve_cluster(args.brokers.as_deref());
    let brokers = cluster.brokers.join(",");
    let mut config = client_config(&cluster)?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("fiso-consume-{}", uuid::Uuid::new_v4()));
    config
        .set("group.id", &group)
        .set("client.id", "fiso-consume")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    if args.group.is_some() {
        // Short enough that the first join is quick, at the Kafka broker's default minimum.
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1500");
    }
    let consumer: BaseConsumer<Watch> =
        config.create_with_context(Watch::default()).map_err(|e| {
            kafka_error(
                "creating the Kafka consumer",
                &e,
                &brokers,
                &ConnectionFailures::default(),
            )
        })?;
    let failed = |what: &str, e: &KafkaError| {
        // librdkafka's log lines wait on the consumer's queue: read them for its word on the
        // connection.
        for _ in 0..1000 {
            if consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        kafka_error(what, e, &brokers, &consumer.context().connections)
    };

    let metadata = consumer
        .fetch_metadata(Some(&args.topic), METADATA_TIMEOUT)
        .map_err(|e| failed(&format!("reading topic {}", args.topic), &e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == args.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() && args.exit_at_end {
        bail!("topic {} does not exist on {brokers}", args.topic);
    }

    // A topic that does not exist yet is subscribed to (with the throwaway group, which commits
    // nothing): its partitions come when it is created.
    if args.group.is_some() || partitions.is_empty() {
        consumer
            .subscribe(&[&args.topic])
            .map_err(|e| failed(&format!("subscribing to {}", args.topic), &e))?;
    } else {
        let start = if args.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition_offset(&args.topic, *p, start)?;
        }
        consumer
            .assign(&list)
            .map_err(|e| failed("assigning partitions", &e))?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seen = 0usize;
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    // A group member gets its partitions only after the join; give it time before "at end".
    let started = Instant::now();
    let mut last_record = Instant::now();
    let mut said_waiting = false;
    loop {
        if args.max_messages.is_some_and(|max| seen >= max) {
            break;
        }
        if args.timeout.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(msg)) => {
                last_record = Instant::now();
                at_end.remove(&msg.partition());
                let record = record_json(&msg);
                match args.format {
                    ConsumeFormat::Json => writeln!(out, "{record}")?,
                    ConsumeFormat::Pretty => print_pretty(&mut out, &record)?,
                }
                out.flush()?;
                seen += 1;
                if args.group.is_some() {
                    consumer
                        .store_offset_from_message(&msg)
                        .map_err(|e| failed("storing the offset", &e))?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            // Subscribed before the topic exists: it is not an error to wait for it.
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) if !args.exit_at_end && !said_waiting => {
                eprintln!("waiting for topic {} to be created", args.topic);
                said_waiting = true;
            }
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) if !args.exit_at_end => {}
            Some(Err(e)) => return Err(failed(&format!("reading topic {}", args.topic), &e)),
        }
        if args.exit_at_end {
            let assigned = if args.group.is_some() {
                consumer.assignment().map(|a| a.count()).unwrap_or(0)
            } else {
                partitions.len()
            };
            let joined = assigned > 0 || started.elapsed() > Duration::from_secs(15);
            if joined && at_end.len() >= assigned {
                break;
            }
        }
    }
    if args.group.is_some() && seen > 0 {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .map_err(|e| failed("committing offsets", &e))?;
    }
    if seen == 0 && args.format == ConsumeFormat::Pretty {
        eprintln!(
            "no messages{}",
            if args.from_beginning {
                ""
            } else {
                " (new ones only; add --from-beginning)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(payload_value(None), Value::Null);
        assert_eq!(payload_value(Some(b"{\"a\":1}")), json!({"a":1}));
        assert_eq!(payload_value(Some(b"plain")), json!("plain"));
    }
}
