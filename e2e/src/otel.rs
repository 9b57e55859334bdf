//! A real OpenTelemetry collector for the trace-export tests: `rotel-agent` (PyPI `rotel`,
//! installed by `cargo xtask infra up`, path in `FISO_E2E_ROTEL`) with its OTLP gRPC and HTTP
//! receivers on free ports and a `blackhole` exporter whose debug log prints every span it
//! receives (`--debug-log traces --debug-log-verbosity detailed`). [`Collector::spans`] parses
//! that print-out back into [`Span`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::{eventually, free_addr, Logs, DEADLINE};

/// The variable naming the `rotel-agent` executable.
pub const ROTEL_VAR: &str = "FISO_E2E_ROTEL";

/// Starts of `rotel-agent` before a test gives up on its ports being taken.
const ATTEMPTS: usize = 5;

/// One exported span as the collector printed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    pub span_id: String,
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ...
    pub kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_ERROR`, ...
    pub status: String,
    /// Attribute values as text (`Str(x)` / `Int(1)` → `x` / `1`).
    pub attributes: BTreeMap<String, String>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running collector; killed when dropped (its output is printed if the test failed).
pub struct Collector {
    _child: Child,
    output: Logs,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Collector {
    /// Starts `rotel-agent` and waits until both receivers accept connections.
    pub async fn start() -> Collector {
        let rotel = std::env::var_os(ROTEL_VAR).unwrap_or_else(|| {
            panic!(
                "{ROTEL_VAR} is not set: run `cargo xtask infra up otel` and load target/infra/env"
            )
        });
        // rotel cannot listen on port 0, so its ports are picked free beforehand; another test
        // may bind one of them first, and rotel then exits: it is started again on others.
        for _ in 0..ATTEMPTS {
            let (grpc, http) = (free_addr(), free_addr());
            let mut child = Command::new(&rotel)
                .arg("start")
                .args(["--exporter", "blackhole"])
                .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
                .arg("--otlp-grpc-endpoint")
                .arg(grpc.to_string())
                .arg("--otlp-http-endpoint")
                .arg(http.to_string())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawning rotel-agent");
            let output = Logs::capture(child.stdout.take().expect("stdout is piped"));
            // `Some(true)` once both receivers accept, `Some(false)` if rotel exited.
            let listening = eventually(DEADLINE, || {
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                async move {
                    if exited {
                        return Some(false);
                    }
                    let up = tokio::net::TcpStream::connect(grpc).await.is_ok()
                        && tokio::net::TcpStream::connect(http).await.is_ok();
                    up.then_some(true)
                }
            })
            .await;
            assert!(
                listening.is_some(),
                "rotel-agent never listened on {grpc} / {http}\n{}",
                output.tail(40)
            );
            // What accepted may have been another test's listener, with rotel exiting.
            if listening == Some(true) && matches!(child.try_wait(), Ok(None)) {
                return Collector {
                    _child: child,
                    output,
                    grpc,
                    http,
                };
            }
            eprintln!(
                "rotel-agent exited on {grpc} / {http}; starting it on other ports\n{}",
                output.tail(5)
            );
        }
        panic!("rotel-agent exited {ATTEMPTS} times: its ports were taken each time");
    }

    /// `OTEL_*` variables that make fiso export to this collector with `protocol` (`grpc` or
    /// `http/protobuf`), every span sampled and batches sent at once.
    pub fn env(&self, protocol: &str) -> Vec<(&'static str, String)> {
        let endpoint = match protocol {
            "grpc" => format!("http://{}", self.grpc),
            _ => format!("http://{}", self.http),
        };
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            ("OTEL_SERVICE_NAME", "fiso-e2e".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        parse(self.output.lines().iter().map(|l| l.raw.as_str()))
    }

    /// The spans of `trace_id`, once `done` says they are all there.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let found = eventually(DEADLINE, || async {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            done(&spans).then_some(spans)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "the collector never received the expected spans of trace {trace_id}; it has:\n{:#?}",
                self.spans()
            )
        })
    }

    /// The collector's raw output, for assertions that something never appears.
    pub fn output(&self) -> String {
        self.output
            .lines()
            .iter()
            .map(|l| l.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("rotel-agent output:\n{}", self.output.tail(200));
        }
    }
}

/// Parses the debug print-out (`Span #0`, `    Trace ID       : …`, `     -> key: Str(v)`).
fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut current: Option<Span> = None;
    for line in lines {
        let line = strip_ansi(line);
        let trimmed = line.trim();
        if trimmed.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(Span::default());
            continue;
        }
        if trimmed.starts_with("ResourceSpans #") || trimmed.starts_with("ScopeSpans #") {
            spans.extend(current.take());
            continue;
        }
        let Some(span) = current.as_mut() else {
            continue;
        };
        if let Some(attr) = trimmed.strip_prefix("-> ") {
            if let Some((key, value)) = attr.split_once(": ") {
                let value = value
                    .split_once('(')
                    .and_then(|(_, v)| v.strip_suffix(')'))
                    .unwrap_or(value);
                span.attributes.insert(key.to_owned(), value.to_owned());
            }
            continue;
        }
        if let Some((key, value)) = trimmed.split_once(" : ").or_else(|| {
            trimmed
                .split_once(':')
                .filter(|(k, _)| k.trim() == "Status code" || k.trim() == "Parent ID")
        }) {
            let value = value.trim().to_owned();
            match key.trim() {
                "Trace ID" => span.trace_id = value,
                "Parent ID" => span.parent_id = value,
                "ID" => span.span_id = value,
                "Name" => span.name = value,
                "Kind" => span.kind = value,
                "Status code" => span.status = value,
                _ => {}
            }
        }
    }
    spans.extend(current);
    spans
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_debug_print_out() {
        let text = "ResourceSpans #0\nSpan #0\n    Trace ID       : 4bf9\n    Parent ID      : \n    ID             : 94b9\n    Name           : flow orders\n    Kind           : SPAN_KIND_SERVER\n    Status code    : STATUS_CODE_ERROR\nAttributes:\n     -> error.type: Str(SINK_DELIVERY_FAILED)\n     -> http.response.status_code: Int(503)\nSpan #1\n    Trace ID       : 4bf9\n    Parent ID      : 94b9\n    ID             : aa70\n    Name           : POST\n";
        let spans = parse(text.lines());
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "flow orders");
        assert_eq!(spans[0].parent_id, "");
        assert_eq!(spans[0].status, "STATUS_CODE_ERROR");
        assert_eq!(spans[0].attr("error.type"), Some("SINK_DELIVERY_FAILED"));
        assert_eq!(spans[0].attr("http.response.status_code"), Some("503"));
        assert_eq!(
            (spans[1].parent_id.as_str(), spans[1].span_id.as_str()),
            ("94b9", "aa70")
        );
    }
}
