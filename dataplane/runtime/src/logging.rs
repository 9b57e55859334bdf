//! Process-wide `tracing` setup.
//!
//! Production (`fiso flow`, `fiso link` in a pod) logs one JSON object per line so log pipelines
//! can index fields; `fiso dev` logs human-readable lines to the terminal and mirrors every event
//! as JSON into `fiso/.dev/<service>.log`, which `fiso logs` parses later. Console output goes to
//! stderr so that CLI verbs keep stdout for their own results; kubelet collects both streams.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, ParseError};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use fiso_config::TracingConfig;

use crate::otel::{Exporting, TraceSettings};

pub const FORMAT_ENV: &str = "FISO_LOG_FORMAT";
pub const LEVEL_ENV: &str = "FISO_LOG_LEVEL";
pub const DEFAULT_LEVEL: &str = "info";

/// Lines buffered for the log file before new ones are dropped: logging must never block the
/// data path, and a stalled disk is no reason to stall event delivery.
const FILE_QUEUE_LINES: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{FORMAT_ENV}=`{value}` is not a log format (expected `json` or `pretty`)")]
    InvalidFormat { value: String },
    #[error(
        "`{level}` is not a log level or filter (e.g. `info`, `debug`, `info,fiso_flow=trace`)"
    )]
    UnknownLevel { level: String },
    #[error("`{level}` is not a valid log filter: {source}")]
    InvalidFilter {
        level: String,
        #[source]
        source: ParseError,
    },
    #[error(transparent)]
    Traces(#[from] crate::otel::TraceConfigError),
    #[error("cannot open log file {}: {source}", path.display())]
    LogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (production default).
    #[default]
    Json,
    /// Human-readable lines, coloured on a terminal (`fiso dev`).
    Pretty,
}

impl FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err(LoggingError::InvalidFormat {
                value: s.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `EnvFilter` syntax: `debug`, `info,fiso_flow=trace`, ...
    pub level: String,
    /// Also append every event as a JSON line to this file (parent dirs are created).
    pub file: Option<PathBuf>,
    /// Export spans over OTLP (`OTEL_*` variables); `None` = no span is created at all.
    pub traces: Option<TraceSettings>,
    /// The config file's `tracing:` section these settings were made from, remembered at
    /// [`LogSettings::init`] so a reload can tell when the file asks for something else.
    pub traces_file: Option<TracingConfig>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: DEFAULT_LEVEL.to_owned(),
            file: None,
            traces: None,
            traces_file: None,
        }
    }
}

impl LogSettings {
    pub fn new(format: LogFormat, level: impl Into<String>) -> Self {
        Self {
            format,
            level: level.into(),
            file: None,
            traces: None,
            traces_file: None,
        }
    }

    /// `FISO_LOG_FORMAT` (default `json`) and `FISO_LOG_LEVEL` (default `info`); unset or empty
    /// means the default. The level is checked here so a typo fails at startup, not silently.
    pub fn from_env() -> Result<Self, LoggingError> {
        Self::from_lookup(None, |key| std::env::var(key).ok())
    }

    /// [`LogSettings::from_env`], with traces from a config file's `tracing:` section under
    /// the `OTEL_*` variables (each one that is set overrides its field).
    pub fn from_env_and_file(tracing: Option<&TracingConfig>) -> Result<Self, LoggingError> {
        Self::from_lookup(tracing, |key| std::env::var(key).ok())
    }

    fn from_lookup(
        tracing: Option<&TracingConfig>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LoggingError> {
        let lookup = &lookup;
        let non_empty = |key| lookup(key).filter(|v: &String| !v.trim().is_empty());
        let format = match non_empty(FORMAT_ENV) {
            Some(v) => v.parse()?,
            None => LogFormat::default(),
        };
        let level = non_empty(LEVEL_ENV).unwrap_or_else(|| DEFAULT_LEVEL.to_owned());
        build_filter(&level)?;
        Ok(Self {
            format,
            level,
            file: None,
            traces: TraceSettings::resolve(tracing, lookup)?,
            traces_file: tracing.cloned(),
        })
    }

    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Exports spans as `traces` says (replacing what the environment said).
    pub fn with_traces(mut self, traces: Option<TraceSettings>) -> Self {
        self.traces = traces;
        self
    }

    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Installs the global subscriber. Keep the returned guard alive until exit: dropping it
    /// flushes the log file. If a subscriber is already installed (a second call, or a test
    /// harness), nothing changes and the guard reports `installed() == false`.
    pub fn init(self) -> Result<LogGuard, LoggingError> {
        let mut layers: Vec<BoxedLayer> = Vec::with_capacity(3);
        // Only with traces do JSON lines look up trace ids: without, they cost nothing.
        let trace_ids = self.traces.as_ref().map(|_| DispatchSlot::default());
        layers.push(match self.format {
            LogFormat::Json => json_layer(io::stderr, trace_ids.as_ref()),
            LogFormat::Pretty => tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_ansi(io::stderr().is_terminal())
                .boxed(),
        });
        let worker = match &self.file {
            Some(path) => {
                let (worker, writer) = FileWorker::start(path)?;
                layers.push(json_layer(writer, trace_ids.as_ref()));
                Some(worker)
            }
            None => None,
        };
        let (installed, exporting) = match &self.traces {
            // Without traces one filter decides for the whole subscriber, as before: a span or
            // event below the level costs one comparison.
            None => {
                let filter = build_filter(&self.level)?;
                let installed = tracing_subscriber::registry()
                    .with(layers)
                    .with(filter)
                    .try_init()
                    .is_ok();
                (installed, None)
            }
            // With traces the log level must not decide which spans are exported: the log
            // layers keep the level, the bridge takes the data plane's own spans.
            Some(traces) => {
                let exporting = traces.start()?;
                let logs = layers.with_filter(build_filter(&self.level)?);
                let spans = exporting.layer().with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("fiso_flow", tracing::Level::INFO)
                        .with_target("fiso_link", tracing::Level::INFO)
                        .with_target("fiso_runtime", tracing::Level::INFO),
                );
                let installed = tracing_subscriber::registry()
                    .with(logs)
                    .with(spans)
                    .with(trace_ids.unwrap_or_default())
                    .try_init()
                    .is_ok();
                if installed {
                    tracing::info!(endpoint = %traces.endpoint, protocol = traces.protocol.as_str(), sampler = ?traces.sampler, "exporting traces over OTLP");
                }
                (installed, Some(exporting).filter(|_| installed))
            }
        };
        if installed {
            crate::otel::remember_file_section(self.traces_file);
        }
        Ok(LogGuard {
            // A worker whose layer was not installed would never receive anything.
            _file_writer: worker.filter(|_| installed),
            _traces: exporting,
            installed,
        })
    }
}

/// `LogSettings::new(format, level).init()`.
pub fn init(format: LogFormat, level: &str) -> Result<LogGuard, LoggingError> {
    LogSettings::new(format, level).init()
}

/// Flushes and closes the log file when dropped.
#[must_use = "dropping the guard stops writing the log file"]
#[derive(Debug)]
pub struct LogGuard {
    // Held for its `Drop`, which flushes the file.
    _file_writer: Option<FileWorker>,
    // Held for its `Drop`, which flushes queued spans to the collector.
    _traces: Option<Exporting>,
    installed: bool,
}

impl LogGuard {
    /// Whether this call installed the global subscriber.
    pub fn installed(&self) -> bool {
        self.installed
    }
}

fn json_layer<W>(writer: W, trace_ids: Option<&DispatchSlot>) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Event fields at the top level (`{"flow":"orders","message":...}`) are what log queries
    // select on; span fields stay nested under `span`.
    let json = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false);
    let layer = tracing_subscriber::fmt::layer().json().with_writer(writer);
    match trace_ids {
        None => layer.event_format(json).boxed(),
        Some(slot) => layer
            .event_format(JsonWithTraceIds {
                json,
                dispatch: slot.0.clone(),
            })
            .boxed(),
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The subscriber's [`Dispatch`], kept (weakly) for [`JsonWithTraceIds`]: a formatter is not
/// handed it, and `tracing::dispatcher::get_default` inside an event gives none while a scoped
/// dispatcher is set.
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// The JSON line as is, plus top-level `trace_id` and `span_id` when the event is inside a
/// traced span (the nearest one), where log pipelines look for them to link a line to its
/// trace. Installed only when traces are exported.
struct JsonWithTraceIds {
    json: Format<Json>,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonWithTraceIds {
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, SpanId)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        ctx.event_scope()?.find_map(|span| {
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let otel = cx.span();
            let sc = otel.span_context();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        })
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // The SDK's own events may come while it holds a span's OpenTelemetry data.
        let ids = if event.metadata().target().starts_with("opentelemetry") {
            None
        } else {
            self.ids(ctx)
        };
        let Some((trace_id, span_id)) = ids else {
            return self.json.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.json.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                r#"{object},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#
            ),
            None => writer.write_str(&line),
        }
    }
}

fn build_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    let level = level.trim();
    // EnvFilter reads a lone word as a target name, so `FISO_LOG_LEVEL=debgu` would silently
    // disable all logging; a lone word must be a level.
    let lone_word = !level.contains(['=', ',', '[']);
    if lone_word
        && !matches!(
            level.to_ascii_lowercase().as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "off"
        )
    {
        return Err(LoggingError::UnknownLevel {
            level: level.to_owned(),
        });
    }
    EnvFilter::builder()
        .parse(level)
        .map_err(|source| LoggingError::InvalidFilter {
            level: level.to_owned(),
            source,
        })
}

enum Message {
    Line(Vec<u8>),
    Stop,
}

/// Writes queued lines on its own thread so a slow disk never blocks a Tokio worker.
#[derive(Debug)]
struct FileWorker {
    tx: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl FileWorker {
    fn start(path: &Path) -> Result<(Self, QueueWriter), LoggingError> {
        let file = open_append(path).map_err(|source| LoggingError::LogFile {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = mpsc::sync_channel(FILE_QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let thread = {
            let dropped = dropped.clone();
            std::thread::Builder::new()
                .name("fiso-log-file".into())
                .spawn(move || write_lines(rx, file, &dropped))
                .map_err(|source| LoggingError::LogFile {
                    path: path.to_owned(),
                    source,
                })?
        };
        let writer = QueueWriter {
            tx: tx.clone(),
            dropped,
        };
        Ok((
            Self {
                tx,
                thread: Some(thread),
            },
            writer,
        ))
    }
}

impl Drop for FileWorker {
    fn drop(&mut self) {
        if self.tx.send(Message::Stop).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(rx: Receiver<Message>, file: File, dropped: &AtomicU64) {
    let mut out = BufWriter::new(file);
    while let Ok(first) = rx.recv() {
        let mut stop = false;
        let mut next = Some(first);
        // Drain what is queued, then flush once, so `fiso logs -f` sees lines promptly without
        // a syscall per line under load.
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Stop => {
                    stop = true;
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                r#"{{"timestamp":"{}","level":"WARN","target":"fiso_runtime::logging","message":"{lost} log lines dropped: the log file writer fell behind"}}"#,
                humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            );
        }
        let _ = out.flush();
        if stop {
            return;
        }
    }
}

#[derive(Clone)]
struct QueueWriter {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine {
            owner: self,
            buf: Vec::new(),
        }
    }
}

/// Collects one formatted event and queues it whole on drop, so lines never interleave.
struct QueuedLine<'a> {
    owner: &'a QueueWriter,
    buf: Vec<u8>,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        if let Err(TrySendError::Full(_)) = self.owner.tx.try_send(Message::Line(line)) {
            self.owner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A variable lookup that sees only `vars`.
    pub(crate) fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_to_json_info() {
        let s = LogSettings::from_lookup(None, env(&[])).unwrap();
        assert_eq!(s, LogSettings::default());
        assert_eq!(s.format, LogFormat::Json);
        assert_eq!(s.level, "info");
        let s = LogSettings::from_lookup(None, env(&[(FORMAT_ENV, ""), (LEVEL_ENV, " ")])).unwrap();
        assert_eq!(s, LogSettings::default());
    }

    #[test]
    fn traces_follow_the_otel_variables() {
        let s = LogSettings::from_lookup(
            None,
            env(&[(crate::otel::ENDPOINT_ENV, "http://collector:4318")]),
        )
        .unwrap();
        assert_eq!(
            s.traces.map(|t| t.endpoint).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert!(matches!(
            LogSettings::from_lookup(
                None,
                env(&[
                    (crate::otel::ENDPOINT_ENV, "http://collector:4318"),
                    (crate::otel::PROTOCOL_ENV, "http/json"),
                ])
            ),
            Err(LoggingError::Traces(_))
        ));
    }

    #[test]
    fn reads_format_and_filter() {
        let s = LogSettings::from_lookup(
            None,
            env(&[(FORMAT_ENV, "Pretty"), (LEVEL_ENV, "info,fiso_flow=trace")]),
        )
        .unwrap();
        assert_eq!(s.format, LogFormat::Pretty);
        assert_eq!(s.level, "info,fiso_flow=trace");
    }

    #[test]
    fn rejects_unknown_format_and_misspelt_level() {
        assert!(matches!(
            LogSettings::from_lookup(None, env(&[(FORMAT_ENV, "text")])),
            Err(LoggingError::InvalidFormat { .. })
        ));
        assert!(matches!(
            LogSettings::from_lookup(None, env(&[(LEVEL_ENV, "debgu")])),
            Err(LoggingError::UnknownLevel { .. })
        ));
        assert!(matches!(
            LogSettings::from_lookup(None, env(&[(LEVEL_ENV, "fiso_flow=loud")])),
            Err(LoggingError::InvalidFilter { .. })
        ));
        for ok in ["DEBUG", "warn", "off", "fiso_link=debug"] {
            assert!(build_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn queued_lines_reach_the_file_on_guard_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/.dev/orders.log");
        let (worker, writer) = FileWorker::start(&path).unwrap();
        for i in 0..3 {
            let mut line = writer.make_writer();
            write!(line, "{{\"n\":").unwrap();
            writeln!(line, "{i}}}").unwrap();
        }
        drop(worker);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    }
}
