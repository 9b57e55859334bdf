//! The Kafka drain's floor on Fiso's libraries: a bare rdkafka consumer (Fiso's client
//! settings and commit policy) that POSTs each record's value as it is to the upstream through
//! hyper-util's pooled client, up to `in_flight` at once, on a multi-threaded Tokio runtime.
//! No CloudEvent, no ordering, no metrics: what is left of Fiso's drain is what these two
//! libraries and the loopback cost, the bound beneath any Kafka → HTTP bridge built on them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio::task::JoinSet;

use super::kafka::{commit, COMMIT_BATCH, COMMIT_INTERVAL};

/// Where and how many at once.
pub struct BareClient {
    pub upstream: Uri,
    pub in_flight: usize,
}

/// What [`BareClient::drain`] measured, in seconds since `started`.
pub struct Drain {
    pub records: usize,
    pub first: Duration,
    pub done: Duration,
}

impl BareClient {
    /// Consumes and delivers until `records` records were answered with a 2xx, or `max`.
    pub fn drain(
        &self,
        config: &ClientConfig,
        topic: &str,
        records: usize,
        max: Duration,
        started: Instant,
    ) -> Result<Drain> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        // The consumer's wake-ups are spawned on the runtime it is created in.
        let _in_runtime = runtime.enter();
        let consumer: StreamConsumer = config.create()?;
        consumer.subscribe(&[topic])?;
        let (upstream, in_flight, topic) =
            (self.upstream.clone(), self.in_flight, topic.to_owned());
        // On a worker, like Fiso's partition tasks: `block_on` would poll it on this thread.
        runtime.block_on(async move {
            tokio::spawn(async move {
                run(
                    consumer,
                    &topic,
                    upstream,
                    in_flight,
                    records,
                    started + max,
                    started,
                )
                .await
            })
            .await
            .context("the drain task panicked")?
        })
    }
}

async fn run(
    consumer: StreamConsumer,
    topic: &str,
    upstream: Uri,
    in_flight: usize,
    records: usize,
    deadline: Instant,
    started: Instant,
) -> Result<Drain> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut running = JoinSet::new();
    let (mut received, mut delivered, mut first) = (0, 0, None);
    let mut next: HashMap<i32, i64> = HashMap::new();
    let (mut uncommitted, mut last_commit) = (0, Instant::now());
    while delivered < records {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => break,
            Some(answered) = running.join_next() => {
                answered??;
                delivered += 1;
            }
            m = consumer.recv(), if received < records && running.len() < in_flight => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("kafka-drain: {e}");
                        continue;
                    }
                };
                first.get_or_insert_with(|| started.elapsed());
                received += 1;
                let body = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                running.spawn(post(client.clone(), upstream.clone(), body));
                next.insert(m.partition(), m.offset() + 1);
                uncommitted += 1;
                if uncommitted >= COMMIT_BATCH || last_commit.elapsed() >= COMMIT_INTERVAL {
                    commit(&consumer, topic, &mut next, CommitMode::Async)?;
                    (uncommitted, last_commit) = (0, Instant::now());
                }
            }
        }
    }
    let done = started.elapsed();
    commit(&consumer, topic, &mut next, CommitMode::Sync)?;
    Ok(Drain {
        records: delivered,
        first: first.unwrap_or(done),
        done,
    })
}

async fn post(
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: Uri,
    body: Bytes,
) -> Result<()> {
    let request = Request::post(upstream)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    ensure!(status.is_success(), "the upstream answered {status}");
    Ok(())
}
