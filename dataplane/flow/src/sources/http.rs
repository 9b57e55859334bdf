//! HTTP source: request-response ingestion. One handler serves every flow on a shared listen
//! address, routing by path through a table that reloads swap atomically.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fiso_config::common::ByteSize;
use fiso_config::flow::{HttpSourceConfig, DEFAULT_MAX_BODY_SIZE};
use fiso_runtime::server::{is_body_timeout, ServerTimeouts};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use smallvec::SmallVec;

use super::request::{correlation_id, text_headers, traceparent, tracestate};
use crate::event::header_binding::Binding;
use crate::event::message;
use crate::pipeline::delivery::{
    DeliveryContext, DeliveryError, DeliveryErrorKind, Outcome, Receipt, SinkResponse,
    CORRELATION_HEADER_NAME,
};
use crate::pipeline::Pipeline;
use crate::{EventDefaults, FlowError, InputEvent};

/// An HTTP source: a path on the server of its listen address.
#[derive(Debug, Clone)]
pub struct HttpSource {
    pub listen_addr: String,
    pub path: String,
    /// The server's connection deadlines (the flows on one address agree on them).
    pub timeouts: ServerTimeouts,
    /// Largest accepted body.
    pub max_body: usize,
}

impl HttpSource {
    pub fn new(cfg: &HttpSourceConfig) -> Self {
        HttpSource {
            listen_addr: cfg.listen_addr.clone(),
            path: cfg.path.clone(),
            timeouts: ServerTimeouts::from_config(
                cfg.read_header_timeout,
                cfg.idle_timeout,
                cfg.body_timeout,
            ),
            max_body: usize::try_from(ByteSize::bytes(
                cfg.max_body_size.unwrap_or(DEFAULT_MAX_BODY_SIZE),
            ))
            .unwrap_or(usize::MAX),
        }
    }
}

/// The flow a path leads to, and the largest body it accepts.
#[derive(Debug, Clone)]
pub struct Route {
    pub flow: Arc<Pipeline>,
    pub max_body: usize,
}

/// Path → flow, for one listen address. Replaced whole on every change.
pub type RouteTable = HashMap<String, Route>;
pub type Routes = Arc<ArcSwap<RouteTable>>;

/// What the request handler of one listen address needs.
pub struct SourceServer {
    pub routes: Routes,
    /// The process's multi-threaded runtime. Requests are served on the core that accepted
    /// them, each core on a runtime of its own; a heavy flow's event is handled here instead,
    /// where a long evaluation hands its worker's queue to another thread rather than holding
    /// up the other connections of its core.
    pub shared: tokio::runtime::Handle,
}

/// Answers one request to a shared HTTP source server.
pub async fn serve_request(server: &SourceServer, req: Request) -> Response {
    let correlation_id = correlation_id(req.headers());
    let flow = server.routes.load().get(req.uri().path()).cloned();
    let mut response = match flow {
        None => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("no flow listens on path {}", req.uri().path()),
            &correlation_id,
        ),
        Some(_) if req.method() != Method::POST => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                &format!("{} is not accepted; send events with POST", req.method()),
                &correlation_id,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        Some(route) if route.flow.is_heavy() => {
            let correlation = correlation_id.clone();
            let handled = server
                .shared
                .spawn(async move { ingest(route, req, &correlation).await });
            match handled.await {
                Ok(response) => response,
                // As if it had panicked here: the connection ends without an answer.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SHUTTING_DOWN",
                    "the process is stopping",
                    &correlation_id,
                ),
            }
        }
        Some(route) => ingest(route, req, &correlation_id).await,
    };
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER_NAME, v);
    }
    response
}

async fn ingest(route: Route, req: Request, correlation_id: &str) -> Response {
    let Route {
        flow,
        max_body: limit,
    } = route;
    let (parts, body) = req.into_parts();
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("the body exceeds the flow's maxBodySize of {limit} bytes"),
            correlation_id,
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(e) if is_body_timeout(&*e) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                &e.to_string(),
                correlation_id,
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BODY_READ_FAILED",
                &format!("reading the body failed: {e}"),
                correlation_id,
            )
        }
    };
    let ctx = DeliveryContext {
        correlation_id: correlation_id.to_owned(),
        traceparent: traceparent(&parts.headers),
        tracestate: tracestate(&parts.headers),
        body: bytes.clone(),
        origin: None,
        headers: if flow.has_interceptors() {
            text_headers(&parts.headers)
        } else {
            Vec::new()
        },
        sink_headers: Vec::new(),
    };
    let input = parse_input(&flow, &parts.headers, bytes);
    answer(flow.handle(input, &ctx).await, correlation_id)
}

/// The caller's answer: the sink's own answer when it gave one (its status, type and body),
/// 202 with where the event went, 4xx for what the caller sent, 502 / 503 / 504 when delivery
/// failed.
fn answer(outcome: Outcome, correlation_id: &str) -> Response {
    match outcome {
        Outcome::Delivered(Receipt::Response(resp))
        | Outcome::Failed(DeliveryError {
            kind: DeliveryErrorKind::Rejected,
            response: Some(resp),
            ..
        }) => relay(resp, correlation_id),
        Outcome::Delivered(Receipt::Published { topic, at }) => json_response(
            StatusCode::ACCEPTED,
            &json!({
                "status": "accepted",
                "topic": topic,
                "partition": at.partition,
                "offset": at.offset,
            }),
        ),
        Outcome::Delivered(Receipt::Started {
            workflow_id,
            run_id,
        }) => json_response(
            StatusCode::ACCEPTED,
            &json!({
                "status": "accepted",
                "workflowId": workflow_id,
                "runId": run_id,
            }),
        ),
        Outcome::DeadLettered { error, topic, at } => {
            let mut body = json!({
                "status": "dead_lettered",
                "message": "the sink did not accept the event; it was accepted into the dead-letter queue",
                "deadLetterTopic": topic,
                "partition": at.partition,
                "offset": at.offset,
                "error": {
                    "code": "SINK_DELIVERY_FAILED",
                    "message": error.to_string(),
                    "attempts": error.attempts(),
                    "correlationId": correlation_id,
                },
            });
            if let Some(s) = error.sink_status() {
                body["error"]["sinkStatus"] = json!(s.as_u16());
            }
            json_response(StatusCode::ACCEPTED, &body)
        }
        Outcome::Invalid(e) => {
            let status = match e {
                FlowError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
                // The interceptor failed, not the caller.
                FlowError::Interceptor(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, e.code(), &e.to_string(), correlation_id)
        }
        Outcome::Rejected {
            status,
            reason,
            module,
        } => {
            let mut body = error_body("INTERCEPTOR_REJECTED", &reason, correlation_id);
            body["error"]["module"] = json!(module);
            json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                &body,
            )
        }
        Outcome::Failed(e) => {
            let status = match e.kind {
                DeliveryErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                DeliveryErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                DeliveryErrorKind::Rejected | DeliveryErrorKind::Other => StatusCode::BAD_GATEWAY,
            };
            let mut body = error_body("SINK_DELIVERY_FAILED", &e.to_string(), correlation_id);
            body["error"]["attempts"] = json!(e.attempts());
            if let Some(s) = e.sink_status() {
                body["error"]["sinkStatus"] = json!(s.as_u16());
            }
            json_response(status, &body)
        }
    }
}

/// The sink's answer, passed on as it is; one cut at the sink's `maxResponseBodySize` is not
/// relayed (as Envoy does with a buffer limit): a cut answer would pass for complete.
fn relay(resp: SinkResponse, correlation_id: &str) -> Response {
    if resp.truncated {
        let mut body = error_body(
            "SINK_RESPONSE_TOO_LARGE",
            &format!(
                "the sink answered {} with a body larger than the sink's maxResponseBodySize of {} bytes",
                resp.status,
                resp.body.len()
            ),
            correlation_id,
        );
        body["error"]["sinkStatus"] = json!(resp.status.as_u16());
        return json_response(StatusCode::BAD_GATEWAY, &body);
    }
    let mut r = Response::new(Body::from(resp.body));
    *r.status_mut() = resp.status;
    if let Some(ct) = resp.content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

fn parse_input(flow: &Pipeline, headers: &HeaderMap, body: Bytes) -> Result<InputEvent, FlowError> {
    input_event(headers, body, flow.compiled().defaults().event())
}

/// Turns a request's headers and body into the flow's input event ([`message::read`]); what is
/// not valid is [`FlowError::InvalidInput`] (HTTP 400).
///
/// Public so the `http_body` fuzz target can reach it without a server or a flow instance.
pub fn input_event(
    headers: &HeaderMap,
    body: Bytes,
    defaults: EventDefaults<'_>,
) -> Result<InputEvent, FlowError> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            FlowError::invalid_input("the Content-Type header is not printable ASCII")
        })?),
    };
    // A request's headers are rarely more: no allocation per event.
    let headers: SmallVec<[(&str, &[u8]); 16]> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    message::read(Binding::Http, &headers, content_type, body, defaults)
}

fn error_body(code: &str, message: &str, correlation_id: &str) -> Value {
    json!({ "error": { "code": code, "message": message, "correlationId": correlation_id } })
}

fn error(status: StatusCode, code: &str, message: &str, correlation_id: &str) -> Response {
    json_response(status, &error_body(code, message, correlation_id))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Data;

    fn read(pairs: &[(&'static str, &str)], body: &'static [u8]) -> Result<InputEvent, FlowError> {
        let flow = crate::FlowDefaults::new("f");
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, HeaderValue::from_str(v).unwrap());
        }
        input_event(&headers, Bytes::from_static(body), flow.event())
    }

    const STRUCTURED: &[u8] =
        br#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":{"a":1}}"#;
    const BINARY: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "/b"),
        ("ce-type", "t"),
    ];

    #[test]
    fn the_content_type_decides_the_mode() {
        for ct in [
            "application/cloudevents+json",
            "Application/CloudEvents+JSON; charset=UTF-8",
        ] {
            assert_eq!(
                read(&[("content-type", ct)], STRUCTURED).unwrap().id(),
                "s-1",
                "{ct}"
            );
        }
        // A structured request that also carries `ce-*` headers is structured.
        let mut both = vec![("content-type", "application/cloudevents+json")];
        both.extend(BINARY);
        assert_eq!(read(&both, STRUCTURED).unwrap().id(), "s-1");
        // `ce-specversion` without a CloudEvents content type: binary mode.
        let mut binary = vec![("content-type", "application/json")];
        binary.extend(BINARY);
        let event = read(&binary, STRUCTURED).unwrap();
        assert_eq!(event.id(), "b-1");
        assert_eq!(
            event.data().and_then(|d| match d {
                Data::Json(j) => j.get("id").cloned(),
                _ => None,
            }),
            Some(json!("s-1"))
        );
        // A bare JSON object with `specversion` under a JSON content type, or none, is the
        // structured event it is...
        let hand_written = read(&[("content-type", "application/json")], STRUCTURED).unwrap();
        assert_eq!(hand_written.id(), "s-1");
        assert_eq!(read(&[], STRUCTURED).unwrap().id(), "s-1");
        // ...and under another content type a payload.
        let payload = read(&[("content-type", "text/plain")], STRUCTURED).unwrap();
        assert_ne!(payload.id(), "s-1");
    }

    #[test]
    fn unaccepted_modes_and_formats_are_invalid_input() {
        for (ct, words) in [
            ("application/cloudevents-batch+json", "batched mode"),
            ("application/cloudevents+avro", "not supported"),
        ] {
            let error = read(&[("content-type", ct)], b"[]").unwrap_err();
            assert_eq!(error.code(), "INPUT_INVALID");
            assert!(error.to_string().contains(words), "{error}");
        }
    }

    #[test]
    fn binary_mode_bodies_keep_their_bytes() {
        let mut headers = BINARY.to_vec();
        headers.push(("content-type", "application/octet-stream"));
        let event = read(&headers, b"\x00\xff").unwrap();
        assert_eq!(
            event.data(),
            Some(&Data::Bytes(Bytes::from_static(b"\x00\xff")))
        );
        // No body, no data.
        let event = read(&BINARY, b"").unwrap();
        assert_eq!(event.data(), None);
        assert_eq!(event.datacontenttype(), None);
    }

    fn sink_answer(status: StatusCode, truncated: bool) -> SinkResponse {
        SinkResponse {
            status,
            content_type: Some(HeaderValue::from_static("text/plain")),
            body: bytes::Bytes::from_static(b"from the sink"),
            truncated,
        }
    }

    async fn status_and_body(r: Response) -> (StatusCode, Value) {
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn failures_are_answered_by_their_kind() {
        for (kind, status) in [
            (DeliveryErrorKind::Timeout, StatusCode::GATEWAY_TIMEOUT),
            (
                DeliveryErrorKind::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (DeliveryErrorKind::Rejected, StatusCode::BAD_GATEWAY),
            (DeliveryErrorKind::Other, StatusCode::BAD_GATEWAY),
        ] {
            let failed = Outcome::Failed(DeliveryError::new(kind, 3, "it failed"));
            let (got, body) = status_and_body(answer(failed, "c-1")).await;
            assert_eq!(got, status, "{kind:?}");
            assert_eq!(body["error"]["code"], "SINK_DELIVERY_FAILED");
            assert_eq!(body["error"]["attempts"], 3);
            assert_eq!(body["error"]["message"], "it failed");
        }
    }

    #[tokio::test]
    async fn the_sinks_refusal_is_relayed_unless_cut() {
        let refused = DeliveryError::new(DeliveryErrorKind::Rejected, 1, "no")
            .with_response(sink_answer(StatusCode::CONFLICT, false));
        let r = answer(Outcome::Failed(refused), "c-1");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"from the sink");

        let cut = Outcome::Delivered(Receipt::Response(sink_answer(StatusCode::OK, true)));
        let (status, body) = status_and_body(answer(cut, "c-1")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["error"]["code"], "SINK_RESPONSE_TOO_LARGE");
        assert_eq!(body["error"]["sinkStatus"], 200);

        // A 503 after retries is not a refusal: the caller gets Fiso's answer with the status.
        let exhausted = DeliveryError::new(DeliveryErrorKind::Unavailable, 4, "503")
            .with_response(sink_answer(StatusCode::SERVICE_UNAVAILABLE, false));
        let (status, body) = status_and_body(answer(Outcome::Failed(exhausted), "c-1")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["sinkStatus"], 503);
    }
}
