//! Kafka targets: `POST /link/{target}` publishes the request body to the target's topic and
//! answers `{"status":"published","topic","partition","offset"}` once the broker acknowledged it
//! (`requiredAcks`: `1` by default, `all` for an idempotent producer).
//!
//! Key strategies: `uuid` (a new UUID per record), `header` (the value of request header
//! `field`), `payload` (the JSON body's `field`, dotted for nested objects), `static` (`value`),
//! `random` (random bytes as hex per record), none (null key). Request headers become record
//! headers, except connection-level ones and credentials (`authorization`, `cookie`); the
//! target's static headers win over request headers of the same name.

use std::sync::Arc;
use std::time::Duration;

use fiso_config::flow::RequiredAcks;
use fiso_config::kafka::KafkaCluster;
use fiso_config::link::{KafkaTargetConfig, KeyStrategy, KeyType};
use fiso_runtime::kafka::Producer;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::client_fault::ClientFault;
use crate::response::{
    error, json as json_response, strip_hop_by_hop, ErrorCode, Request, Response,
};

/// Largest body published as one record (Kafka's own default `message.max.bytes` is ~1 MB).
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KafkaTargetError {
    #[error("kafka cluster `{0}` is not defined under `kafka.clusters` (and the target has no clusterConfig)")]
    UnknownCluster(String),
    #[error("kafka cluster `{cluster}`: {message}")]
    Client { cluster: String, message: String },
}

#[derive(Clone)]
pub struct KafkaPublisher {
    producer: Producer,
    topic: Arc<str>,
    key: Option<KeyStrategy>,
    headers: Arc<Vec<(String, String)>>,
    timeout: Duration,
}

impl KafkaPublisher {
    /// A publisher for `cfg` on `cluster` (the link config's `kafka.clusters` entry, or the
    /// target's inline `clusterConfig`), with attempts bounded by `timeout`.
    pub fn new(
        cfg: &KafkaTargetConfig,
        cluster: Option<&KafkaCluster>,
        timeout: Duration,
    ) -> Result<Self, KafkaTargetError> {
        let cluster = cfg
            .cluster_config
            .as_ref()
            .or(cluster)
            .ok_or_else(|| KafkaTargetError::UnknownCluster(cfg.cluster.clone()))?;
        let client = |message: String| KafkaTargetError::Client {
            cluster: cfg.cluster.clone(),
            message,
        };
        let acks = cfg.required_acks.unwrap_or(RequiredAcks::Leader);
        let config = fiso_runtime::kafka::producer_config(cluster, acks, timeout)
            .map_err(|e| client(e.to_string()))?;
        let producer = Producer::new(config.create().map_err(|e| client(e.to_string()))?);
        Ok(KafkaPublisher {
            producer,
            topic: cfg.topic.as_str().into(),
            key: cfg.key.clone(),
            headers: Arc::new(
                cfg.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            timeout,
        })
    }

    /// Publishes the body of `req`; the answer says where the record landed.
    pub async fn publish(self, req: Request) -> Response {
        if req.method() != Method::POST {
            let mut r = error(
                ErrorCode::MethodNotAllowed,
                format!("Kafka targets accept POST only, not {}", req.method()),
            );
            r.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            return r;
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(
                    ErrorCode::PayloadTooLarge,
                    format!("the body exceeds {MAX_BODY} bytes"),
                )
            }
            Err(e) => return ClientFault::of(&*e).response(),
        };
        let key = match record_key(self.key.as_ref(), &parts.headers, &body) {
            Ok(k) => k,
            Err(message) => return error(ErrorCode::InvalidRequest, message),
        };
        let mut headers = record_headers(parts.headers, &self.headers);
        let span = fiso_runtime::otel::kafka_send_span(&self.topic);
        // The consumer of the record continues the trace from this span; with traces off the
        // caller's `traceparent` / `tracestate` travel on as request headers.
        if let Some(trace) = fiso_runtime::otel::headers_of(&span) {
            set_trace_headers(&mut headers, &trace);
        }
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in &headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&body[..])
            .headers(owned);
        if let Some(k) = &key {
            record = record.key(k.as_slice());
        }
        let sent = self
            .producer
            .send(record, Timeout::After(self.timeout))
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            match &sent {
                Ok(d) => {
                    span.record("messaging.destination.partition.id", d.partition);
                    span.record("messaging.kafka.offset", d.offset);
                }
                Err(_) => fiso_runtime::otel::failed(&span, ErrorCode::KafkaPublishFailed.as_str()),
            }
        }
        match sent {
            Ok(d) => json_response(
                StatusCode::OK,
                &json!({"status": "published", "topic": &*self.topic, "partition": d.partition, "offset": d.offset}),
            ),
            Err((e, _)) => error(
                ErrorCode::KafkaPublishFailed,
                format!(
                    "publishing to topic `{}` failed: {}",
                    self.topic,
                    fiso_runtime::kafka::error_text::describe(&e)
                ),
            ),
        }
    }
}

/// `traceparent` / `tracestate` of the record, replacing the caller's (and a static header of
/// the same name): the record continues the trace from its `send` span.
fn set_trace_headers(
    headers: &mut Vec<(String, Vec<u8>)>,
    trace: &fiso_runtime::otel::TraceHeaders,
) {
    headers.retain(|(name, _)| {
        !name.eq_ignore_ascii_case("traceparent") && !name.eq_ignore_ascii_case("tracestate")
    });
    for (name, value) in [
        ("traceparent", &trace.traceparent),
        ("tracestate", &trace.tracestate),
    ] {
        if let Some(v) = value {
            headers.push((name.to_owned(), v.clone().into_bytes()));
        }
    }
}

/// The record key per `strategy`; `Err` is a message for a 400.
pub fn record_key(
    strategy: Option<&KeyStrategy>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let Some(s) = strategy else {
        return Ok(None);
    };
    let field = || s.field.as_deref().unwrap_or_default();
    match s.type_ {
        KeyType::Uuid => Ok(Some(uuid::Uuid::new_v4().to_string().into_bytes())),
        KeyType::Random => {
            let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
            Ok(Some(
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes(),
            ))
        }
        KeyType::Static => Ok(Some(s.value.clone().unwrap_or_default().into_bytes())),
        KeyType::Header => headers
            .get(field())
            .map(|v| Some(v.as_bytes().to_vec()))
            .ok_or_else(|| format!("the key header `{}` is missing", field())),
        KeyType::Payload => {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                format!(
                    "the body is not JSON, so the key field `{}` cannot be read: {e}",
                    field()
                )
            })?;
            let mut at = &value;
            for part in field().split('.') {
                at = at
                    .get(part)
                    .ok_or_else(|| format!("the body has no key field `{}`", field()))?;
            }
            match at {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone().into_bytes())),
                other => Ok(Some(other.to_string().into_bytes())),
            }
        }
    }
}

/// Request headers as record headers (static ones win), minus connection-level headers and
/// the app's credentials.
fn record_headers(
    mut headers: http::HeaderMap,
    fixed: &[(String, String)],
) -> Vec<(String, Vec<u8>)> {
    strip_hop_by_hop(&mut headers);
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::AUTHORIZATION,
        header::COOKIE,
    ] {
        headers.remove(name);
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in &headers {
        if fixed
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name.as_str()))
        {
            continue;
        }
        out.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    out.extend(
        fixed
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(type_: KeyType, field: Option<&str>, value: Option<&str>) -> KeyStrategy {
        KeyStrategy {
            type_,
            field: field.map(Into::into),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn key_strategies() {
        let mut h = http::HeaderMap::new();
        h.insert("x-order", http::HeaderValue::from_static("o-1"));
        let body = br#"{"customer":{"id":"c-9"},"n":7}"#;
        let key = |s: KeyStrategy| record_key(Some(&s), &h, body);
        assert_eq!(
            key(strategy(KeyType::Header, Some("x-order"), None)),
            Ok(Some(b"o-1".to_vec()))
        );
        assert_eq!(
            key(strategy(KeyType::Payload, Some("customer.id"), None)),
            Ok(Some(b"c-9".to_vec()))
        );
        assert_eq!(
            key(strategy(KeyType::Payload, Some("n"), None)),
            Ok(Some(b"7".to_vec()))
        );
        assert_eq!(
            key(strategy(KeyType::Static, None, Some("k"))),
            Ok(Some(b"k".to_vec()))
        );
        let uuid = key(strategy(KeyType::Uuid, None, None)).unwrap().unwrap();
        assert!(uuid::Uuid::parse_str(std::str::from_utf8(&uuid).unwrap()).is_ok());
        let r1 = key(strategy(KeyType::Random, None, None)).unwrap();
        let r2 = key(strategy(KeyType::Random, None, None)).unwrap();
        assert_ne!(r1, r2);
        assert_eq!(record_key(None, &h, body), Ok(None));
        assert!(key(strategy(KeyType::Header, Some("x-missing"), None))
            .unwrap_err()
            .contains("x-missing"));
        assert!(key(strategy(KeyType::Payload, Some("customer.name"), None))
            .unwrap_err()
            .contains("customer.name"));
        assert!(record_key(
            Some(&strategy(KeyType::Payload, Some("a"), None)),
            &h,
            b"not json"
        )
        .is_err());
    }

    #[test]
    fn the_send_span_context_replaces_the_callers() {
        let mut headers = vec![
            ("TraceParent".to_owned(), b"00-caller-01".to_vec()),
            ("tracestate".to_owned(), b"caller=1".to_vec()),
            ("x-request-id".to_owned(), b"r1".to_vec()),
        ];
        let trace = fiso_runtime::otel::TraceHeaders {
            traceparent: Some("00-span-01".into()),
            tracestate: None,
        };
        set_trace_headers(&mut headers, &trace);
        assert_eq!(
            headers,
            [
                ("x-request-id".to_owned(), b"r1".to_vec()),
                ("traceparent".to_owned(), b"00-span-01".to_vec()),
            ]
        );
    }

    #[test]
    fn static_headers_win_and_credentials_stay_behind() {
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", http::HeaderValue::from_static("r1"));
        h.insert("environment", http::HeaderValue::from_static("dev"));
        // With traces off, the caller's context travels on as it came.
        h.insert("traceparent", http::HeaderValue::from_static("00-t-s-01"));
        h.insert(
            header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer app"),
        );
        h.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        let out = record_headers(h, &[("environment".into(), "production".into())]);
        assert_eq!(
            out,
            [
                ("x-request-id".to_owned(), b"r1".to_vec()),
                ("traceparent".to_owned(), b"00-t-s-01".to_vec()),
                ("environment".to_owned(), b"production".to_vec())
            ]
        );
    }
}
