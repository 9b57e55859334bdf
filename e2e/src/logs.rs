//! The JSON log lines a child process writes to stderr, collected as they arrive.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// One line of output: the JSON object when it parses (`fiso` logs JSON by default), else
/// only the text (a panic message, ...).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub raw: String,
    pub json: Option<Value>,
}

impl LogLine {
    fn parse(raw: String) -> Self {
        let json = serde_json::from_str::<Value>(&raw)
            .ok()
            .filter(Value::is_object);
        LogLine { raw, json }
    }

    /// The `message` field.
    pub fn message(&self) -> Option<&str> {
        self.str_field("message")
    }

    /// The `level` field (`INFO`, `ERROR`, ...).
    pub fn level(&self) -> Option<&str> {
        self.str_field("level")
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.json.as_ref()?.get(name)
    }

    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name)?.as_str()
    }

    /// The socket address a server logged in its `addr` field.
    pub fn addr(&self) -> Result<std::net::SocketAddr, String> {
        self.str_field("addr")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("log line without a socket address in `addr`: {}", self.raw))
    }

    /// `message == msg`.
    pub fn is(&self, msg: &str) -> bool {
        self.message() == Some(msg)
    }

    /// The `flow started` line of flow `name`.
    pub fn is_flow_started(&self, name: &str) -> bool {
        self.is("flow started") && self.str_field("name") == Some(name)
    }
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<LogLine>,
    closed: bool,
}

/// Every line read so far; cheap to clone. Waiters are woken on each new line.
#[derive(Debug, Clone)]
pub struct Logs {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<()>>,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            state: Arc::default(),
            changed: Arc::new(watch::Sender::new(())),
        }
    }
}

impl Logs {
    /// Collects the lines of `stream` on a background task until it closes.
    pub fn capture(stream: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let logs = Logs::default();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.push(line);
            }
            sink.lock().closed = true;
            sink.changed.send_replace(());
        });
        logs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, raw: String) {
        self.lock().lines.push(LogLine::parse(raw));
        self.changed.send_replace(());
    }

    /// How many lines were read so far: pass it to [`Logs::wait_since`] to wait only for
    /// lines written after this point.
    pub fn mark(&self) -> usize {
        self.lock().lines.len()
    }

    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.clone()
    }

    /// The lines from index `from` on that match `pred`.
    pub fn matching(&self, from: usize, pred: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
        self.lock()
            .lines
            .iter()
            .skip(from)
            .filter(|l| pred(l))
            .cloned()
            .collect()
    }

    /// The first line (from the start) matching `pred`, waiting up to `timeout` for it.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&LogLine) -> bool,
        timeout: Duration,
    ) -> Result<LogLine, String> {
        self.wait_since(0, pred, timeout).await
    }

    /// The first line at index `from` or later matching `pred`, waiting up to `timeout` for it.
    /// Fails early when the stream closes (the process exited) without such a line.
    pub async fn wait_since(
        &self,
        from: usize,
        pred: impl Fn(&LogLine) -> bool,
        timeout: Duration,
    ) -> Result<LogLine, String> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut checked = from;
        loop {
            rx.borrow_and_update();
            {
                let state = self.lock();
                if let Some(line) = state.lines.iter().skip(checked).find(|l| pred(l)) {
                    return Ok(line.clone());
                }
                checked = checked.max(state.lines.len());
                if state.closed {
                    return Err(format!(
                        "the log closed (process exited) without the expected line\n{}",
                        tail(&state.lines, 40)
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(format!(
                    "no expected log line within {timeout:?}\n{}",
                    self.tail(40)
                ));
            }
        }
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.lock().lines, n)
    }
}

fn tail(lines: &[LogLine], n: usize) -> String {
    let mut out = format!("--- last {} log lines ---\n", n.min(lines.len()));
    for l in &lines[lines.len().saturating_sub(n)..] {
        let _ = writeln!(out, "{}", l.raw);
    }
    out
}
