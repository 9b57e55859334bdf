//! Kafka sink: CloudEvents over Kafka (the Kafka protocol binding, written here on rdkafka 0.39:
//! binary mode with `ce_*` headers by default, structured mode on request), an idempotent
//! producer with `acks=all` by default, delivery confirmed before `deliver` returns, broker
//! errors retried per the flow's [`RetryPolicy`].

use std::sync::Arc;
use tracing::Instrument;

use fiso_config::flow::{ContentMode, KafkaSinkConfig, RequiredAcks};
use fiso_config::kafka::KafkaConfig;
use serde_json::Value as Json;

use super::Sink;
use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::event::header_binding::{self, Binding};
use crate::event::{json, json_format};
use crate::kafka::client::{
    find_cluster, produce, producer, KafkaBuildError, KafkaDelivery, KafkaDeliveryError,
    KafkaRecord, Producer,
};
use crate::kafka::txn::TransactionalProducer;
use crate::pipeline::delivery::{
    DeliveryContext, DeliveryError, DeliveryErrorKind, Receipt, CORRELATION_HEADER,
    STRUCTURED_CONTENT_TYPE,
};
use crate::retry::RetryPolicy;
use crate::{CloudEvent, FlowError, InputEvent, Scope};

/// Errors building a Kafka sink from config.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkBuildError {
    #[error(transparent)]
    Client(#[from] KafkaBuildError),
    #[error("sink.config.key: {0}")]
    Key(String),
}

impl From<KafkaDeliveryError> for DeliveryError {
    fn from(e: KafkaDeliveryError) -> Self {
        DeliveryError::new(DeliveryErrorKind::Other, e.attempts, e.to_string())
    }
}

/// A configured Kafka sink; cheap to clone (the producer is shared).
#[derive(Clone)]
pub struct KafkaSink {
    producer: Producer,
    topic: String,
    key: Option<CompiledExpr>,
    headers: Vec<(String, String)>,
    mode: ContentMode,
    policy: RetryPolicy,
    /// The producer's transactions, when the flow commits with `kafka_transaction`.
    transactions: Option<Arc<TransactionalProducer>>,
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
    /// and records may only be produced inside a transaction (see [`Self::transactions`]).
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
        let producer = producer(
            name,
            cluster,
            cfg.required_acks.unwrap_or(RequiredAcks::All),
            transactional_id,
        )?;
        Ok(KafkaSink {
            producer: producer.clone(),
            topic: cfg.topic.clone(),
            key,
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            mode: cfg.mode.unwrap_or(ContentMode::Binary),
            policy,
            transactions: transactional_id
                .map(|_| Arc::new(TransactionalProducer::new(producer.clone()))),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The record key from `sink.config.key` over the event's scope: `None` when no key is
    /// configured or it evaluates to null; strings as UTF-8, other values as plain JSON.
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
    pub async fn send(
        &self,
        event: &CloudEvent,
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

impl Sink for KafkaSink {
    /// The record key.
    type Prepared = Option<Vec<u8>>;

    fn is_heavy(&self) -> bool {
        self.key.as_ref().is_some_and(CompiledExpr::is_heavy)
    }

    fn prepare(&self, input: &InputEvent, budget: Budget) -> Result<Self::Prepared, FlowError> {
        if self.key.is_none() {
            return Ok(None);
        }
        self.key(&Scope::with_budget(input, budget))
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        key: Option<Vec<u8>>,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let span = fiso_runtime::otel::kafka_send_span(&self.topic);
        let at = match fiso_runtime::otel::headers_of(&span) {
            // The consumer of the record continues the trace from this span.
            Some(trace) => {
                let ctx = DeliveryContext {
                    traceparent: trace.traceparent,
                    tracestate: trace.tracestate,
                    ..ctx.clone()
                };
                let sent = self.send(event, key, &ctx).instrument(span.clone()).await;
                match &sent {
                    Ok(at) => {
                        span.record("messaging.destination.partition.id", at.partition);
                        span.record("messaging.kafka.offset", at.offset);
                    }
                    Err(_) => {
                        span.record("error.type", "SINK_DELIVERY_FAILED");
                        span.record("otel.status_code", "ERROR");
                    }
                }
                sent?
            }
            None => self.send(event, key, ctx).await?,
        };
        Ok(Receipt::Published {
            topic: self.topic.clone(),
            at,
        })
    }

    fn transactions(&self) -> Option<&Arc<TransactionalProducer>> {
        self.transactions.as_ref()
    }
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
    event: &CloudEvent,
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
        if let Some(ts) = &ctx.tracestate {
            put("tracestate", ts.clone());
        }
    }
    for (name, value) in &ctx.sink_headers {
        put(name, value.clone());
    }
    let value = match mode {
        ContentMode::Structured => {
            put("content-type", STRUCTURED_CONTENT_TYPE.to_owned());
            Some(json_format::to_vec(event).map_err(|e| e.to_string())?)
        }
        ContentMode::Binary => {
            for (name, value) in Binding::Kafka.write(event) {
                put(&name, value);
            }
            if let Some(ct) = header_binding::content_type(event) {
                put("content-type", ct.to_owned());
            }
            // kafka-protocol-binding §3.2.2: no data is no value.
            match event.data() {
                None => None,
                Some(data) => Some(data.to_body().map_err(|e| e.to_string())?.to_vec()),
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
    use crate::event::json_format;
    use serde_json::json;

    fn event() -> CloudEvent {
        json_format::from_json(json!({
            "specversion": "1.0", "id": "e-1", "type": "order.created", "source": "/orders",
            "subject": "o-1", "time": "2026-11-26T16:00:00Z", "traceparent": "00-abc-def-01",
            "tenant": "acme", "datacontenttype": "application/json",
            "data": {"total": 12.5, "n": 1}
        }))
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
        assert_eq!(r.value.as_deref(), Some(&br#"{"total":12.5,"n":1}"#[..]));
        assert_eq!(r.key, None);
    }

    #[test]
    fn a_binary_mode_event_without_data_has_no_value() {
        let mut event = event();
        event.set_data(None);
        event.set_datacontenttype(None);
        let r = encode(&event, ContentMode::Binary, &[], &ctx()).unwrap();
        assert_eq!(r.value, None, "kafka-protocol-binding §3.2.2");
        assert_eq!(r.header("content-type"), None);
        let r = encode(&event, ContentMode::Structured, &[], &ctx()).unwrap();
        assert!(r.value.is_some(), "structured mode is never a tombstone");
    }

    #[test]
    fn structured_mode_sends_the_whole_event_as_json() {
        let r = encode(&event(), ContentMode::Structured, &[], &ctx()).unwrap();
        assert_eq!(
            text(&r, "content-type").as_deref(),
            Some(STRUCTURED_CONTENT_TYPE)
        );
        assert!(r.header("ce_id").is_none());
        let v: Json = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
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
