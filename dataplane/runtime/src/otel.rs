//! OpenTelemetry traces: OTLP export of the data plane's `tracing` spans, and W3C trace-context
//! propagation for the sources, sinks and the Link.
//!
//! Configured the standard way, by the OpenTelemetry environment variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`), or by the `tracing:` section of
//! a config file ([`TracingConfig`]) with those variables on top. Off unless an endpoint is set:
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
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use fiso_config::traces::{
    endpoint_has_path, endpoint_problem, ratio_problem, OtlpProtocol, SamplerName,
};
use fiso_config::validate::validate_tracing;
use fiso_config::TracingConfig;
use http_body_util::{BodyExt, Full, Limited};
use indexmap::IndexMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
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
pub const TIMEOUT_ENV: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const TRACES_TIMEOUT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";

const SERVICE_NAME_KEY: &str = "service.name";

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "fiso";

/// The largest OTLP/HTTP answer read: a collector's answer is a small status message.
const MAX_EXPORT_RESPONSE: usize = 64 * 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The config file's `tracing:` section the process started with (set once, by the logging
/// setup): tracing is set up once, so a reloaded file can only be compared with it.
static STARTED_WITH: OnceLock<Option<TracingConfig>> = OnceLock::new();

pub(crate) fn remember_file_section(section: Option<TracingConfig>) {
    let _ = STARTED_WITH.set(section);
}

/// Whether a `tracing:` section read after start asks for something other than what the
/// process started with (then it applies only at the next restart).
pub fn differs_from_running(section: Option<&TracingConfig>) -> bool {
    STARTED_WITH
        .get()
        .map_or(section.is_some(), |running| running.as_ref() != section)
}

/// Whether spans are exported: the data path creates spans only then.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TraceConfigError {
    #[error("{PROTOCOL_ENV}=`{0}` is not an OTLP protocol Fiso exports with (expected {names})", names = OtlpProtocol::NAMES)]
    Protocol(String),
    #[error("{TRACES_EXPORTER_ENV}=`{0}` is not supported (expected `otlp` or `none`)")]
    Exporter(String),
    #[error("{SAMPLER_ENV}=`{0}` is not a sampler (expected {names})", names = SamplerName::NAMES)]
    Sampler(String),
    #[error("{SAMPLER_ARG_ENV}=`{0}` is not a ratio between 0 and 1")]
    SamplerArg(String),
    #[error("{SDK_DISABLED_ENV}=`{0}` is not a boolean (expected `true` or `false`)")]
    Disabled(String),
    #[error("{0}=`{1}` is not a number of milliseconds")]
    Timeout(&'static str, String),
    #[error("OTLP endpoint `{0}` is not an http:// or https:// URL")]
    Endpoint(String),
    /// The config file's `tracing:` section: its findings, one per line.
    #[error("invalid tracing section: {0}")]
    File(String),
    #[error("cannot start the OTLP exporter: {0}")]
    Start(String),
}

/// The OTLP transport.
pub type ExportProtocol = OtlpProtocol;

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
    fn new(name: SamplerName, ratio: f64) -> Self {
        match name {
            SamplerName::AlwaysOn => Self::AlwaysOn,
            SamplerName::AlwaysOff => Self::AlwaysOff,
            SamplerName::TraceIdRatio => Self::TraceIdRatio(ratio),
            SamplerName::ParentBasedAlwaysOn => Self::ParentBasedAlwaysOn,
            SamplerName::ParentBasedAlwaysOff => Self::ParentBasedAlwaysOff,
            SamplerName::ParentBasedTraceIdRatio => Self::ParentBasedTraceIdRatio(ratio),
        }
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
    /// `service.name`.
    pub service_name: String,
    /// The other resource attributes, in order (`service.version` is added).
    pub resource_attributes: Vec<(String, String)>,
    /// The deadline of one export; `None`: the exporter's default (10 s).
    pub timeout: Option<Duration>,
}

impl TraceSettings {
    /// Reads the OpenTelemetry environment variables; `Ok(None)` when no endpoint is set,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env() -> Result<Option<Self>, TraceConfigError> {
        Self::resolve(None, |key| std::env::var(key).ok())
    }

    /// A config file's `tracing:` section with the environment on top: each `OTEL_*` variable
    /// that is set overrides its field. The section is checked as `fiso validate` checks it.
    pub fn from_file_and_env(
        file: Option<&TracingConfig>,
    ) -> Result<Option<Self>, TraceConfigError> {
        Self::resolve(file, |key| std::env::var(key).ok())
    }

    pub(crate) fn resolve(
        file: Option<&TracingConfig>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceConfigError> {
        let none = TracingConfig::default();
        let file = file.unwrap_or(&none);
        let problems: Vec<String> = validate_tracing(file)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let d = d.under("tracing");
                format!("{}: {}", d.path, d.message)
            })
            .collect();
        if !problems.is_empty() {
            return Err(TraceConfigError::File(problems.join("; ")));
        }
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let enabled = match var(SDK_DISABLED_ENV) {
            Some(disabled) => match disabled.trim().to_ascii_lowercase().as_str() {
                "true" => false,
                "false" => true,
                _ => return Err(TraceConfigError::Disabled(disabled)),
            },
            None => file.enabled != Some(false),
        };
        if !enabled {
            return Ok(None);
        }
        if let Some(exporter) = var(TRACES_EXPORTER_ENV) {
            match exporter.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                other => return Err(TraceConfigError::Exporter(other.to_owned())),
            }
        }
        let protocol = match var(TRACES_PROTOCOL_ENV).or_else(|| var(PROTOCOL_ENV)) {
            Some(p) => p.parse().map_err(|()| TraceConfigError::Protocol(p))?,
            None => file.protocol.unwrap_or_default(),
        };
        // The signal's own endpoint is used as is; the base endpoint gets the signal's path
        // under OTLP/HTTP (specification, "Endpoint URLs for OTLP/HTTP"); the file's endpoint
        // gets it only when it has no path of its own.
        let http = protocol == ExportProtocol::HttpProtobuf;
        let with_path = |base: &str| format!("{}/v1/traces", base.trim().trim_end_matches('/'));
        let endpoint = match (var(TRACES_ENDPOINT_ENV), var(ENDPOINT_ENV), &file.endpoint) {
            (Some(traces), _, _) => traces.trim().to_owned(),
            (None, Some(base), _) if http => with_path(&base),
            (None, Some(base), _) => base.trim().to_owned(),
            (None, None, Some(own)) if http && !endpoint_has_path(own) => with_path(own),
            (None, None, Some(own)) => own.trim().to_owned(),
            (None, None, None) => return Ok(None),
        };
        if endpoint_problem(&endpoint).is_some() {
            return Err(TraceConfigError::Endpoint(endpoint));
        }
        let sampler_name = match var(SAMPLER_ENV) {
            Some(name) => name.parse().map_err(|()| TraceConfigError::Sampler(name))?,
            None => file.sampler.unwrap_or_default(),
        };
        let ratio = match var(SAMPLER_ARG_ENV) {
            // Read only by the samplers that take it, as the SDKs do.
            Some(arg) if sampler_name.takes_ratio() => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| ratio_problem(*r).is_none())
                .ok_or(TraceConfigError::SamplerArg(arg))?,
            _ => file.sampler_arg.unwrap_or(1.0),
        };
        let timeout = match [TRACES_TIMEOUT_ENV, TIMEOUT_ENV]
            .into_iter()
            .find_map(|key| var(key).map(|ms| (key, ms)))
        {
            Some((key, ms)) => Some(Duration::from_millis(
                ms.trim()
                    .parse()
                    .map_err(|_| TraceConfigError::Timeout(key, ms))?,
            )),
            None => file.timeout,
        };
        // Resource attributes key by key: the file's, then the variable's on top.
        let mut attributes: IndexMap<String, String> = file.resource_attributes.clone();
        if let Some(env) = var(RESOURCE_ATTRIBUTES_ENV) {
            for (key, value) in env
                .split_terminator(',')
                .filter_map(|kv| kv.split_once('='))
            {
                attributes.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
        let attributes_name = attributes.shift_remove(SERVICE_NAME_KEY);
        let env_attributes_name = var(RESOURCE_ATTRIBUTES_ENV).and_then(|env| {
            env.split_terminator(',')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| k.trim() == SERVICE_NAME_KEY)
                .map(|(_, v)| v.trim().to_owned())
                .next_back()
        });
        // `OTEL_SERVICE_NAME` wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES`
        // (specification); both win over the file.
        let service_name = var(SERVICE_NAME_ENV)
            .map(|n| n.trim().to_owned())
            .or(env_attributes_name)
            .or_else(|| file.service_name.clone())
            .or(attributes_name)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        Ok(Some(TraceSettings {
            endpoint,
            protocol,
            sampler: SamplerSetting::new(sampler_name, ratio),
            service_name,
            resource_attributes: attributes.into_iter().collect(),
            timeout,
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
            ExportProtocol::Grpc => {
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&self.endpoint);
                match self.timeout {
                    Some(t) => builder.with_timeout(t).build(),
                    None => builder.build(),
                }
            }
            ExportProtocol::HttpProtobuf => {
                let client = ClientSettings::default()
                    .build::<Full<Bytes>>()
                    .map_err(|e| TraceConfigError::Start(e.to_string()))?;
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(&self.endpoint)
                    .with_http_client(OtlpHttpClient {
                        client,
                        io: io.handle().clone(),
                    });
                match self.timeout {
                    Some(t) => builder.with_timeout(t).build(),
                    None => builder.build(),
                }
            }
        }
        .map_err(|e| TraceConfigError::Start(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(self.sampler.sampler())
            .with_resource(self.resource())
            .build();
        Ok(Exporting {
            provider,
            io: Some(io),
        })
    }

    /// The resource: the SDK's own attributes (`telemetry.sdk.*`), `service.name`,
    /// `service.version` and the configured attributes. Built from these settings alone: the
    /// SDK's environment detectors would read the variables a second time.
    fn resource(&self) -> Resource {
        Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes(
                self.resource_attributes
                    .iter()
                    .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
            )
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_service_name(self.service_name.clone())
            .build()
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

/// `send <topic>`: the producer span of one Kafka record (the Flow sink's, a Link target's),
/// per the messaging semantic conventions; [`Span::none`](tracing::Span::none) unless traces
/// are exported. Neither key nor headers become attributes.
pub fn kafka_send_span(topic: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        error.type = tracing::field::Empty,
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

    fn file(yaml: &str) -> TracingConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_file_section_alone_configures_export() {
        let t = file("endpoint: http://c:4318\nserviceName: orders\nresourceAttributes:\n  team: pay\nsampler: traceidratio\nsamplerArg: 0.5\ntimeout: 3s\n");
        let s = TraceSettings::resolve(Some(&t), env(&[])).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.protocol, ExportProtocol::HttpProtobuf);
        assert_eq!(s.sampler, SamplerSetting::TraceIdRatio(0.5));
        assert_eq!(s.service_name, "orders");
        assert_eq!(
            s.resource_attributes,
            [("team".to_owned(), "pay".to_owned())]
        );
        assert_eq!(s.timeout, Some(Duration::from_secs(3)));
        // A path of its own is kept; gRPC takes the URL as is.
        let s = TraceSettings::resolve(Some(&file("endpoint: http://c/otlp/traces\n")), env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://c/otlp/traces");
        let s = TraceSettings::resolve(
            Some(&file("endpoint: http://c:4317\nprotocol: grpc\n")),
            env(&[]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://c:4317", ExportProtocol::Grpc)
        );
        assert_eq!(s.service_name, DEFAULT_SERVICE_NAME);
        // Off without an endpoint, or with `enabled: false`.
        assert_eq!(
            TraceSettings::resolve(Some(&file("serviceName: x\n")), env(&[])).unwrap(),
            None
        );
        assert_eq!(
            TraceSettings::resolve(
                Some(&file("endpoint: http://c:4318\nenabled: false\n")),
                env(&[])
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn each_variable_that_is_set_overrides_its_field() {
        let t = file("endpoint: http://file:4318\nprotocol: http/protobuf\nserviceName: from-file\nresourceAttributes:\n  team: pay\n  tier: gold\nsampler: always_off\ntimeout: 3s\nenabled: false\n");
        let s = TraceSettings::resolve(
            Some(&t),
            env(&[
                (SDK_DISABLED_ENV, "false"),
                (ENDPOINT_ENV, "http://env:4317"),
                (PROTOCOL_ENV, "grpc"),
                (SERVICE_NAME_ENV, "from-env"),
                (RESOURCE_ATTRIBUTES_ENV, "tier=silver,zone=a"),
                (SAMPLER_ENV, "parentbased_traceidratio"),
                (SAMPLER_ARG_ENV, "0.1"),
                (TIMEOUT_ENV, "250"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://env:4317", ExportProtocol::Grpc)
        );
        assert_eq!(s.service_name, "from-env");
        assert_eq!(
            s.resource_attributes,
            [
                ("team".to_owned(), "pay".to_owned()),
                ("tier".to_owned(), "silver".to_owned()),
                ("zone".to_owned(), "a".to_owned())
            ]
        );
        assert_eq!(s.sampler, SamplerSetting::ParentBasedTraceIdRatio(0.1));
        assert_eq!(s.timeout, Some(Duration::from_millis(250)));
        // Unset variables leave the file's values; `OTEL_SDK_DISABLED=true` turns a file off.
        let t = file("endpoint: http://file:4318\nserviceName: from-file\n");
        let s = TraceSettings::resolve(Some(&t), env(&[(PROTOCOL_ENV, "grpc")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://file:4318");
        assert_eq!(s.service_name, "from-file");
        assert_eq!(
            TraceSettings::resolve(Some(&t), env(&[(SDK_DISABLED_ENV, "true")])).unwrap(),
            None
        );
        // `service.name` of the variable's attributes beats the file's `serviceName`.
        let s = TraceSettings::resolve(
            Some(&t),
            env(&[(RESOURCE_ATTRIBUTES_ENV, "service.name=attr")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.service_name, "attr");
        assert!(s.resource_attributes.is_empty());
    }

    #[test]
    fn a_bad_file_section_is_refused_naming_the_field() {
        let t = file("endpoint: ftp://c\nsampler: traceidratio\nsamplerArg: 3\n");
        let e = TraceSettings::resolve(Some(&t), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tracing.endpoint") && e.contains("tracing.samplerArg"),
            "{e}"
        );
        let e = TraceSettings::resolve(
            None,
            env(&[(ENDPOINT_ENV, "http://c"), (TIMEOUT_ENV, "5s")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(TIMEOUT_ENV) && e.contains("5s"), "{e}");
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(TraceSettings::resolve(None, env(&[])).unwrap(), None);
        let on = [(ENDPOINT_ENV, "http://c:4318")];
        assert!(TraceSettings::resolve(None, env(&on)).unwrap().is_some());
        for off in [(SDK_DISABLED_ENV, "true"), (TRACES_EXPORTER_ENV, "none")] {
            assert_eq!(
                TraceSettings::resolve(None, env(&[on[0], off])).unwrap(),
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let s = TraceSettings::resolve(None, env(&[(ENDPOINT_ENV, "http://c:4318/")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.protocol, ExportProtocol::HttpProtobuf);
        assert_eq!(s.sampler, SamplerSetting::ParentBasedAlwaysOn);
        let s = TraceSettings::resolve(
            None,
            env(&[(ENDPOINT_ENV, "http://c:4317"), (PROTOCOL_ENV, "grpc")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://c:4317", ExportProtocol::Grpc)
        );
        let s = TraceSettings::resolve(
            None,
            env(&[
                (ENDPOINT_ENV, "http://c:4318"),
                (TRACES_ENDPOINT_ENV, "https://t/otlp/traces"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://t/otlp/traces");
    }

    #[test]
    fn samplers_and_bad_values() {
        let s = TraceSettings::resolve(
            None,
            env(&[
                (ENDPOINT_ENV, "http://c:4318"),
                (SAMPLER_ENV, "parentbased_traceidratio"),
                (SAMPLER_ARG_ENV, "0.25"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.sampler, SamplerSetting::ParentBasedTraceIdRatio(0.25));
        let bad = |vars: &[(&str, &str)]| {
            let mut all = vec![(ENDPOINT_ENV, "http://c:4318")];
            all.extend_from_slice(vars);
            TraceSettings::resolve(None, env(&all))
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&[(PROTOCOL_ENV, "http/json")]).contains("http/json"));
        assert!(bad(&[(SAMPLER_ENV, "sometimes")]).contains("sometimes"));
        assert!(bad(&[(SAMPLER_ENV, "traceidratio"), (SAMPLER_ARG_ENV, "2")]).contains("`2`"));
        assert!(bad(&[(SDK_DISABLED_ENV, "yes")]).contains("yes"));
        assert!(bad(&[(TRACES_EXPORTER_ENV, "zipkin")]).contains("zipkin"));
        let s = TraceSettings::resolve(None, env(&[(ENDPOINT_ENV, "c:4318")]));
        assert!(matches!(s, Err(TraceConfigError::Endpoint(_))));
    }
}
