//! `fiso doctor`: project structure, config validity, free ports, reachable dependencies —
//! each with an actionable message; exit 1 when anything fails.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use fiso_config::flow::{SinkSpec, SourceSpec};
use fiso_config::validate::{normalize_listen_addr, Project};

use crate::project::{ProjectFiles, DEFAULT_DIR};
use crate::style;

/// The ports a default project uses: flow ingestion, link proxy, metrics.
const WELL_KNOWN_PORTS: [u16; 3] = [8081, 3500, 9090];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Project directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

struct Report {
    failures: usize,
}

impl Report {
    fn pass(&mut self, what: impl AsRef<str>) {
        println!("{} {}", style::ok("✓"), what.as_ref());
    }
    fn fail(&mut self, what: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failures += 1;
        println!(
            "{} {}\n    {} {}",
            style::error("✗"),
            what.as_ref(),
            style::dim("→"),
            fix.as_ref()
        );
    }
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let mut r = Report { failures: 0 };
    let project = structure_and_config(&mut r, &args.dir);
    ports(&mut r, project.as_ref());
    if let Some(p) = &project {
        dependencies(&mut r, p);
    }
    if r.failures == 0 {
        println!("\n{} everything looks good", style::ok("✓"));
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\n{} {} problem{} found",
            style::error("✗"),
            r.failures,
            if r.failures == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}

fn structure_and_config(r: &mut Report, dir: &Path) -> Option<Project> {
    if !dir.is_dir() {
        r.fail(
            format!("project directory {} not found", dir.display()),
            "run `fiso init` (or pass --dir)",
        );
        return None;
    }
    r.pass(format!("project directory {}", dir.display()));
    let flows = dir.join("flows");
    let link = dir.join("link").join("config.yaml");
    if flows.is_dir() {
        r.pass(format!("{} exists", flows.display()));
    } else {
        r.fail(
            format!("{} is missing", flows.display()),
            "create it and add a flow, or run `fiso init --force`",
        );
    }
    if link.is_file() {
        r.pass(format!("{} exists", link.display()));
    } else {
        r.fail(
            format!("{} is missing", link.display()),
            "create it (see `fiso init`), even with just `targets: []`",
        );
    }
    let files = match ProjectFiles::read(dir) {
        Ok(f) => f,
        Err(e) => {
            r.fail(
                format!(
                    "cannot read the project: {}",
                    fiso_runtime::error_text::chain(e.as_ref())
                ),
                "check file permissions",
            );
            return None;
        }
    };
    let (project, diags) = files.check();
    let errors = diags.errors().count();
    if errors == 0 {
        r.pass(format!(
            "config valid ({} flow{}{})",
            project.flows.len(),
            if project.flows.len() == 1 { "" } else { "s" },
            if project.link.is_some() {
                " + link"
            } else {
                ""
            }
        ));
    } else {
        let first = diags
            .errors()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        r.fail(
            format!(
                "config has {errors} error{}; first: {first}",
                if errors == 1 { "" } else { "s" }
            ),
            "run `fiso validate` for all of them",
        );
    }
    Some(project)
}

fn ports(r: &mut Report, project: Option<&Project>) {
    let mut addrs: BTreeSet<String> = WELL_KNOWN_PORTS
        .iter()
        .map(|p| format!("0.0.0.0:{p}"))
        .collect();
    if let Some(p) = project {
        for f in &p.flows {
            match &f.config.source {
                SourceSpec::Http(c) => addrs.extend(normalize_listen_addr(&c.listen_addr)),
                SourceSpec::Grpc(c) => addrs.extend(normalize_listen_addr(&c.listen_addr)),
                SourceSpec::Kafka(_) => {}
            }
        }
        if let Some(l) = &p.link {
            addrs.extend(normalize_listen_addr(&l.config.listen_addr));
            addrs.extend(normalize_listen_addr(&l.config.metrics_addr));
        }
    }
    for addr in addrs {
        match TcpListener::bind(&addr) {
            Ok(_) => r.pass(format!("port {addr} is free")),
            Err(e) => r.fail(
                format!("port {addr} is not available: {e}"),
                "stop the process using it (`lsof -i :PORT`), or change listenAddr; if `fiso dev` is running this is expected",
            ),
        }
    }
}

fn dependencies(r: &mut Report, p: &Project) {
    for f in &p.flows {
        let name = f.name();
        let clusters = f.config.kafka.as_ref().map(|k| &k.clusters);
        for (cluster, c) in clusters.into_iter().flatten() {
            for b in &c.brokers {
                reach(
                    r,
                    &format!("flow {name}: Kafka broker {b} (cluster {cluster})"),
                    b,
                    "start the broker, or fix `kafka.clusters` brokers",
                );
            }
        }
        match &f.config.sink {
            SinkSpec::Temporal(t) => reach(
                r,
                &format!("flow {name}: Temporal {}", t.host_port),
                &t.host_port,
                "start Temporal (`temporal server start-dev`) or fix sink.config.hostPort",
            ),
            SinkSpec::Http(h) => {
                if let Some(hp) = url_host_port(&h.url) {
                    reach(
                        r,
                        &format!("flow {name}: sink {}", h.url),
                        &hp,
                        "start the service the sink URL points at, or fix sink.config.url",
                    );
                }
            }
            SinkSpec::Grpc(g) => {
                let addr = g
                    .address
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                reach(
                    r,
                    &format!("flow {name}: gRPC sink {}", g.address),
                    addr,
                    "start the gRPC service or fix sink.config.address",
                );
            }
            SinkSpec::Kafka(_) => {}
        }
    }
}

fn url_host_port(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

fn reach(r: &mut Report, what: &str, host_port: &str, fix: &str) {
    let result = host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_owned()))
        .and_then(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).map_err(|e| e.to_string()));
    match result {
        Ok(_) => r.pass(format!("{what} is reachable")),
        Err(e) => r.fail(format!("{what} is unreachable: {e}"), fix),
    }
}
