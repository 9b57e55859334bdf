//! `fiso doctor`: project structure, config validity, the ports `fiso dev` listens on,
//! reachable dependencies — one check per line, each failure with a fix; `--format json` for
//! tools. Exit 1 only when a check fails (warnings and skipped checks do not).
//!
//! It knows what `fiso dev` brings: the ports a running session of this project holds are
//! its own, and the sample service it starts is expected to be absent before it starts.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use fiso_config::flow::{SinkSpec, SourceSpec};
use fiso_config::validate::{normalize_listen_addr, Project};
use fiso_flow::topology::runtime::DEFAULT_METRICS_ADDR;
use serde::Serialize;

use crate::cmd::dev::{self, state};
use crate::cmd::Format;
use crate::project::{ProjectFiles, DEFAULT_DIR};
use crate::style;

/// The ports of a default project when there is none to read: flow ingestion, link proxy.
const WELL_KNOWN: [&str; 2] = [":8081", ":3500"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Project directory. Default: ./fiso, or the project the current directory is in.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where `fiso dev` serves metrics (checked to be free while it is not running).
    #[arg(long, env = "FISO_METRICS_ADDR", hide_env_values = true, default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,
    /// Output format: one line per check, or one JSON document
    /// `{"ok", "failures", "warnings", "checks": [{"name", "target", "status", "message", "hint"}]}`
    /// with `status` one of ok, warn, fail, skip.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    /// Worth knowing; not a failure.
    Warn,
    Fail,
    /// Not checked, for the reason given.
    Skip,
}

/// One check. `name` is its kind (project, flows, link, config, dev, port, metrics, kafka,
/// temporal, sink), `target` what it looked at (an address, a flow).
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    target: Option<String>,
    status: Status,
    message: String,
    hint: Option<String>,
}

#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    ok: bool,
    failures: usize,
    warnings: usize,
    checks: &'a [Check],
}

struct Report {
    format: Format,
    checks: Vec<Check>,
}

impl Report {
    fn add(
        &mut self,
        name: &'static str,
        target: Option<String>,
        status: Status,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let check = Check {
            name,
            target,
            status,
            message: message.into(),
            hint,
        };
        // Line by line as they complete: reachability checks can take a moment each.
        if self.format == Format::Human {
            let mark = match check.status {
                Status::Ok => style::ok("✓"),
                Status::Warn => style::warning("!"),
                Status::Fail => style::error("✗"),
                Status::Skip => style::dim("-"),
            };
            println!("{mark} {}", check.message);
            if let Some(hint) = &check.hint {
                println!("    {} {hint}", style::dim("→"));
            }
        }
        self.checks.push(check);
    }

    fn ok(&mut self, name: &'static str, target: Option<String>, message: impl Into<String>) {
        self.add(name, target, Status::Ok, message, None);
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let mut r = Report {
        format: args.format,
        checks: Vec::new(),
    };
    let dir = args.dir.clone().or_else(crate::project::find);
    let project = dir.as_deref().and_then(|d| structure_and_config(&mut r, d));
    match (&dir, &project) {
        (Some(dir), Some(project)) => {
            let session = dev_session(&mut r, dir);
            ports(&mut r, project, session.as_ref(), &args.metrics_addr);
            dependencies(&mut r, dir, project, session.as_ref());
        }
        (None, _) => {
            r.add(
                "project",
                None,
                Status::Fail,
                format!("no Fiso project here: no ./{DEFAULT_DIR}, and the current directory is not inside one"),
                Some("run `fiso init` (or pass --dir)".to_owned()),
            );
            for addr in WELL_KNOWN.iter().chain([&args.metrics_addr.as_str()]) {
                if let Some(addr) = normalize_listen_addr(addr) {
                    free_port(
                        &mut r,
                        "port",
                        &addr,
                        "change the address it is configured at",
                    );
                }
            }
        }
        (Some(_), None) => {}
    }
    let failures = r.count(Status::Fail);
    let warnings = r.count(Status::Warn);
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&JsonReport {
                ok: failures == 0,
                failures,
                warnings,
                checks: &r.checks,
            })?
        ),
        Format::Human if failures == 0 => println!(
            "\n{} everything looks good{}",
            style::ok("✓"),
            match warnings {
                0 => String::new(),
                1 => " (1 warning)".to_owned(),
                n => format!(" ({n} warnings)"),
            }
        ),
        Format::Human => println!(
            "\n{} {failures} problem{} found",
            style::error("✗"),
            if failures == 1 { "" } else { "s" }
        ),
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn structure_and_config(r: &mut Report, dir: &Path) -> Option<Project> {
    let target = Some(dir.display().to_string());
    if !dir.is_dir() {
        r.add(
            "project",
            target,
            Status::Fail,
            format!("project directory {} not found", dir.display()),
            Some("run `fiso init` (or pass --dir)".to_owned()),
        );
        return None;
    }
    r.ok(
        "project",
        target,
        format!("project directory {}", shown(dir)),
    );
    let flows = dir.join("flows");
    let link = dir.join("link").join("config.yaml");
    let target = Some(flows.display().to_string());
    if flows.is_dir() {
        r.ok("flows", target, format!("{} exists", flows.display()));
    } else {
        r.add(
            "flows",
            target,
            Status::Fail,
            format!("{} is missing", flows.display()),
            Some("create it and add a flow, or run `fiso init --force`".to_owned()),
        );
    }
    let target = Some(link.display().to_string());
    if link.is_file() {
        r.ok("link", target, format!("{} exists", link.display()));
    } else {
        r.add(
            "link",
            target,
            Status::Fail,
            format!("{} is missing", link.display()),
            Some("create it (see `fiso init`), even with just `targets: []`".to_owned()),
        );
    }
    let files = match ProjectFiles::read(dir) {
        Ok(f) => f,
        Err(e) => {
            r.add(
                "config",
                None,
                Status::Fail,
                format!(
                    "cannot read the project: {}",
                    fiso_runtime::error_text::chain(e.as_ref())
                ),
                Some("check file permissions".to_owned()),
            );
            return None;
        }
    };
    let (project, diags) = files.check();
    let errors = diags.errors().count();
    if errors == 0 {
        r.ok(
            "config",
            None,
            format!(
                "config valid ({} flow{}{})",
                project.flows.len(),
                if project.flows.len() == 1 { "" } else { "s" },
                if project.link.is_some() {
                    " + link"
                } else {
                    ""
                }
            ),
        );
    } else {
        let first = diags
            .errors()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        r.add(
            "config",
            None,
            Status::Fail,
            format!(
                "config has {errors} error{}; first: {first}",
                if errors == 1 { "" } else { "s" }
            ),
            Some("run `fiso validate` for all of them".to_owned()),
        );
    }
    Some(project)
}

/// A project found above the current directory (`..`) by its full path.
fn shown(dir: &Path) -> String {
    if dir == Path::new(".") || dir.starts_with("..") {
        if let Ok(full) = dir.canonicalize() {
            return full.display().to_string();
        }
    }
    dir.display().to_string()
}

/// Whether `fiso dev` runs for this project, and what it serves.
fn dev_session(r: &mut Report, dir: &Path) -> Option<state::SessionInfo> {
    let session = state::running(dir);
    match &session {
        Some(s) => r.ok(
            "dev",
            None,
            match s.pid {
                Some(pid) => format!("`fiso dev` is running for this project (pid {pid})"),
                None => "`fiso dev` is starting for this project".to_owned(),
            },
        ),
        None => r.add(
            "dev",
            None,
            Status::Skip,
            "`fiso dev` is not running: checking that the ports it needs are free",
            None,
        ),
    }
    session
}

/// `fiso dev`'s`, or `fiso dev (pid N)`'s.
fn dev_name(session: &state::SessionInfo) -> String {
    match session.pid {
        Some(pid) => format!("the running `fiso dev` (pid {pid})"),
        None => "the `fiso dev` starting".to_owned(),
    }
}

/// The addresses `fiso dev` listens on, each once, with what configures it.
fn listen_addrs(project: &Project) -> BTreeMap<String, Vec<String>> {
    let mut addrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &project.flows {
        let listen = match &f.config.source {
            SourceSpec::Http(c) => &c.listen_addr,
            SourceSpec::Grpc(c) => &c.listen_addr,
            SourceSpec::Kafka(_) => continue,
        };
        if let Some(addr) = normalize_listen_addr(listen) {
            addrs
                .entry(addr)
                .or_default()
                .push(format!("source.config.listenAddr in {}", f.file));
        }
    }
    if let Some(l) = &project.link {
        if let Some(addr) = normalize_listen_addr(&l.config.listen_addr) {
            addrs
                .entry(addr)
                .or_default()
                .push(format!("listenAddr in {}", l.file));
        }
    }
    addrs
}

fn ports(
    r: &mut Report,
    project: &Project,
    session: Option<&state::SessionInfo>,
    metrics_addr: &str,
) {
    for (addr, owners) in listen_addrs(project) {
        let change = format!("change {}", owners.join(", and "));
        match session {
            Some(s) => held_by_dev(r, "port", &addr, s),
            None => free_port(r, "port", &addr, &change),
        }
    }
    match session.and_then(|s| s.metrics_addr.map(|a| (s, a))) {
        Some((s, addr)) => r.ok(
            "metrics",
            Some(addr.to_string()),
            format!("metrics: {} serves http://{addr}/metrics", dev_name(s)),
        ),
        None if session.is_some() => {}
        None => match normalize_listen_addr(metrics_addr) {
            Some(addr) => free_port(
                r,
                "metrics",
                &addr,
                "run `fiso dev --metrics-addr <address>` (or set FISO_METRICS_ADDR)",
            ),
            None => r.add(
                "metrics",
                Some(metrics_addr.to_owned()),
                Status::Fail,
                format!("metrics address `{metrics_addr}` is not host:port"),
                Some("e.g. \":9090\" or \"127.0.0.1:9090\"".to_owned()),
            ),
        },
    }
}

/// While `fiso dev` runs, a project address in use is its own; a free one is a flow or link
/// it could not start.
fn held_by_dev(r: &mut Report, name: &'static str, addr: &str, s: &state::SessionInfo) {
    match TcpListener::bind(addr) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => r.ok(
            name,
            Some(addr.to_owned()),
            format!("port {addr} is held by {}", dev_name(s)),
        ),
        _ => r.add(
            name,
            Some(addr.to_owned()),
            Status::Warn,
            format!("port {addr} is not served although `fiso dev` is running"),
            Some(format!(
                "it did not start what listens there: see `fiso logs`{}",
                s.metrics_addr
                    .map(|a| format!(" and http://{a}/readyz"))
                    .unwrap_or_default()
            )),
        ),
    }
}

fn free_port(r: &mut Report, name: &'static str, addr: &str, change: &str) {
    let port = addr.rsplit(':').next().unwrap_or(addr);
    match TcpListener::bind(addr) {
        Ok(_) => r.ok(name, Some(addr.to_owned()), format!("port {addr} is free")),
        Err(e) => r.add(
            name,
            Some(addr.to_owned()),
            Status::Fail,
            format!("port {addr} is not available: {e}"),
            Some(if e.kind() == ErrorKind::PermissionDenied {
                format!("ports below 1024 need privileges: {change}")
            } else {
                format!("see what holds it (`lsof -i :{port}`) and stop it, or {change}")
            }),
        ),
    }
}

fn dependencies(r: &mut Report, dir: &Path, p: &Project, session: Option<&state::SessionInfo>) {
    // The port `fiso dev` tells its sample service to serve, when it would start one.
    let sample_port = dev::sample_service(dir).and(dev::app_port(p));
    for f in &p.flows {
        let name = f.name();
        let clusters = f.config.kafka.as_ref().map(|k| &k.clusters);
        for (cluster, c) in clusters.into_iter().flatten() {
            for b in &c.brokers {
                let what = format!("flow {name}: Kafka broker {b} (cluster {cluster})");
                match connect(b) {
                    Ok(()) => r.ok("kafka", Some(b.clone()), format!("{what} is reachable")),
                    Err(e) => r.add(
                        "kafka",
                        Some(b.clone()),
                        Status::Fail,
                        format!("{what} is unreachable: {e}"),
                        Some("start the broker, or fix `kafka.clusters` brokers".to_owned()),
                    ),
                }
            }
        }
        let (what, host_port, local, fix) = match &f.config.sink {
            SinkSpec::Temporal(t) => {
                let what = format!("flow {name}: Temporal {}", t.host_port);
                match connect(&t.host_port) {
                    Ok(()) => r.ok("temporal", Some(t.host_port.clone()), format!("{what} is reachable")),
                    Err(e) => r.add(
                        "temporal",
                        Some(t.host_port.clone()),
                        Status::Fail,
                        format!("{what} is unreachable: {e}"),
                        Some("start Temporal (`temporal server start-dev`), or fix sink.config.hostPort".to_owned()),
                    ),
                }
                continue;
            }
            SinkSpec::Http(h) => match url_host_port(&h.url) {
                Some(hp) => (
                    format!("flow {name}: sink {}", h.url),
                    hp,
                    dev::local_port(&h.url),
                    "sink.config.url",
                ),
                None => continue,
            },
            SinkSpec::Grpc(g) => {
                let hp = g
                    .address
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .to_owned();
                let local = dev::local_port(&format!("http://{hp}"));
                (
                    format!("flow {name}: gRPC sink {}", g.address),
                    hp,
                    local,
                    "sink.config.address",
                )
            }
            SinkSpec::Kafka(_) => continue,
        };
        let target = Some(name.to_owned());
        let err = match connect(&host_port) {
            Ok(()) => {
                r.ok("sink", target, format!("{what} is reachable"));
                continue;
            }
            Err(e) => e,
        };
        let app = session.and_then(|s| s.apps.iter().find(|a| a.port.is_some() && a.port == local));
        match (local, session) {
            // Started by the running session, and not answering.
            (Some(_), Some(_)) if app.is_some() => {
                let app = app.expect("checked");
                r.add(
                    "sink",
                    target,
                    Status::Fail,
                    format!("{what} is unreachable: {err}; `{}` (pid {}) runs but does not answer", app.name, app.pid),
                    Some(format!("see `fiso logs --service {}`", app.name)),
                );
            }
            (Some(port), None) if sample_port == Some(port) => r.add(
                "sink",
                target,
                Status::Skip,
                format!(
                    "{what}: the sample service `fiso dev` starts ({}) serves it; not running now",
                    dir.join("user-service").join("main.py").display()
                ),
                None,
            ),
            (Some(port), None) => r.add(
                "sink",
                target,
                Status::Warn,
                format!("{what}: nothing listens on port {port} yet"),
                Some(format!(
                    "start your service before sending events, or let `fiso dev -- <command>` run it (it gets PORT={port})"
                )),
            ),
            _ => r.add(
                "sink",
                target,
                Status::Fail,
                format!("{what} is unreachable: {err}"),
                Some(format!("start the service it points at, or fix {fix}")),
            ),
        }
    }
}

fn url_host_port(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

/// Connects to any address `host_port` resolves to (`localhost` may be `::1` and
/// `127.0.0.1`, with the server on one of them).
fn connect(host_port: &str) -> Result<(), String> {
    let addrs = host_port.to_socket_addrs().map_err(|e| e.to_string())?;
    let mut last = "no address".to_owned();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}
