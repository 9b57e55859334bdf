//! The spans of one event, named and attributed per OpenTelemetry's semantic conventions for
//! messaging and HTTP: `flow <name>` (kind consumer for Kafka, server for HTTP and gRPC,
//! continuing the caller's W3C context), and under it `transform`, `interceptor <module>`, one
//! span per delivery attempt (built by the sink) and `dlq write`.
//!
//! Every constructor returns [`Span::none`] unless traces are exported
//! ([`fiso_runtime::otel::enabled`]), so the event path pays nothing for them when off. Record
//! keys, payloads and header values never become attributes: keys may be sensitive and are
//! unbounded.

use fiso_config::flow::SourceSpec;
use fiso_runtime::otel::{self, TraceHeaders};
use tracing::field::Empty;
use tracing::Span;

use super::delivery::DeliveryContext;
use crate::InputEvent;

/// The caller's W3C context: the transport's `traceparent` / `tracestate` (HTTP header, Kafka
/// header, gRPC metadata), else the CloudEvent's distributed-tracing extension.
pub(super) fn caller(ctx: &DeliveryContext, input: Option<&InputEvent>) -> TraceHeaders {
    if ctx.traceparent.is_some() {
        return TraceHeaders {
            traceparent: ctx.traceparent.clone(),
            tracestate: ctx.tracestate.clone(),
        };
    }
    let extension = |name| {
        input
            .and_then(|e| e.extensions().get(name))
            .map(|v| v.canonical().into_owned())
    };
    TraceHeaders {
        traceparent: extension("traceparent"),
        tracestate: extension("tracestate"),
    }
}

/// `flow <name>`: the span of one event.
pub(super) fn flow_span(
    flow: &str,
    source: &SourceSpec,
    ctx: &DeliveryContext,
    caller: &TraceHeaders,
) -> Span {
    if !otel::enabled() {
        return Span::none();
    }
    let span = match (source, &ctx.origin) {
        (SourceSpec::Kafka(kafka), Some(origin)) => {
            let group = kafka
                .consumer_group
                .clone()
                .unwrap_or_else(|| format!("fiso-{flow}"));
            tracing::info_span!(
                "flow",
                otel.name = format!("flow {flow}"),
                otel.kind = "consumer",
                otel.status_code = Empty,
                fiso.flow = flow,
                fiso.correlation_id = %ctx.correlation_id,
                messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.destination.name = %origin.topic,
                messaging.destination.partition.id = %origin.partition,
                messaging.kafka.offset = origin.offset,
                messaging.consumer.group.name = group,
                messaging.message.id = Empty,
                error.type = Empty,
                trace_id = Empty,
                span_id = Empty,
            )
        }
        (SourceSpec::Grpc(_), _) => tracing::info_span!(
            "flow",
            otel.name = format!("flow {flow}"),
            otel.kind = "server",
            otel.status_code = Empty,
            fiso.flow = flow,
            fiso.correlation_id = %ctx.correlation_id,
            rpc.system = "grpc",
            messaging.message.id = Empty,
            error.type = Empty,
            trace_id = Empty,
            span_id = Empty,
        ),
        (source, _) => {
            let route = match source {
                SourceSpec::Http(http) => http.path.as_str(),
                _ => "",
            };
            tracing::info_span!(
                "flow",
                otel.name = format!("flow {flow}"),
                otel.kind = "server",
                otel.status_code = Empty,
                fiso.flow = flow,
                fiso.correlation_id = %ctx.correlation_id,
                http.request.method = "POST",
                http.route = route,
                messaging.message.id = Empty,
                error.type = Empty,
                trace_id = Empty,
                span_id = Empty,
            )
        }
    };
    otel::continue_trace(&span, caller);
    span
}

/// A child of the current span doing one step of the event (`transform`, `dlq write`).
pub(super) fn step(name: &'static str) -> Span {
    if !otel::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "step",
        otel.name = name,
        otel.status_code = Empty,
        error.type = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    otel::record_ids(&span);
    span
}

/// Marks `span` failed with the error's stable code (`error.type`).
pub(super) fn failed(span: &Span, code: &str) {
    span.record("error.type", code);
    span.record("otel.status_code", "ERROR");
}

/// What the sink gets as the event's trace context: the flow span's when traces are exported
/// (so the trace continues downstream), else the caller's, forwarded unchanged.
pub(super) fn forwarded(span: &Span, ctx: &DeliveryContext) -> TraceHeaders {
    otel::headers_of(span).unwrap_or_else(|| TraceHeaders {
        traceparent: ctx.traceparent.clone(),
        tracestate: ctx.tracestate.clone(),
    })
}
