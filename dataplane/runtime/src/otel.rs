//! OpenTelemetry traces: OTLP export of the data plane's `tracing` spans, and W3C trace-context
//! propagation for the sources, sinks and the Link.
//!
//! Configured the standard way, by the OpenTelemetry environment variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`). Off unless an endpoint is set:
//! then no exporter, no bridge layer, and [`enabled`] is false, so the data path creates no span
//! at all ([`tracing::Span::none`]).
//!
//! When on, spans go through the SDK's batch span processor: a bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) that drops a span when full instead of blocking the
//! event path (the SDK warns on the first drop and logs the total at shutdown), exported from
//! its own thread with a deadline (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s). The exporter's
//! network I/O runs on a one-thread Tokio runtime of its own, so a slow collector never takes a
//! data-path worker.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::http_client::{ClientSettings, HttpClient};

pub const SDK_DISABLED_ENV: &str = "OTEL_SDK_DISABLED";
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const TRACES_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const TRACES_EXPORTER_ENV: &str = "OTEL_TRACES_EXPORTER";
pub const SAMPLER_ENV: &str = "OTEL_TRACES_SAMPLER";
pub const SAMPLER_ARG_ENV: &str = "OTEL_TRACES_SAMPLER_ARG";
pub const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
pub const RESOURCE_ATTRIBUTES_ENV: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "fiso";

/// The largest OTLP/HTTP answer read: a collector's answer is a small status message.
const MAX_EXPORT_RESPONSE: usize = 64 * 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the data path creates spans only then.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TraceConfigError {
    #[error("{PROTOCOL_ENV}=`{0}` is not an OTLP protocol Fiso exports with (expected `grpc` or `http/protobuf`)")]
    Protocol(String),
    #[error("{TRACES_EXPORTER_ENV}=`{0}` is not supported (expected `otlp` or `none`)")]
    Exporter(String),
    #[error("{SAMPLER_ENV}=`{0}` is not a sampler (expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio)")]
    Sampler(String),
    #[error("{SAMPLER_ARG_ENV}=`{0}` is not a ratio between 0 and 1")]
    SamplerArg(String),
    #[error("{SDK_DISABLED_ENV}=`{0}` is not a boolean (expected `true` or `false`)")]
    Disabled(String),
    #[error("OTLP endpoint `{0}` is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("cannot start the OTLP exporter: {0}")]
    Start(String),
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportProtocol {
    /// OTLP/gRPC (`grpc`), port 4317 by convention.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`, the specification's default), port 4318.
    #[default]
    HttpProtobuf,
}

impl ExportProtocol {
    /// The specification's name of the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportProtocol::Grpc => "grpc",
            ExportProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// The specification's default: follow the caller's decision, sample new traces.
    #[default]
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl SamplerSetting {
    fn parse(name: &str, arg: Option<&str>) -> Result<Self, TraceConfigError> {
        let ratio = || -> Result<f64, TraceConfigError> {
            match arg {
                None => Ok(1.0),
                Some(a) => a
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| TraceConfigError::SamplerArg(a.to_owned())),
            }
        };
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio(ratio()?),
            _ => return Err(TraceConfigError::Sampler(name.to_owned())),
        })
    }

    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Where and how spans are exported; `None` from [`TraceSettings::from_env`] means off.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The full URL spans are sent to (for OTLP/HTTP, with its `/v1/traces` path).
    pub endpoint: String,
    pub protocol: ExportProtocol,
    pub sampler: SamplerSetting,
}

impl TraceSettings {
    /// Reads the OpenTelemetry environment variables; `Ok(None)` when no endpoint is set,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env() -> Result<Option<Self>, TraceConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceConfigError> {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        if let Some(disabled) = var(SDK_DISABLED_ENV) {
            match disabled.trim().to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => return Err(TraceConfigError::Disabled(disabled)),
            }
        }
        if let Some(exporter) = var(TRACES_EXPORTER_ENV) {
            match exporter.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                other => return Err(TraceConfigError::Exporter(other.to_owned())),
            }
        }
        let protocol = match var(TRACES_PROTOCOL_ENV).or_else(|| var(PROTOCOL_ENV)) {
            None => ExportProtocol::default(),
            Some(p) => match p.trim() {
                "grpc" => ExportProtocol::Grpc,
                "http/protobuf" => ExportProtocol::HttpProtobuf,
                _ => return Err(TraceConfigError::Protocol(p)),
            },
        };
        // The signal's own endpoint is used as is; the base endpoint gets the signal's path
        // under OTLP/HTTP (specification, "Endpoint URLs for OTLP/HTTP").
        let endpoint = match (var(TRACES_ENDPOINT_ENV), var(ENDPOINT_ENV)) {
            (Some(traces), _) => traces.trim().to_owned(),
            (None, Some(base)) => match protocol {
                ExportProtocol::Grpc => base.trim().to_owned(),
                ExportProtocol::HttpProtobuf => {
                    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
                }
            },
            (None, None) => return Ok(None),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TraceConfigError::Endpoint(endpoint));
        }
        let sampler = match var(SAMPLER_ENV) {
            None => SamplerSetting::default(),
            Some(name) => SamplerSetting::parse(&name, var(SAMPLER_ARG_ENV).as_deref())?,
        };
        Ok(Some(TraceSettings {
            endpoint,
            protocol,
            sampler,
        }))
    }

    /// Starts the exporter and returns the tracer provider (kept in the log guard, whose drop
    /// flushes it) with the runtime its I/O runs on.
    pub(crate) fn start(&self) -> Result<Exporting, TraceConfigError> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fiso-otlp")
            .enable_all()
            .build()
            .map_err(|e| TraceConfigError::Start(e.to_string()))?;
        // tonic's channel spawns its connection task on the runtime it is built in.
        let _entered = io.enter();
        let exporter = match self.protocol {
            ExportProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&self.endpoint)
                .build(),
            ExportProtocol::HttpProtobuf => {
                let client = ClientSettings::default()
                    .build::<Full<Bytes>>()
                    .map_err(|e| TraceConfigError::Start(e.to_string()))?;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(&self.endpoint)
                    .with_http_client(OtlpHttpClient {
                        client,
                        io: io.handle().clone(),
                    })
                    .build()
            }
        }
        .map_err(|e| TraceConfigError::Start(e.to_string()))?;
        let resource = resource();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(self.sampler.sampler())
            .with_resource(resource)
            .build();
        Ok(Exporting {
            provider,
            io: Some(io),
        })
    }
}

/// `service.name` from the environment (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), else
/// [`DEFAULT_SERVICE_NAME`]; plus `service.version`.
fn resource() -> Resource {
    let named = std::env::var(SERVICE_NAME_ENV).is_ok_and(|v| !v.trim().is_empty())
        || std::env::var(RESOURCE_ATTRIBUTES_ENV).is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if named {
        builder.build()
    } else {
        builder.with_service_name(DEFAULT_SERVICE_NAME).build()
    }
}

/// A running exporter: shut down (flushing queued spans) when dropped.
#[derive(Debug)]
pub(crate) struct Exporting {
    provider: SdkTracerProvider,
    io: Option<tokio::runtime::Runtime>,
}

impl Exporting {
    /// The bridge from `tracing` spans to this provider's tracer; marks tracing as enabled.
    pub(crate) fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        ENABLED.store(true, Ordering::Relaxed);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("fiso"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
    }
}

impl Drop for Exporting {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("fiso: flushing spans at exit failed: {e}");
        }
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

/// The OTLP/HTTP exporter's client: the data plane's own pooled hyper client (rustls, system
/// roots), its requests run on the exporter's runtime. The exporter bounds each export with its
/// timeout.
#[derive(Debug)]
struct OtlpHttpClient {
    client: HttpClient<Full<Bytes>>,
    io: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_EXPORT_RESPONSE)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        self.io.spawn(exchange).await?
    }
}

/// A `traceparent` / `tracestate` pair as it travels in headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" => self.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

/// Makes the caller's W3C context (a valid `traceparent`, with its `tracestate`) the parent of
/// `span`, and records the span's `trace_id` / `span_id` fields (declared `Empty` by the span)
/// so log lines inside it carry them. An invalid `traceparent` starts a new trace.
pub fn continue_trace(span: &tracing::Span, caller: &TraceHeaders) {
    if span.is_disabled() {
        return;
    }
    if caller.traceparent.is_some() {
        let parent = TraceContextPropagator::new().extract(caller);
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Records `trace_id` / `span_id` on `span` (a span declares them `Empty`).
pub fn record_ids(span: &tracing::Span) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The W3C headers that make `span` the parent of the next hop; `None` when tracing is off or
/// the span is disabled.
pub fn headers_of(span: &tracing::Span) -> Option<TraceHeaders> {
    if span.is_disabled() {
        return None;
    }
    let mut headers = TraceHeaders::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
    headers.traceparent.is_some().then_some(headers)
}

/// The trace id of the current span, for exemplars; `None` when tracing is off or the trace is
/// not sampled (an exemplar must point at a trace that exists).
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    trace_id_of(&tracing::Span::current())
}

/// [`current_trace_id`] of `span`.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// `interceptor <module>`: one interceptor's run, Flow's on an event or Link's on a request
/// (`phase` `outbound`) or an answer (`inbound`); [`Span::none`](tracing::Span::none) unless
/// traces are exported.
pub fn interceptor_span(module: &str, phase: Option<&'static str>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "interceptor",
        otel.name = format!("interceptor {module}"),
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        fiso.interceptor.module = module,
        fiso.interceptor.phase = phase,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    record_ids(&span);
    span
}

/// Marks `span` failed, `code` being the error's stable code (`error.type`).
pub fn failed(span: &tracing::Span, code: &str) {
    span.record("error.type", code);
    span.record("otel.status_code", "ERROR");
}

/// Semantic-convention attributes of an HTTP answer set on `span` after it started.
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    if !span.is_disabled() {
        span.set_attribute(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::env;

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(TraceSettings::from_lookup(env(&[])).unwrap(), None);
        let on = [(ENDPOINT_ENV, "http://c:4318")];
        assert!(TraceSettings::from_lookup(env(&on)).unwrap().is_some());
        for off in [(SDK_DISABLED_ENV, "true"), (TRACES_EXPORTER_ENV, "none")] {
            assert_eq!(
                TraceSettings::from_lookup(env(&[on[0], off])).unwrap(),
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let s = TraceSettings::from_lookup(env(&[(ENDPOINT_ENV, "http://c:4318/")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.protocol, ExportProtocol::HttpProtobuf);
        assert_eq!(s.sampler, SamplerSetting::ParentBasedAlwaysOn);
        let s = TraceSettings::from_lookup(env(&[
            (ENDPOINT_ENV, "http://c:4317"),
            (PROTOCOL_ENV, "grpc"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://c:4317", ExportProtocol::Grpc)
        );
        let s = TraceSettings::from_lookup(env(&[
            (ENDPOINT_ENV, "http://c:4318"),
            (TRACES_ENDPOINT_ENV, "https://t/otlp/traces"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://t/otlp/traces");
    }

    #[test]
    fn samplers_and_bad_values() {
        let s = TraceSettings::from_lookup(env(&[
            (ENDPOINT_ENV, "http://c:4318"),
            (SAMPLER_ENV, "parentbased_traceidratio"),
            (SAMPLER_ARG_ENV, "0.25"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.sampler, SamplerSetting::ParentBasedTraceIdRatio(0.25));
        let bad = |vars: &[(&str, &str)]| {
            let mut all = vec![(ENDPOINT_ENV, "http://c:4318")];
            all.extend_from_slice(vars);
            TraceSettings::from_lookup(env(&all))
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&[(PROTOCOL_ENV, "http/json")]).contains("http/json"));
        assert!(bad(&[(SAMPLER_ENV, "sometimes")]).contains("sometimes"));
        assert!(bad(&[(SAMPLER_ENV, "traceidratio"), (SAMPLER_ARG_ENV, "2")]).contains("`2`"));
        assert!(bad(&[(SDK_DISABLED_ENV, "yes")]).contains("yes"));
        assert!(bad(&[(TRACES_EXPORTER_ENV, "zipkin")]).contains("zipkin"));
        let s = TraceSettings::from_lookup(env(&[(ENDPOINT_ENV, "c:4318")]));
        assert!(matches!(s, Err(TraceConfigError::Endpoint(_))));
    }
}
