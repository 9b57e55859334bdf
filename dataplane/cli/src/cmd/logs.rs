//! `fiso logs [--follow] [--service flow|link|APP] [--tail N]`: what `fiso dev` wrote to
//! `<project>/.dev/`: the data plane's log (JSON lines, shown one event per line, split into
//! the flows' and the link's) or an app's output (`.dev/services/<name>.log`, as it came).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::cmd::dev::{app, state};
use crate::lines::{read_lines, Line, LineSplitter};
use crate::project::DEFAULT_DIR;

/// Which part of the data plane's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Flow,
    Link,
}

impl Component {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "flow" | "fiso-flow" => Some(Component::Flow),
            "link" | "fiso-link" => Some(Component::Link),
            _ => None,
        }
    }

    /// Whether a JSON log line came from this component (by the crate in its `target`).
    pub fn wrote(self, line: &str) -> bool {
        let from_link = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| {
                v.get("target")
                    .and_then(Value::as_str)
                    .map(|t| t.starts_with("fiso_link"))
            })
            .unwrap_or(false);
        from_link == (self == Component::Link)
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Which log: `flow` or `link` (the data plane; also `fiso-flow`, `fiso-link`), or an app
    /// `fiso dev` ran (`user-service`, or the NAME of `fiso dev -- …`).
    #[arg(long, short = 's', value_name = "SERVICE", default_value = "flow")]
    pub service: String,
    /// How many of the last lines to show (`--lines` as `tail` says it).
    #[arg(long, alias = "lines", default_value_t = 100)]
    pub tail: usize,
    /// Print the data plane's raw JSON lines.
    #[arg(long)]
    pub raw: bool,
    /// Project directory. Default: ./fiso, or the project the current directory is in.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What is read, and how each line is shown.
enum Source {
    DataPlane(Component),
    App,
}

pub fn run(args: LogsArgs) -> Result<ExitCode> {
    let project = args
        .dir
        .clone()
        .or_else(crate::project::find)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let (source, files) = match Component::parse(&args.service) {
        Some(component) => {
            let path = state::data_plane_log(&project);
            if !path.is_file() {
                bail!(
                    "no log at {}; start the services with `fiso dev` first",
                    path.display()
                );
            }
            (Source::DataPlane(component), vec![path])
        }
        None => {
            let path = state::service_log(&project, &args.service);
            if !path.is_file() {
                let mut known = vec!["flow".to_owned(), "link".to_owned()];
                known.extend(state::services(&project));
                bail!(
                    "no service `{}` has a log in {}; known: {}",
                    args.service,
                    state::dir(&project).display(),
                    known.join(", ")
                );
            }
            (Source::App, vec![app::rotated(&path), path])
        }
    };
    let show = |line: &Line| -> Option<String> {
        match source {
            Source::DataPlane(c) if !c.wrote(&line.text) => None,
            Source::DataPlane(_) if line.cut == 0 => Some(render(&line.text, args.raw)),
            // A cut JSON line is no longer JSON: shown as it is.
            Source::DataPlane(_) | Source::App => Some(line.display()),
        }
    };
    let mut last: VecDeque<String> = VecDeque::new();
    for path in &files {
        let Ok(file) = File::open(path) else { continue };
        read_lines(file, |line| {
            if let Some(text) = show(&line) {
                last.push_back(text);
                if last.len() > args.tail {
                    last.pop_front();
                }
            }
        })
        .with_context(|| format!("reading {}", path.display()))?;
    }
    for l in &last {
        println!("{l}");
    }
    if args.follow {
        let path = files.last().expect("a log file");
        follow(path, |line| {
            if let Some(text) = show(&line) {
                println!("{text}");
            }
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what is appended to `path` from its current end, forever. A file that shrank was
/// replaced (a new session, or an app log cut over): it is read again from its start.
fn follow(path: &Path, mut line: impl FnMut(Line)) -> Result<()> {
    let mut pos = std::fs::metadata(path)?.len();
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 8192];
    loop {
        // Polling keeps this free of platform watch APIs; 200ms is imperceptible for a log tail.
        std::thread::sleep(Duration::from_millis(200));
        let Ok(mut file) = File::open(path) else {
            continue;
        };
        let len = file.metadata()?.len();
        if len < pos {
            pos = 0;
            splitter = LineSplitter::default();
        }
        file.seek(SeekFrom::Start(pos))?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            splitter.push(&buf[..n], &mut line);
        }
    }
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
