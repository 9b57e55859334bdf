//! CloudEvents conformance: every vector of `e2e/conformance` through one real `fiso flow` —
//! ours from every MUST of the CloudEvents 1.0.2 documents, the upstream conformance repository's
//! feature scenarios (every `Examples` row) and its YAML events, sent exactly as its
//! `cloudevents send` tool builds the request (`fiso_e2e::conformance` loads and checks them).
//! `fiso flow` runs three passthrough flows (no transform, no `cloudevents:` overrides):
//! - `/structured` → an HTTP sink in structured mode, `/binary` → an HTTP sink in binary mode,
//!   both on one listen address: every HTTP vector is sent to both;
//! - a Kafka topic → an HTTP sink in structured mode: every Kafka vector is produced to it.
//!
//! A valid vector must reach the sink as `conformance::check` says; an invalid one must be
//! refused (HTTP: 400 `INPUT_INVALID` naming the problem) and reach no sink. "No sink" is proven
//! with a barrier: a valid event sent right after must be the next (and only) thing the sink
//! receives. Every vector runs; the test then fails once, listing each failing vector with its
//! clause and every difference found.

use std::time::Duration;

use fiso_e2e::conformance::{self, check, Expect, Message, Transport, Vector};
use fiso_e2e::kafka::{self, create_topic, kafka_source, unique};
use fiso_e2e::{client, eventually, send, FisoProcess, FlowDir, HttpFlow, Recorded, SinkServer};
use serde_json::{json, Map, Value};

const SHARED: &str = "127.0.0.1:0";

/// How long the Kafka flow may take to deliver every record (group join included).
const KAFKA_DEADLINE: Duration = Duration::from_secs(60);

/// Checks what a sink received against the expected event.
type SinkCheck = fn(&Map<String, Value>, &Recorded) -> Vec<String>;

/// The failures found, per vector.
#[derive(Default)]
struct Report {
    checked: usize,
    failures: Vec<String>,
}

impl Report {
    fn record(&mut self, vector: &Vector, via: &str, problems: Vec<String>) {
        self.checked += 1;
        let outcome = if problems.is_empty() { "ok  " } else { "FAIL" };
        eprintln!("{outcome} {} via {via}", vector.name);
        if !problems.is_empty() {
            let mut text = format!("{} via {via} [{}]", vector.name, vector.clause);
            for p in problems {
                text.push_str(&format!("\n    - {p}"));
            }
            self.failures.push(text);
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} vector runs do not conform:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

/// A minimal valid structured event with `id`, to send after an invalid one.
fn barrier(id: &str) -> Message {
    Message::structured(
        "application/cloudevents+json",
        &json!({"specversion": "1.0", "id": id, "source": "/barrier", "type": "barrier"}),
    )
}

/// The `id` of what a sink received, in either mode.
fn received_id(got: &Recorded) -> Option<String> {
    got.header("ce-id").map(str::to_owned).or_else(|| {
        serde_json::from_slice::<Value>(&got.body)
            .ok()?
            .get("id")?
            .as_str()
            .map(str::to_owned)
    })
}

async fn post(client: &reqwest::Client, url: &str, message: &Message) -> fiso_e2e::Answer {
    let mut request = client.post(url).body(message.body.clone());
    for (k, v) in &message.headers {
        request = request.header(k, v);
    }
    send(request).await
}

/// Sends `vector` to `url`, whose flow delivers to `sink`; the HTTP source answers only after
/// the sink did, so what the sink recorded is complete when the answer is in.
async fn run_http(
    client: &reqwest::Client,
    url: &str,
    sink: &SinkServer,
    vector: &Vector,
    check: SinkCheck,
    barrier_id: &str,
) -> Vec<String> {
    let before = sink.count();
    let answer = post(client, url, &vector.message).await;
    match &vector.expect {
        Expect::Valid(want) => {
            if !answer.status.is_success() {
                return vec![format!("refused: {} {}", answer.status, answer.text())];
            }
            match &sink.requests_from(before)[..] {
                [got] => check(want, got),
                other => vec![format!(
                    "the sink received {} requests, want 1",
                    other.len()
                )],
            }
        }
        Expect::Invalid(word) => {
            let mut problems = check::refusal(&answer, word);
            let answer = post(client, url, &barrier(barrier_id)).await;
            assert!(
                answer.status.is_success(),
                "the barrier event was refused: {} {}",
                answer.status,
                answer.text()
            );
            let got = sink.requests_from(before);
            if got.len() != 1 || received_id(&got[0]).as_deref() != Some(barrier_id) {
                problems.push(format!(
                    "the invalid event reached the sink ({} request(s) before the barrier)",
                    got.len().saturating_sub(1)
                ));
            }
            problems
        }
    }
}

/// Produces every Kafka vector, each followed by a barrier record, then splits what the sink
/// received at the barriers: between two barriers is what one vector produced.
async fn run_kafka(topic: &str, sink: &SinkServer, vectors: &[&Vector], report: &mut Report) {
    let barrier_id = |i: usize| format!("kafka-barrier-{i}");
    let as_record = |m: &Message| {
        let headers = m
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        (headers, m.body.clone())
    };
    let mut records = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        records.push(as_record(&v.message));
        records.push(as_record(&barrier(&barrier_id(i))));
    }
    kafka::produce_in_order(topic, &records).await;

    let last = barrier_id(vectors.len() - 1);
    let done = eventually(KAFKA_DEADLINE, || async {
        sink.requests()
            .iter()
            .any(|r| received_id(r).as_deref() == Some(&last))
            .then_some(())
    })
    .await;
    let received = sink.requests();
    let mut segments: Vec<Option<Vec<Recorded>>> = vec![None; vectors.len()];
    let mut current = Vec::new();
    for got in received {
        let id = received_id(&got).unwrap_or_default();
        match (0..vectors.len()).find(|&i| id == barrier_id(i)) {
            Some(i) => segments[i] = Some(std::mem::take(&mut current)),
            None => current.push(got),
        }
    }
    for (vector, segment) in vectors.iter().zip(segments) {
        let problems = match (segment, &vector.expect) {
            (None, _) if done.is_none() => vec![format!(
                "the flow had not delivered every record within {KAFKA_DEADLINE:?}"
            )],
            (None, _) => vec!["its barrier record never reached the sink".to_owned()],
            (Some(got), Expect::Valid(want)) => match &got[..] {
                [got] => check::structured_sink(want, got),
                other => vec![format!(
                    "the sink received {} requests, want 1",
                    other.len()
                )],
            },
            (Some(got), Expect::Invalid(_)) if got.is_empty() => Vec::new(),
            (Some(got), Expect::Invalid(_)) => vec![format!(
                "the invalid event reached the sink ({} request(s))",
                got.len()
            )],
        };
        report.record(vector, "kafka → structured", problems);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_vector_through_fiso_flow() {
    let vectors = conformance::all();
    let structured = SinkServer::ok().await;
    let binary = SinkServer::ok().await;
    let from_kafka = SinkServer::ok().await;
    let topic = unique("ce-conformance");
    create_topic(&topic, 1).await;

    let dir = FlowDir::new();
    dir.write(
        "structured.yaml",
        &HttpFlow::new("structured", SHARED, "/structured", &structured.url("/in")).yaml(),
    );
    dir.write(
        "binary.yaml",
        &HttpFlow::new("binary", SHARED, "/binary", &binary.url("/in"))
            .sink_config("mode: binary")
            .yaml(),
    );
    dir.write(
        "kafka.yaml",
        &format!(
            "name: from-kafka\n{}sink:\n  type: http\n  config:\n    url: {}\n\
             errorHandling:\n  deadLetterTopic: {}\n",
            kafka_source(&topic, &unique("ce-conformance")),
            from_kafka.url("/in"),
            unique("ce-conformance-dlq"),
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let base = format!("http://{}", fiso.http_addr(SHARED).await);
    let client = client();

    let mut report = Report::default();
    let paths: [(&str, &SinkServer, SinkCheck); 2] = [
        ("structured", &structured, check::structured_sink),
        ("binary", &binary, check::binary_sink),
    ];
    let http = vectors.iter().filter(|v| v.transport == Transport::Http);
    for (i, vector) in http.enumerate() {
        for (path, sink, check) in paths {
            let url = format!("{base}/{path}");
            let barrier_id = format!("barrier-{i}");
            let problems = run_http(&client, &url, sink, vector, check, &barrier_id).await;
            report.record(vector, &format!("/{path}"), problems);
        }
    }
    let kafka: Vec<&Vector> = vectors
        .iter()
        .filter(|v| v.transport == Transport::Kafka)
        .collect();
    run_kafka(&topic, &from_kafka, &kafka, &mut report).await;
    report.finish();
}
