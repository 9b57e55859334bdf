//! The Kafka drain's floor on Fiso's libraries: a bare rdkafka consumer (Fiso's client
//! settings and commit policy) that POSTs each record's value as it is to the upstream, up to
//! `in_flight` at once, on a multi-threaded Tokio runtime, through hyper-util's general client
//! or (`lean`) through Fiso's own pool of plain HTTP/1.1 connections
//! ([`fiso_runtime::http_client::OriginClient`]). No CloudEvent, no ordering, no metrics: what
//! is left of Fiso's drain is what these libraries and the loopback cost, the bound beneath any
//! Kafka → HTTP bridge built on them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use fiso_runtime::http_client::{ClientSettings, OriginClient};
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio::task::JoinSet;

use super::kafka::{commit, COMMIT_BATCH, COMMIT_INTERVAL};

/// Where, how many at once, and through which client.
pub struct BareClient {
    pub upstream: Uri,
    pub in_flight: usize,
    /// Through Fiso's own pool instead of hyper-util's client.
    pub lean: bool,
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
        let poster = if self.lean {
            let pool = ClientSettings::default().build_for(&self.upstream)?;
            Poster::Lean(Arc::new((pool, self.upstream.clone())))
        } else {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new()).build(connector);
            Poster::HyperUtil(Arc::new((client, self.upstream.clone())))
        };
        let (in_flight, topic) = (self.in_flight, topic.to_owned());
        // On a worker, like Fiso's partition tasks: `block_on` would poll it on this thread.
        runtime.block_on(async move {
            tokio::spawn(async move {
                run(
                    consumer,
                    &topic,
                    poster,
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
    poster: Poster,
    in_flight: usize,
    records: usize,
    deadline: Instant,
    started: Instant,
) -> Result<Drain> {
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
                running.spawn(poster.clone().post(body));
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

/// The client a bare drain posts through.
#[derive(Clone)]
enum Poster {
    HyperUtil(Arc<(Client<HttpConnector, Full<Bytes>>, Uri)>),
    Lean(Arc<(OriginClient<Full<Bytes>>, Uri)>),
}

impl Poster {
    async fn post(self, body: Bytes) -> Result<()> {
        match self {
            Poster::HyperUtil(client) => {
                let (client, upstream) = &*client;
                read_success(client.request(post(upstream, body)?).await?).await
            }
            Poster::Lean(pool) => {
                let (pool, upstream) = &*pool;
                read_success(pool.request(post(upstream, body)?).await?).await
            }
        }
    }
}

fn post(upstream: &Uri, body: Bytes) -> Result<Request<Full<Bytes>>> {
    Ok(Request::post(upstream.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))?)
}

/// Reads the whole answer, like the sink; `Err` unless 2xx.
async fn read_success<B>(response: Response<B>) -> Result<()>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let status = response.status();
    response.into_body().collect().await?;
    ensure!(status.is_success(), "the upstream answered {status}");
    Ok(())
}
