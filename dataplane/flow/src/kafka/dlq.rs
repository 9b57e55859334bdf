//! Dead-letter queue: where an event goes when its sink would not take it. The record keeps the
//! original key and value and says why in `fiso-*` headers.

use chrono::{DateTime, SecondsFormat, Utc};
use fiso_config::flow::{FlowConfig, RequiredAcks};

use super::client::{
    find_cluster, produce, producer, KafkaBuildError, KafkaDelivery, KafkaDeliveryError,
    KafkaRecord, Producer,
};
use crate::retry::RetryPolicy;

/// `fiso-response-body` carries at most this many bytes of the sink's answer.
pub const MAX_RESPONSE_BODY: usize = 1024;

/// Why and where an event failed: everything the DLQ headers say.
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// The source record's key and value (for an HTTP source: no key, the request body).
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Source coordinates, when the source is Kafka.
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    /// Stable code: `TRANSFORM_FAILED`, `SINK_DELIVERY_FAILED`, ...
    pub error_code: String,
    pub error_message: String,
    /// Attempts actually made.
    pub retry_count: u32,
    pub failed_at: DateTime<Utc>,
    pub flow_name: String,
    pub correlation_id: String,
    /// The HTTP sink's last status and body, when it answered.
    pub http_status: Option<u16>,
    pub response_body: Option<Vec<u8>>,
}

impl DeadLetter {
    /// The DLQ record: original key and value, `fiso-*` headers.
    pub fn record(&self) -> KafkaRecord {
        let mut h: Vec<(String, Vec<u8>)> = Vec::with_capacity(12);
        let mut put = |k: &str, v: Vec<u8>| h.push((k.to_owned(), v));
        if let Some(t) = &self.original_topic {
            put("fiso-original-topic", t.clone().into_bytes());
        }
        put("fiso-error-code", self.error_code.clone().into_bytes());
        put(
            "fiso-error-message",
            self.error_message.clone().into_bytes(),
        );
        put(
            "fiso-retry-count",
            self.retry_count.to_string().into_bytes(),
        );
        put(
            "fiso-failed-at",
            self.failed_at
                .to_rfc3339_opts(SecondsFormat::Millis, true)
                .into_bytes(),
        );
        put("fiso-flow-name", self.flow_name.clone().into_bytes());
        put(
            "fiso-correlation-id",
            self.correlation_id.clone().into_bytes(),
        );
        if let Some(p) = self.original_partition {
            put("fiso-original-partition", p.to_string().into_bytes());
        }
        if let Some(o) = self.original_offset {
            put("fiso-original-offset", o.to_string().into_bytes());
        }
        if let Some(s) = self.http_status {
            put("fiso-http-status", s.to_string().into_bytes());
        }
        if let Some(b) = &self.response_body {
            put(
                "fiso-response-body",
                truncate(b, MAX_RESPONSE_BODY).to_vec(),
            );
        }
        KafkaRecord {
            key: self.key.clone(),
            headers: h,
            value: Some(self.value.clone()),
        }
    }
}

/// At most `max` bytes, cut on a UTF-8 character boundary when the bytes are text.
fn truncate(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    let mut end = max;
    if std::str::from_utf8(b).is_ok() {
        while end > 0 && (b[end] & 0b1100_0000) == 0b1000_0000 {
            end -= 1;
        }
    }
    &b[..end]
}

/// The DLQ topic of a flow: `errorHandling.deadLetterTopic` or `fiso-dlq-<flow>`.
pub fn topic_for(config: &FlowConfig, flow: &str) -> String {
    config
        .error_handling
        .as_ref()
        .and_then(|e| e.dead_letter_topic.clone())
        .unwrap_or_else(|| format!("fiso-dlq-{flow}"))
}

/// Produces dead letters to one topic with an idempotent producer.
#[derive(Clone)]
pub struct DlqWriter {
    producer: Producer,
    topic: String,
    policy: RetryPolicy,
}

impl std::fmt::Debug for DlqWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqWriter")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DlqWriter {
    /// The writer of a flow whose `errorHandling.deadLetterTopic` is set (`None` otherwise),
    /// on `errorHandling.deadLetterCluster` or the only cluster defined.
    pub fn for_http_source(
        config: &FlowConfig,
        flow: &str,
    ) -> Result<Option<DlqWriter>, KafkaBuildError> {
        let Some(eh) = &config.error_handling else {
            return Ok(None);
        };
        if eh.dead_letter_topic.is_none() {
            return Ok(None);
        }
        let (name, cluster) = find_cluster(
            config.kafka.as_ref(),
            eh.dead_letter_cluster.as_deref(),
            "errorHandling.deadLetterCluster",
        )?;
        Ok(Some(DlqWriter {
            producer: producer(name, cluster, RequiredAcks::All, None)?,
            topic: topic_for(config, flow),
            policy: RetryPolicy::from_config(Some(eh)),
        }))
    }

    /// The writer of a flow with a Kafka source: `deadLetterTopic` or `fiso-dlq-<flow>`, on
    /// `deadLetterCluster` or the source's cluster.
    pub fn for_kafka_source(
        config: &FlowConfig,
        flow: &str,
        source_cluster: &str,
    ) -> Result<DlqWriter, KafkaBuildError> {
        let eh = config.error_handling.as_ref();
        let wanted = eh
            .and_then(|e| e.dead_letter_cluster.as_deref())
            .unwrap_or(source_cluster);
        let (name, cluster) = find_cluster(
            config.kafka.as_ref(),
            Some(wanted),
            "errorHandling.deadLetterCluster",
        )?;
        Ok(DlqWriter {
            producer: producer(name, cluster, RequiredAcks::All, None)?,
            topic: topic_for(config, flow),
            policy: RetryPolicy::from_config(eh),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub async fn write(&self, letter: &DeadLetter) -> Result<KafkaDelivery, KafkaDeliveryError> {
        produce(&self.producer, &self.topic, &letter.record(), &self.policy).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &KafkaRecord, name: &str) -> Option<String> {
        r.header(name)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn headers_carry_the_failure_and_the_original_record() {
        let letter = DeadLetter {
            key: Some(b"k".to_vec()),
            value: b"{\"a\":1}".to_vec(),
            original_topic: Some("orders".into()),
            original_partition: Some(2),
            original_offset: Some(41),
            error_code: "SINK_DELIVERY_FAILED".into(),
            error_message: "sink answered 503".into(),
            retry_count: 4,
            failed_at: "2026-11-26T16:00:00.123Z".parse().unwrap(),
            flow_name: "orders".into(),
            correlation_id: "c-1".into(),
            http_status: Some(503),
            response_body: Some(vec![b'x'; 5000]),
        };
        let r = letter.record();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(text(&r, "fiso-original-topic").as_deref(), Some("orders"));
        assert_eq!(
            text(&r, "fiso-error-code").as_deref(),
            Some("SINK_DELIVERY_FAILED")
        );
        assert_eq!(
            text(&r, "fiso-error-message").as_deref(),
            Some("sink answered 503")
        );
        assert_eq!(text(&r, "fiso-retry-count").as_deref(), Some("4"));
        assert_eq!(
            text(&r, "fiso-failed-at").as_deref(),
            Some("2026-11-26T16:00:00.123Z")
        );
        assert_eq!(text(&r, "fiso-flow-name").as_deref(), Some("orders"));
        assert_eq!(text(&r, "fiso-correlation-id").as_deref(), Some("c-1"));
        assert_eq!(text(&r, "fiso-original-partition").as_deref(), Some("2"));
        assert_eq!(text(&r, "fiso-original-offset").as_deref(), Some("41"));
        assert_eq!(text(&r, "fiso-http-status").as_deref(), Some("503"));
        assert_eq!(
            r.header("fiso-response-body").unwrap().len(),
            MAX_RESPONSE_BODY
        );
    }

    #[test]
    fn absent_facts_are_absent_headers() {
        let r = DeadLetter {
            error_code: "SINK_DELIVERY_FAILED".into(),
            retry_count: 1,
            ..Default::default()
        }
        .record();
        for h in [
            "fiso-original-topic",
            "fiso-original-partition",
            "fiso-original-offset",
            "fiso-http-status",
            "fiso-response-body",
        ] {
            assert!(r.header(h).is_none(), "{h}");
        }
        assert_eq!(text(&r, "fiso-retry-count").as_deref(), Some("1"));
        assert_eq!(r.key, None);
    }

    #[test]
    fn truncation_keeps_utf8_whole_and_short_bodies_intact() {
        assert_eq!(truncate(b"short", 1024), b"short");
        let s = "é".repeat(600); // 1200 bytes, 2 per char
        let t = truncate(s.as_bytes(), 1023);
        assert_eq!(t.len(), 1022);
        assert!(std::str::from_utf8(t).is_ok());
        let bin = vec![0x80u8; 2000];
        assert_eq!(truncate(&bin, 1024).len(), 1024);
    }
}
