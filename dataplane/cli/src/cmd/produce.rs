//! `fiso produce --topic T [--json J | --file F] [--key K] [--header k=v]... [--count N]
//! [--rate 100ms] [--brokers ...]`: send test events to Kafka and wait for every delivery report.
//!
//! Brokers: `--brokers`, else the first Kafka cluster of the project's flows (`./fiso/flows`,
//! with its SASL/TLS settings), else `localhost:9092`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use fiso_config::kafka::{KafkaCluster, KafkaConfig};
use fiso_runtime::kafka::error_text::{broker_hint, connection_failure, describe, unreachable};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde_json::Value;

use crate::project::DEFAULT_DIR;

/// How long librdkafka keeps trying to deliver one message before reporting it failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    #[arg(long, short = 't')]
    pub topic: String,
    /// One JSON event, inline.
    #[arg(long, conflicts_with = "file")]
    pub json: Option<String>,
    /// File of events: one JSON document (may span lines) or JSON Lines.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Send the values as they are, not parsed as JSON: `--json` is one value, and each
    /// non-empty line of `--file` is one (to test how a flow handles poison records).
    #[arg(long)]
    pub raw: bool,
    /// Record key of every message.
    #[arg(long, short = 'k')]
    pub key: Option<String>,
    /// Record header `name=value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Number of messages to send, cycling through the input events (default: each event once).
    #[arg(long, short = 'c')]
    pub count: Option<usize>,
    /// Pause between messages, e.g. `100ms`, `1s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rate: Option<Duration>,
    /// Bootstrap brokers, comma-separated (default: the project's first Kafka cluster, else
    /// localhost:9092).
    #[arg(long, short = 'b', env = "FISO_KAFKA_BROKERS", hide_env_values = true)]
    pub brokers: Option<String>,
}

/// The cluster to talk to: `--brokers`, else the first `kafka.clusters` entry in the
/// project's `flows/*.yaml` (`./fiso`, or the project the current directory is in), else
/// `localhost:9092`.
pub fn resolve_cluster(brokers: Option<&str>) -> KafkaCluster {
    if let Some(b) = brokers {
        return KafkaCluster {
            brokers: b.split(',').map(|s| s.trim().to_string()).collect(),
            ..KafkaCluster::default()
        };
    }
    let project = crate::project::find().unwrap_or_else(|| DEFAULT_DIR.into());
    project_cluster(&project.join("flows")).unwrap_or_else(|| KafkaCluster {
        brokers: vec!["localhost:9092".into()],
        ..KafkaCluster::default()
    })
}

/// The first Kafka cluster defined in the flow files of `dir` (sorted by file name).
fn project_cluster(dir: &Path) -> Option<KafkaCluster> {
    let files = crate::project::read_yaml_dir(dir).ok()?;
    files.iter().find_map(|f| {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&f.text).ok()?;
        let kafka = doc.get("kafka")?.clone();
        let config: KafkaConfig = serde_yaml_ng::from_value(kafka).ok()?;
        config
            .clusters
            .into_values()
            .find(|c| !c.brokers.is_empty())
    })
}

/// Client settings for `cluster` with a readable error.
pub fn client_config(cluster: &KafkaCluster) -> Result<ClientConfig> {
    fiso_flow::kafka::client::client_config(cluster).context("Kafka cluster settings")
}

/// The events of a `--file`: one JSON document (pretty-printed is fine), or JSON Lines /
/// concatenated documents. Errors name the line.
pub fn parse_events(text: &str) -> Result<Vec<Value>> {
    if text.trim().is_empty() {
        bail!("no JSON events in the input");
    }
    if let Ok(one) = serde_json::from_str::<Value>(text) {
        return Ok(vec![one]);
    }
    let mut events = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match item {
            Ok(v) => events.push(v),
            Err(e) => bail!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        }
    }
    Ok(events)
}

/// `name=value` → (name, value); the value may contain `=` and be empty.
pub fn parse_header(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("invalid header {s:?}: expected NAME=VALUE"),
    }
}

/// A Kafka client's error for the user: one line, with librdkafka's word on the connection
/// (`failures`) and the fix when the brokers cannot be reached (`--brokers` being the CLI's way
/// to name others).
pub fn kafka_error(
    what: &str,
    e: &KafkaError,
    brokers: &str,
    failures: &ConnectionFailures,
) -> anyhow::Error {
    let text = match e.rdkafka_error_code() {
        Some(code) if unreachable(code) => unreachable_text(&describe(e), brokers, failures),
        _ => describe(e),
    };
    anyhow::anyhow!("{what}: {text}")
}

/// `cause` of brokers not answering, with librdkafka's word on the last failed connection and
/// the fix.
fn unreachable_text(cause: &str, brokers: &str, failures: &ConnectionFailures) -> String {
    let why = failures
        .last()
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    format!("{cause}{why}; {} (or set --brokers)", broker_hint(brokers))
}

/// librdkafka's last word on a failed broker connection (its `FAIL` log line): what the
/// error codes do not say (connection refused, name not resolved, TLS handshake failed).
#[derive(Debug, Default)]
pub struct ConnectionFailures(Mutex<Option<String>>);

impl ConnectionFailures {
    /// Takes in one librdkafka log line.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" && (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection_failure(message));
        }
    }

    pub fn last(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Counts delivery reports; failures keep their error.
#[derive(Default)]
struct Deliveries {
    ok: AtomicUsize,
    failed: Mutex<Vec<KafkaError>>,
    connections: ConnectionFailures,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.connections.log(level, fac, message);
    }

    // Broker errors end up in the delivery reports, said there.
    fn error(&self, _: KafkaError, _: &str) {}
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => self.failed.lock().expect("deliveries lock").push(e.clone()),
        }
    }
}

impl Deliveries {
    fn reported(&self) -> usize {
        self.ok.load(Ordering::Relaxed) + self.failed.lock().expect("deliveries lock").len()
    }
}

/// The record values to send, in order.
fn payloads(args: &ProduceArgs) -> Result<Vec<String>> {
    let text = match (&args.json, &args.file) {
        (Some(json), _) => json.clone(),
        (None, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, None) => bail!("nothing to send: pass --json '{{...}}' or --file events.jsonl"),
    };
    if args.raw {
        let values: Vec<String> = match &args.json {
            Some(value) => vec![value.clone()],
            None => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        };
        if values.is_empty() {
            bail!("nothing to send: the file has no non-empty line");
        }
        return Ok(values);
    }
    let events = match (&args.json, &args.file) {
        (Some(_), _) => vec![serde_json::from_str::<Value>(&text)
            .context("--json is not valid JSON (send it as it is with --raw)")?],
        (None, file) => parse_events(&text).with_context(|| {
            format!(
                "{} (send lines as they are with --raw)",
                file.as_deref().unwrap_or(Path::new("-")).display()
            )
        })?,
    };
    Ok(events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?)
}

pub fn run(args: ProduceArgs) -> Result<ExitCode> {
    let payloads = payloads(&args)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let total = args.count.unwrap_or(payloads.len());

    let cluster = resolve_cluster(args.brokers.as_deref());
    let brokers = cluster.brokers.join(",");
    let mut config = client_config(&cluster)?;
    config
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        .set("client.id", "fiso-produce");
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .map_err(|e| {
            kafka_error(
                "creating the Kafka producer",
                &e,
                &brokers,
                &ConnectionFailures::default(),
            )
        })?;

    let bar = if total > 1 {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} sent {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    for i in 0..total {
        if i > 0 {
            if let Some(rate) = args.rate {
                let until = Instant::now() + rate;
                while Instant::now() < until {
                    producer.poll(until.saturating_duration_since(Instant::now()));
                }
            }
        }
        let payload = &payloads[i % payloads.len()];
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in &headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::<str, str>::to(&args.topic)
            .payload(payload.as_str())
            .headers(owned);
        if let Some(key) = &args.key {
            record = record.key(key.as_str());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(kafka_error(
                        &format!("sending message {} to {}", i + 1, args.topic),
                        &e,
                        &brokers,
                        &producer.context().connections,
                    ))
                }
            }
        }
        producer.poll(Duration::ZERO);
        bar.set_position(producer.context().reported() as u64);
    }
    // Every message gets a report within message.timeout.ms; allow some slack on top.
    let deadline = Instant::now() + MESSAGE_TIMEOUT + Duration::from_secs(5);
    while producer.context().reported() < total && Instant::now() < deadline {
        producer.poll(Duration::from_millis(100));
        bar.set_position(producer.context().reported() as u64);
    }
    let _ = producer.flush(Duration::from_secs(1));
    bar.finish_and_clear();

    let ctx = producer.context();
    let ok = ctx.ok.load(Ordering::Relaxed);
    let failed = ctx.failed.lock().expect("deliveries lock").clone();
    let missing = total.saturating_sub(ok + failed.len());
    if failed.is_empty() && missing == 0 {
        println!("sent {ok} message(s) to {} ({brokers})", args.topic);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} {}",
        crate::style::error("error:"),
        not_delivered(
            failed.len() + missing,
            total,
            &args.topic,
            failed.first(),
            &ctx.connections,
            &brokers
        )
    );
    Ok(ExitCode::FAILURE)
}

/// Why `count` of `total` records were not delivered, in one line: the first failure (or
/// none reported), and when that says the brokers could not be reached, librdkafka's word on
/// the connection and the fix.
fn not_delivered(
    count: usize,
    total: usize,
    topic: &str,
    first: Option<&KafkaError>,
    failures: &ConnectionFailures,
    brokers: &str,
) -> String {
    let what = format!("{count} of {total} message(s) to {topic} not delivered");
    let cause = first.map_or_else(|| "no delivery report".to_owned(), describe);
    let maybe_unreachable = first
        .and_then(KafkaError::rdkafka_error_code)
        .is_none_or(unreachable);
    if maybe_unreachable {
        format!("{what}: {}", unreachable_text(&cause, brokers, failures))
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonl_file() {
        let events = parse_events("{\"a\":1}\n\n{\"a\":2}\n{\"b\":[1,2]}\n").unwrap();
        assert_eq!(
            events,
            vec![json!({"a":1}), json!({"a":2}), json!({"b":[1,2]})]
        );
    }

    #[test]
    fn pretty_single_document() {
        let events = parse_events("{\n  \"order_id\": \"1\",\n  \"amount\": 9.5\n}\n").unwrap();
        assert_eq!(events, vec![json!({"order_id":"1","amount":9.5})]);
    }

    #[test]
    fn concatenated_pretty_documents() {
        let events = parse_events("{\n \"a\": 1\n}\n{\n \"a\": 2\n}\n").unwrap();
        assert_eq!(events, vec![json!({"a":1}), json!({"a":2})]);
    }

    #[test]
    fn invalid_line_is_named() {
        let err = parse_events("{\"a\":1}\n{oops}\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_events("  \n").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("source=cli").unwrap(),
            ("source".into(), "cli".into())
        );
        assert_eq!(parse_header("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_header("empty=").unwrap(), ("empty".into(), "".into()));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=v").is_err());
    }

    #[test]
    fn undelivered_records_say_why_once_and_how_to_fix_it() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let failures = ConnectionFailures::default();
        failures.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 \
             failed: Connection refused",
        );
        assert_eq!(
            not_delivered(1, 1, "orders", Some(&timed_out), &failures, "127.0.0.1:1"),
            "1 of 1 message(s) to orders not delivered: producing: Message timed out \
             (127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused); \
             is the broker at 127.0.0.1:1 running? `fiso doctor` checks (or set --brokers)"
        );
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(
            not_delivered(2, 3, "orders", Some(&too_large), &failures, "k:9092"),
            "2 of 3 message(s) to orders not delivered: producing: the broker answered \
             Message size too large"
        );
        let e = kafka_error(
            "reading topics",
            &KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure),
            "k:9092",
            &ConnectionFailures::default(),
        );
        assert_eq!(
            e.to_string(),
            "reading topics: fetching metadata: Broker transport failure; is the broker at \
             k:9092 running? `fiso doctor` checks (or set --brokers)"
        );
    }

    #[test]
    fn cluster_from_flags_project_or_default() {
        let c = resolve_cluster(Some("a:1, b:2"));
        assert_eq!(c.brokers, vec!["a:1", "b:2"]);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "name: a\nsource:\n  type: http\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "name: b\nkafka:\n  clusters:\n    main:\n      brokers: [\"k1:9092\", \"k2:9092\"]\n",
        )
        .unwrap();
        let c = project_cluster(dir.path()).unwrap();
        assert_eq!(c.brokers, vec!["k1:9092", "k2:9092"]);
        assert!(project_cluster(&dir.path().join("missing")).is_none());
    }
}
