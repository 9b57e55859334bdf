//! Kafka sink: CloudEvents over Kafka (the Kafka protocol binding, written here on rdkafka 0.39:
//! binary mode with `ce_*` headers by default, structured mode on request), an idempotent
//! producer with `acks=all` by default, delivery confirmed before `deliver` returns, broker
//! errors retried per the flow's [`RetryPolicy`].

use std::sync::Arc;
use std::time::Duration;

use cloudevents::event::{AttributesReader, Data, ExtensionValue};
use cloudevents::Event;
use fiso_config::flow::{ContentMode, KafkaSinkConfig, RequiredAcks};
use fiso_config::kafka::{KafkaCluster, KafkaConfig};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::event::json;
use crate::retry::{with_retries, Attempt, RetryError, RetryPolicy};
use crate::sink::http::{DeliveryContext, CORRELATION_HEADER, STRUCTURED_CONTENT_TYPE};
use crate::{FlowError, Scope};

/// How long a record may wait in the producer (queue + in-flight + librdkafka's own retries)
/// before one attempt counts as failed.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors building a Kafka producer from config.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkBuildError {
    #[error("{path}: cluster `{cluster}` is not defined under `kafka.clusters`")]
    UnknownCluster { path: &'static str, cluster: String },
    #[error("{path}: no cluster to use (define exactly one under `kafka.clusters` or name one)")]
    NoCluster { path: &'static str },
    #[error("kafka cluster `{cluster}`: {message}")]
    Client { cluster: String, message: String },
    #[error("sink.config.key: {0}")]
    Key(String),
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaDelivery {
    pub partition: i32,
    pub offset: i64,
}

/// A record could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
#[error("producing to Kafka topic `{topic}` failed after {attempts} attempt(s): {message}")]
pub struct KafkaDeliveryError {
    pub topic: String,
    pub attempts: u32,
    pub message: String,
}

/// One Kafka record, before it is handed to the producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaRecord {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

impl KafkaRecord {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    fn owned_headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        h
    }
}

/// The cluster named `name`, or the only one defined when `name` is `None`.
pub fn find_cluster<'a>(
    kafka: Option<&'a KafkaConfig>,
    name: Option<&str>,
    path: &'static str,
) -> Result<(&'a str, &'a KafkaCluster), KafkaSinkBuildError> {
    let clusters = kafka.map(|k| &k.clusters);
    match name {
        Some(name) => clusters
            .and_then(|c| c.get_key_value(name))
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| KafkaSinkBuildError::UnknownCluster {
                path,
                cluster: name.to_owned(),
            }),
        None => match clusters {
            Some(c) if c.len() == 1 => {
                let (k, v) = c.first().expect("one cluster");
                Ok((k.as_str(), v))
            }
            _ => Err(KafkaSinkBuildError::NoCluster { path }),
        },
    }
}

/// An idempotent (`acks=all`) or leader-acked (`acks=1`) producer for `cluster`.
pub fn producer(
    name: &str,
    cluster: &KafkaCluster,
    acks: RequiredAcks,
) -> Result<FutureProducer, KafkaSinkBuildError> {
    producer_with(name, cluster, acks, None)
}

/// [`producer`], transactional when `transactional_id` is set (which implies `acks=all`).
fn producer_with(
    name: &str,
    cluster: &KafkaCluster,
    acks: RequiredAcks,
    transactional_id: Option<&str>,
) -> Result<FutureProducer, KafkaSinkBuildError> {
    let acks = if transactional_id.is_some() {
        RequiredAcks::All
    } else {
        acks
    };
    let client = |message: String| KafkaSinkBuildError::Client {
        cluster: name.to_owned(),
        message,
    };
    let mut config = super::client::producer_config(cluster, acks, MESSAGE_TIMEOUT)
        .map_err(|e| client(e.to_string()))?;
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    config.create().map_err(|e| client(e.to_string()))
}

/// A configured Kafka sink; cheap to clone (the producer is shared).
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    key: Option<CompiledExpr>,
    headers: Vec<(String, String)>,
    mode: ContentMode,
    policy: RetryPolicy,
    /// Set once `init_transactions` succeeded on a transactional producer (librdkafka allows
    /// it once per producer; every consumer run after that only begins transactions).
    transactions: Option<Arc<OnceCell<()>>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("key", &self.key.as_ref().map(CompiledExpr::source))
            .field("headers", &self.headers)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink producing to `cfg.topic`; with `transactional_id` its producer is transactional
    /// and records may only be produced inside a transaction (see [`Self::begin_transactions`]).
    pub fn new(
        cfg: &KafkaSinkConfig,
        kafka: Option<&KafkaConfig>,
        policy: RetryPolicy,
        transactional_id: Option<&str>,
        budget: Budget,
    ) -> Result<Self, KafkaSinkBuildError> {
        let (name, cluster) = find_cluster(kafka, Some(&cfg.cluster), "sink.config.cluster")?;
        let key = cfg
            .key
            .as_deref()
            .map(|key| CompiledExpr::compile_with(key, budget))
            .transpose()
            .map_err(KafkaSinkBuildError::Key)?;
        let producer = producer_with(
            name,
            cluster,
            cfg.required_acks.unwrap_or(RequiredAcks::All),
            transactional_id,
        )?;
        Ok(KafkaSink {
            producer,
            topic: cfg.topic.clone(),
            key,
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            mode: cfg.mode.unwrap_or(ContentMode::Binary),
            policy,
            transactions: transactional_id.map(|_| Arc::new(OnceCell::new())),
        })
    }

    /// The transactional producer, with a transaction begun (its transactions initialised
    /// first if that has not happened yet); `None` when the producer is not transactional.
    pub async fn begin_transactions(&self) -> Option<Result<FutureProducer, KafkaError>> {
        let initialised = self.transactions.as_ref()?;
        let init = initialised
            .get_or_try_init(|| {
                let producer = self.producer.clone();
                blocking(move || producer.init_transactions(TRANSACTION_TIMEOUT))
            })
            .await;
        if let Err(e) = init {
            return Some(Err(e));
        }
        let producer = self.producer.clone();
        Some(blocking(move || producer.begin_transaction().map(|()| producer)).await)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The record key from `sink.config.key` over the event's scope: `None` when no key is
    /// configured or it evaluates to null; strings as UTF-8, other values as plain JSON.
    pub(crate) fn is_heavy(&self) -> bool {
        self.key.as_ref().is_some_and(CompiledExpr::is_heavy)
    }

    pub fn key(&self, scope: &Scope<'_>) -> Result<Option<Vec<u8>>, FlowError> {
        let Some(expr) = &self.key else {
            return Ok(None);
        };
        let value = scope.eval(expr).map_err(|e| FlowError::Transform {
            field: "sink.config.key".into(),
            message: e.to_string(),
        })?;
        key_bytes(value).map_err(|message| FlowError::Transform {
            field: "sink.config.key".into(),
            message,
        })
    }

    /// Produces `event` (with `key`) and waits for the broker's acknowledgement, retrying
    /// broker errors per the flow's policy.
    pub async fn deliver(
        &self,
        event: &Event,
        key: Option<Vec<u8>>,
        ctx: &DeliveryContext,
    ) -> Result<KafkaDelivery, KafkaDeliveryError> {
        let mut record =
            encode(event, self.mode, &self.headers, ctx).map_err(|message| KafkaDeliveryError {
                topic: self.topic.clone(),
                attempts: 0,
                message,
            })?;
        record.key = key;
        produce(&self.producer, &self.topic, &record, &self.policy).await
    }
}

/// How long one transaction call (init, offsets, commit, abort) may block.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a blocking librdkafka call off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Produces `record` to `topic`, retrying retriable broker errors per `policy`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    record: &KafkaRecord,
    policy: &RetryPolicy,
) -> Result<KafkaDelivery, KafkaDeliveryError> {
    let result = with_retries(policy, |n| async move {
        if n > 0 {
            tracing::debug!(topic, attempt = n + 1, "retrying Kafka produce");
        }
        let mut fr = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(record.value.as_slice())
            .headers(record.owned_headers());
        if let Some(k) = &record.key {
            fr = fr.key(k.as_slice());
        }
        match producer.send(fr, Timeout::After(MESSAGE_TIMEOUT)).await {
            Ok(d) => Attempt::Success(KafkaDelivery {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((e, _)) if permanent(&e) => Attempt::Permanent(e.to_string()),
            Err((e, _)) => Attempt::Retryable(e.to_string(), None),
        }
    })
    .await;
    result.map_err(|e| {
        let (attempts, message) = match e {
            RetryError::Permanent(m) => (1, m),
            RetryError::Exhausted { attempts, last } => (attempts, last),
        };
        KafkaDeliveryError {
            topic: topic.to_owned(),
            attempts,
            message,
        }
    })
}

/// Errors no retry can fix.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

fn key_bytes(value: Json) -> Result<Option<Vec<u8>>, String> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.into_bytes())),
        other => json::to_vec_plain(&other)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// The Kafka protocol binding of CloudEvents: headers and value of `event` (key left unset).
/// Static `headers` come first; `fiso-correlation-id` and `traceparent` are added.
pub fn encode(
    event: &Event,
    mode: ContentMode,
    headers: &[(String, String)],
    ctx: &DeliveryContext,
) -> Result<KafkaRecord, String> {
    let mut out: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let mut put = |name: &str, value: String| out.push((name.to_owned(), value.into_bytes()));
    if !ctx.correlation_id.is_empty() {
        put(CORRELATION_HEADER, ctx.correlation_id.clone());
    }
    if let Some(tp) = &ctx.traceparent {
        put("traceparent", tp.clone());
    }
    for (name, value) in &ctx.sink_headers {
        put(name, value.clone());
    }
    let value = match mode {
        ContentMode::Structured => {
            put("content-type", STRUCTURED_CONTENT_TYPE.to_owned());
            json::to_vec_plain(event).map_err(|e| e.to_string())?
        }
        ContentMode::Binary => {
            put("ce_specversion", event.specversion().to_string());
            put("ce_id", event.id().to_owned());
            put("ce_type", event.ty().to_owned());
            put("ce_source", event.source().to_string());
            if let Some(s) = event.subject() {
                put("ce_subject", s.to_owned());
            }
            if let Some(t) = event.time() {
                put(
                    "ce_time",
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                );
            }
            if let Some(s) = event.dataschema() {
                put("ce_dataschema", s.to_string());
            }
            for (name, value) in event.iter_extensions() {
                let v = match value {
                    ExtensionValue::String(s) => s.clone(),
                    ExtensionValue::Boolean(b) => b.to_string(),
                    ExtensionValue::Integer(i) => i.to_string(),
                };
                put(&format!("ce_{name}"), v);
            }
            put(
                "content-type",
                event
                    .datacontenttype()
                    .unwrap_or("application/json")
                    .to_owned(),
            );
            match event.data() {
                None => Vec::new(),
                Some(Data::Json(v)) => json::to_vec_plain(v).map_err(|e| e.to_string())?,
                Some(Data::String(s)) => s.clone().into_bytes(),
                Some(Data::Binary(b)) => b.clone(),
            }
        }
    };
    Ok(KafkaRecord {
        key: None,
        headers: out,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};
    use serde_json::json;

    fn event() -> Event {
        EventBuilderV10::new()
            .id("e-1")
            .ty("order.created")
            .source("/orders")
            .subject("o-1")
            .time("2026-11-26T16:00:00Z")
            .extension("traceparent", "00-abc-def-01")
            .extension("tenant", "acme")
            .data("application/json", json!({"total": 12.5, "n": 1}))
            .build()
            .unwrap()
    }

    fn ctx() -> DeliveryContext {
        DeliveryContext {
            correlation_id: "corr-1".into(),
            ..Default::default()
        }
    }

    fn text(r: &KafkaRecord, name: &str) -> Option<String> {
        r.header(name)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn binary_mode_puts_attributes_in_ce_headers_and_data_in_the_value() {
        let statics = vec![("x-team".to_owned(), "payments".to_owned())];
        let r = encode(&event(), ContentMode::Binary, &statics, &ctx()).unwrap();
        assert_eq!(text(&r, "x-team").as_deref(), Some("payments"));
        assert_eq!(text(&r, "ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(text(&r, "ce_id").as_deref(), Some("e-1"));
        assert_eq!(text(&r, "ce_type").as_deref(), Some("order.created"));
        assert_eq!(text(&r, "ce_source").as_deref(), Some("/orders"));
        assert_eq!(text(&r, "ce_subject").as_deref(), Some("o-1"));
        assert_eq!(text(&r, "ce_time").as_deref(), Some("2026-11-26T16:00:00Z"));
        assert_eq!(text(&r, "ce_tenant").as_deref(), Some("acme"));
        assert_eq!(text(&r, "ce_traceparent").as_deref(), Some("00-abc-def-01"));
        assert_eq!(
            text(&r, "content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(text(&r, CORRELATION_HEADER).as_deref(), Some("corr-1"));
        assert_eq!(r.value, br#"{"total":12.5,"n":1}"#);
        assert_eq!(r.key, None);
    }

    #[test]
    fn structured_mode_sends_the_whole_event_as_json() {
        let r = encode(&event(), ContentMode::Structured, &[], &ctx()).unwrap();
        assert_eq!(
            text(&r, "content-type").as_deref(),
            Some(STRUCTURED_CONTENT_TYPE)
        );
        assert!(r.header("ce_id").is_none());
        let v: Json = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(v["id"], "e-1");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["data"], json!({"total": 12.5, "n": 1}));
    }

    #[test]
    fn keys_are_text_or_plain_json_and_null_means_none() {
        assert_eq!(key_bytes(Json::Null).unwrap(), None);
        assert_eq!(key_bytes(json!("k-1")).unwrap(), Some(b"k-1".to_vec()));
        assert_eq!(key_bytes(json!(42)).unwrap(), Some(b"42".to_vec()));
    }
}
