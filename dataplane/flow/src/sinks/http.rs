//! HTTP sink: CloudEvents over HTTP (structured by default, binary on request), pooled
//! HTTP/1.1 + HTTP/2 connections with rustls, retries per the flow's policy.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use fiso_config::flow::{
    ContentMode, HttpSinkConfig, DEFAULT_MAX_RESPONSE_BODY_SIZE, DEFAULT_SINK_TIMEOUT,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};

use super::Sink;
use crate::cel::budget::Budget;
use crate::event::header_binding::{self, Binding};
use crate::event::json;
use crate::pipeline::delivery::{
    DeliveryContext, DeliveryError, DeliveryErrorKind, Receipt, SinkResponse, CORRELATION_HEADER,
    STRUCTURED_CONTENT_TYPE,
};
use crate::retry::{parse_retry_after, with_retries, Attempt, RetryError, RetryPolicy};
use crate::{CloudEvent, FlowError, InputEvent};

/// The last thing that went wrong when retries ran out.
#[derive(Debug, Clone)]
pub enum LastFailure {
    Response(SinkResponse),
    Timeout,
    Network(String),
}

impl std::fmt::Display for LastFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastFailure::Response(r) => write!(f, "sink answered {}", r.status),
            LastFailure::Timeout => f.write_str("sink timed out"),
            LastFailure::Network(e) => write!(f, "network error: {e}"),
        }
    }
}

/// Why one delivery failed, as the HTTP sink tells it.
#[derive(Debug, thiserror::Error)]
enum HttpDeliveryError {
    /// A 4xx other than 429: retrying cannot help.
    #[error("sink rejected the event with {} (not retried)", .0.status)]
    Rejected(SinkResponse),
    /// Retryable failures until the policy gave up.
    #[error("delivery failed after {attempts} attempt(s): {last}")]
    Exhausted { attempts: u32, last: LastFailure },
    /// The request could not even be built (bad header value in the event, ...).
    #[error("cannot build the sink request: {0}")]
    Request(String),
}

impl From<HttpDeliveryError> for DeliveryError {
    fn from(e: HttpDeliveryError) -> Self {
        let message = e.to_string();
        match e {
            HttpDeliveryError::Rejected(r) => {
                DeliveryError::new(DeliveryErrorKind::Rejected, 1, message).with_response(r)
            }
            HttpDeliveryError::Exhausted { attempts, last } => match last {
                LastFailure::Timeout => {
                    DeliveryError::new(DeliveryErrorKind::Timeout, attempts, message)
                }
                LastFailure::Response(r) => {
                    let kind = if r.status == StatusCode::SERVICE_UNAVAILABLE {
                        DeliveryErrorKind::Unavailable
                    } else {
                        DeliveryErrorKind::Other
                    };
                    DeliveryError::new(kind, attempts, message).with_response(r)
                }
                LastFailure::Network(_) => {
                    DeliveryError::new(DeliveryErrorKind::Other, attempts, message)
                }
            },
            HttpDeliveryError::Request(_) => {
                DeliveryError::new(DeliveryErrorKind::Other, 0, message)
            }
        }
    }
}

/// Errors building the sink from config.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkBuildError {
    #[error("sink.config.url: {0}")]
    Url(String),
    #[error("sink.config.method: `{0}` is not an HTTP method")]
    Method(String),
    #[error("sink.config.headers.{0}: invalid header")]
    Header(String),
    #[error("sink.config.caFile: {0}")]
    Ca(String),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// A configured HTTP sink; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    method: Method,
    headers: HeaderMap,
    mode: ContentMode,
    policy: RetryPolicy,
    max_response_body: usize,
}

impl HttpSink {
    pub fn new(cfg: &HttpSinkConfig, policy: RetryPolicy) -> Result<Self, HttpSinkBuildError> {
        let url =
            reqwest::Url::parse(&cfg.url).map_err(|e| HttpSinkBuildError::Url(e.to_string()))?;
        let method = Method::from_bytes(cfg.method.as_bytes())
            .map_err(|_| HttpSinkBuildError::Method(cfg.method.clone()))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| HttpSinkBuildError::Header(k.clone()))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| HttpSinkBuildError::Header(k.clone()))?;
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(cfg.timeout.unwrap_or(DEFAULT_SINK_TIMEOUT))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| HttpSinkBuildError::Ca(format!("{ca}: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| HttpSinkBuildError::Ca(format!("{ca}: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| HttpSinkBuildError::Client(e.to_string()))?;
        Ok(HttpSink {
            client,
            url,
            method,
            headers,
            mode: cfg.mode.unwrap_or(ContentMode::Structured),
            policy,
            max_response_body: usize::try_from(
                cfg.max_response_body_size
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BODY_SIZE)
                    .bytes(),
            )
            .unwrap_or(usize::MAX),
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Delivers `event`, retrying 5xx / 429 / network errors; other 4xx fail at once.
    async fn send(
        &self,
        event: &CloudEvent,
        ctx: &DeliveryContext,
    ) -> Result<SinkResponse, HttpDeliveryError> {
        let (headers, body) = self.encode(event, ctx)?;
        let result = with_retries(&self.policy, |n| {
            let request = self
                .client
                .request(self.method.clone(), self.url.clone())
                .headers(headers.clone())
                .body(body.clone());
            async move {
                if n > 0 {
                    tracing::debug!(url = %self.url, attempt = n + 1, "retrying sink delivery");
                }
                match request.send().await {
                    Ok(mut resp) => {
                        let status = resp.status();
                        let retry_after = resp
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, SystemTime::now()));
                        let content_type = resp.headers().get(CONTENT_TYPE).cloned();
                        let (body, truncated) =
                            read_capped(&mut resp, self.max_response_body).await;
                        if truncated {
                            tracing::warn!(url = %self.url, %status, limit = self.max_response_body, "the sink's answer exceeds maxResponseBodySize; the rest is not read");
                        }
                        let response = SinkResponse {
                            status,
                            content_type,
                            body,
                            truncated,
                        };
                        if status.is_success() {
                            Attempt::Success(response)
                        } else if retryable(status) {
                            Attempt::Retryable(LastFailure::Response(response), retry_after)
                        } else {
                            Attempt::Permanent(LastFailure::Response(response))
                        }
                    }
                    Err(e) if e.is_timeout() => Attempt::Retryable(LastFailure::Timeout, None),
                    Err(e) => Attempt::Retryable(LastFailure::Network(error_chain(&e)), None),
                }
            }
        })
        .await;
        match result {
            Ok(r) => Ok(r),
            Err(RetryError::Permanent(LastFailure::Response(r))) => {
                Err(HttpDeliveryError::Rejected(r))
            }
            Err(RetryError::Permanent(last)) => {
                Err(HttpDeliveryError::Exhausted { attempts: 1, last })
            }
            Err(RetryError::Exhausted { attempts, last }) => {
                Err(HttpDeliveryError::Exhausted { attempts, last })
            }
        }
    }

    fn encode(
        &self,
        event: &CloudEvent,
        ctx: &DeliveryContext,
    ) -> Result<(HeaderMap, Bytes), HttpDeliveryError> {
        let mut headers = self.headers.clone();
        let bad =
            |what: &str| HttpDeliveryError::Request(format!("{what} is not a valid header value"));
        headers.insert(
            HeaderName::from_static(CORRELATION_HEADER),
            HeaderValue::from_str(&ctx.correlation_id).map_err(|_| bad("correlation id"))?,
        );
        if let Some(tp) = &ctx.traceparent {
            headers.insert(
                HeaderName::from_static("traceparent"),
                HeaderValue::from_str(tp).map_err(|_| bad("traceparent"))?,
            );
        }
        for (name, value) in &ctx.sink_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(&format!("interceptor header name {name:?}")))?;
            headers.insert(
                name,
                HeaderValue::from_str(value).map_err(|_| bad("an interceptor header"))?,
            );
        }
        match self.mode {
            ContentMode::Structured => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
                );
                let body = json::to_vec_plain(event)
                    .map_err(|e| HttpDeliveryError::Request(e.to_string()))?;
                Ok((headers, Bytes::from(body)))
            }
            ContentMode::Binary => {
                for (name, value) in Binding::Http.write(event) {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(&name))?;
                    // Percent-encoding leaves printable ASCII only: always a valid value.
                    let value = HeaderValue::from_str(&value).map_err(|_| bad(name.as_str()))?;
                    headers.insert(name, value);
                }
                if let Some(ct) = header_binding::content_type(event) {
                    headers.insert(
                        CONTENT_TYPE,
                        HeaderValue::from_str(ct).map_err(|_| bad("datacontenttype"))?,
                    );
                }
                let body = match event.data() {
                    None => Bytes::new(),
                    Some(data) => data
                        .to_body()
                        .map_err(|e| HttpDeliveryError::Request(e.to_string()))?,
                };
                Ok((headers, body))
            }
        }
    }
}

impl Sink for HttpSink {
    type Prepared = ();

    fn prepare(&self, _input: &InputEvent, _budget: Budget) -> Result<(), FlowError> {
        Ok(())
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        (): (),
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        Ok(Receipt::Response(self.send(event, ctx).await?))
    }
}

/// The answer's body up to `cap` bytes, and whether there was more. The rest is never read, so
/// an endless or huge answer costs at most `cap` bytes of memory; dropping the response closes
/// its connection instead of returning it to the pool. A body that fails midway keeps what
/// arrived (it only serves as the caller's answer or the dead letter's `fiso-response-body`).
async fn read_capped(resp: &mut reqwest::Response, cap: usize) -> (Bytes, bool) {
    let mut body = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return (body.freeze(), true);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body.freeze(), false),
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "reading the sink's answer failed");
                return (body.freeze(), false);
            }
        }
    }
}

/// 5xx and 429 are worth retrying; other statuses are final.
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: StatusCode) -> SinkResponse {
        SinkResponse {
            status,
            content_type: None,
            body: Bytes::from_static(b"answer"),
            truncated: false,
        }
    }

    #[test]
    fn failures_are_classified_for_the_sources() {
        let cases = [
            (
                HttpDeliveryError::Rejected(answer(StatusCode::BAD_REQUEST)),
                DeliveryErrorKind::Rejected,
                1,
                Some(StatusCode::BAD_REQUEST),
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 4,
                    last: LastFailure::Timeout,
                },
                DeliveryErrorKind::Timeout,
                4,
                None,
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 4,
                    last: LastFailure::Response(answer(StatusCode::SERVICE_UNAVAILABLE)),
                },
                DeliveryErrorKind::Unavailable,
                4,
                Some(StatusCode::SERVICE_UNAVAILABLE),
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 4,
                    last: LastFailure::Response(answer(StatusCode::TOO_MANY_REQUESTS)),
                },
                DeliveryErrorKind::Other,
                4,
                Some(StatusCode::TOO_MANY_REQUESTS),
            ),
            (
                HttpDeliveryError::Exhausted {
                    attempts: 2,
                    last: LastFailure::Network("connection refused".into()),
                },
                DeliveryErrorKind::Other,
                2,
                None,
            ),
            (
                HttpDeliveryError::Request("bad header".into()),
                DeliveryErrorKind::Other,
                0,
                None,
            ),
        ];
        for (error, kind, attempts, status) in cases {
            let text = error.to_string();
            let e = DeliveryError::from(error);
            assert_eq!(
                (e.kind, e.attempts(), e.sink_status()),
                (kind, attempts, status)
            );
            assert_eq!(e.to_string(), text, "the sink's own words");
        }
    }
}
