//! `fiso logs [--follow] [--service flow|link] [--tail N]`: the logs `fiso dev` writes to
//! `fiso/.dev/<service>.log` (JSON lines), shown one event per line.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::project::DEFAULT_DIR;

/// Where `fiso dev` writes its logs, relative to the working directory.
pub fn dev_log_dir() -> PathBuf {
    Path::new(DEFAULT_DIR).join(".dev")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    #[value(alias = "fiso-flow")]
    Flow,
    #[value(alias = "fiso-link")]
    Link,
}

/// `fiso dev` runs flows and link in one process, logging to this one file.
pub const DEV_LOG: &str = "dev.log";

impl Service {
    /// Whether a JSON log line came from this service (by the crate in its `target`).
    pub fn wrote(self, line: &str) -> bool {
        let from_link = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| {
                v.get("target")
                    .and_then(Value::as_str)
                    .map(|t| t.starts_with("fiso_link"))
            })
            .unwrap_or(false);
        from_link == (self == Service::Link)
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Which service's log.
    #[arg(long, short = 's', value_enum, default_value_t = Service::Flow)]
    pub service: Service,
    /// How many of the last lines to show (`--lines` as `tail` says it).
    #[arg(long, alias = "lines", default_value_t = 100)]
    pub tail: usize,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: LogsArgs) -> Result<ExitCode> {
    let path = dev_log_dir().join(DEV_LOG);
    if !path.is_file() {
        bail!(
            "no log at {}; start the services with `fiso dev` first",
            path.display()
        );
    }
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if !args.service.wrote(&line) {
            line.clear();
            continue;
        }
        lines.push(std::mem::take(&mut line));
        if lines.len() > args.tail {
            lines.remove(0);
        }
    }
    for l in &lines {
        println!("{}", render(l, args.raw));
    }
    if args.follow {
        let mut pos = reader.stream_position()?;
        loop {
            // Polling keeps this free of platform watch APIs; 200ms is imperceptible for a log tail.
            std::thread::sleep(Duration::from_millis(200));
            let mut file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            if len < pos {
                pos = 0; // truncated or rotated by a new `fiso dev`
            }
            file.seek(SeekFrom::Start(pos))?;
            let mut r = BufReader::new(file);
            while r.read_line(&mut line)? > 0 {
                if line.ends_with('\n') {
                    if args.service.wrote(&line) {
                        println!("{}", render(&line, args.raw));
                    }
                    pos += line.len() as u64;
                }
                line.clear();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-26T14:00:00Z  INFO flow started name=orders` from a tracing JSON line.
pub fn render(line: &str, raw: bool) -> String {
    let line = line.trim_end();
    if raw {
        return line.to_owned();
    }
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let get = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let fields = obj.get("fields").and_then(Value::as_object);
    let message = obj
        .get("message")
        .or_else(|| fields.and_then(|f| f.get("message")))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = format!("{} {:>5} {message}", get("timestamp"), get("level"));
    let extra = fields
        .into_iter()
        .flatten()
        .chain(obj.iter().filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "timestamp" | "level" | "message" | "fields" | "target" | "span" | "spans"
            )
        }));
    for (k, v) in extra {
        if k == "message" {
            continue;
        }
        match v {
            Value::String(s) => out.push_str(&format!(" {k}={s}")),
            other => out.push_str(&format!(" {k}={other}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tracing_json_lines() {
        let l = r#"{"timestamp":"2026-11-26T14:00:00Z","level":"INFO","message":"flow started","name":"orders","target":"fiso_flow"}"#;
        assert_eq!(
            render(l, false),
            "2026-11-26T14:00:00Z  INFO flow started name=orders"
        );
        let l = r#"{"timestamp":"t","level":"ERROR","fields":{"message":"flow stopped with error","name":"a","error":"boom"}}"#;
        assert_eq!(
            render(l, false),
            "t ERROR flow stopped with error name=a error=boom"
        );
        assert_eq!(render("not json", false), "not json");
    }
}
