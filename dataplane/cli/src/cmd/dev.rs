//! `fiso dev`: the project's flows, link proxy and apps (`fiso/apps/*.yaml`, when the directory
//! exists) in one process, pretty logs (also written to `fiso/.dev/dev.log` for `fiso logs`),
//! live reload, and the URLs and a `curl` to try it. Next to it runs your app
//! (`fiso dev -- <command>`, as `dapr run -- …` does) or else the scaffold's sample service,
//! output inline. `--docker` writes a compose file and image instead.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};

use anyhow::{bail, Result};
use clap::Args;
use fiso_config::flow::{SinkSpec, SourceSpec};
use fiso_config::validate::Project;
use fiso_flow::topology::runtime::{
    FlowRuntime, Observability, RuntimeOptions, DEFAULT_METRICS_ADDR,
};
use fiso_link::LinkRuntime;
use fiso_runtime::health::{serve, HealthState};
use fiso_runtime::logging::{LogFormat, LogSettings};
use fiso_runtime::shutdown::shutdown_signal;
use tokio_util::sync::CancellationToken;

use crate::cmd::apps::{AppsSource, RunningApps};
use crate::cmd::flow::tokio_runtime;
use crate::project::{ProjectFiles, DEFAULT_DIR};
use crate::style;

pub mod app;
mod docker;
pub mod state;

use app::{AppSpec, RunningApp};

/// `println!` that ignores a closed stdout: `fiso dev | head` or a caller that stops reading
/// after the URL must not take the running data plane down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Args)]
#[command(after_help = APP_HELP)]
pub struct DevArgs {
    /// Project directory created by `fiso init`. Default: ./fiso, or the project the current
    /// directory is in.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Metrics and health server, shared by flows, link and apps.
    #[arg(long, env = "FISO_METRICS_ADDR", hide_env_values = true, default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,
    /// Do not start the sample service.
    #[arg(long)]
    pub no_service: bool,
    /// Write fiso/docker-compose.yml and a FROM-scratch data-plane image (this binary and the
    /// libraries it loads) instead of running locally. Linux hosts: the compose file uses host
    /// networking so the addresses in the project keep working.
    #[arg(long)]
    pub docker: bool,
    /// Create the default project first (`fiso init --defaults`) when there is none.
    #[arg(long)]
    pub init: bool,
    /// Your app's name: its output's `[NAME]` prefix and `fiso logs --service NAME`.
    /// Default: the command's file name.
    #[arg(long, value_name = "NAME", requires = "command")]
    pub app_name: Option<String>,
    /// How long your app has to stop after SIGTERM before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_timeout: std::time::Duration,
    /// Your app, run next to the data plane once it is up (instead of the sample service).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

const APP_HELP: &str = "\
Your app: `fiso dev -- <command> [args…]` runs it next to the data plane, as `dapr run -- …` does.
  * Its output is shown as `[NAME] …` and kept for `fiso logs --service NAME`.
  * Its environment adds PORT (the port of the flows' local HTTP sink, the one the app serves;
    unless PORT is set already), FISO_LINK_URL (http://127.0.0.1:3500/link with the link's real
    address) and FISO_LINK_PORT.
  * When it exits, fiso dev stops and exits with its status (128+N for signal N).
  * Ctrl-C stops it first: SIGTERM to its process group, SIGKILL after --stop-timeout or at a
    second Ctrl-C.
Without a command, fiso dev runs the scaffold's sample service (fiso/user-service) the same way,
except that the data plane outlives it.
A `fiso dev` killed outright (SIGKILL) has its app sent SIGTERM (Linux); what the app itself
started is then the app's to stop.";

/// What an app is to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `fiso dev -- <command>`: the session ends with it.
    User,
    /// The scaffold's sample service: the data plane outlives it.
    Sample,
}

pub fn run(args: DevArgs) -> Result<ExitCode> {
    let dir = match args.dir.clone().or_else(crate::project::find) {
        Some(dir) => dir,
        None if args.init => {
            crate::cmd::init::run(crate::cmd::init::InitArgs::defaults())?;
            PathBuf::from(DEFAULT_DIR)
        }
        None => bail!(
            "no Fiso project here (no ./{DEFAULT_DIR}, and the current directory is not inside one): run `fiso init` or `fiso dev --init`, or pass --dir"
        ),
    };
    let flows_dir = dir.join("flows");
    if !flows_dir.is_dir() {
        bail!(
            "{} not found: run `fiso init` first (or pass --dir)",
            flows_dir.display()
        );
    }
    let user_app = if args.command.is_empty() {
        None
    } else {
        Some(AppSpec::new(args.app_name.clone(), args.command.clone())?)
    };
    let files = ProjectFiles::read(&dir)?;
    let (project, diags) = files.check();
    for d in diags.iter() {
        eprintln!("{d}");
    }
    let invalid_flows: Vec<(&str, usize)> = files
        .flows
        .iter()
        .map(|f| {
            let errors = diags
                .errors()
                .filter(|d| d.file.as_deref() == Some(f.path.as_str()))
                .count();
            (f.path.as_str(), errors)
        })
        .filter(|(_, errors)| *errors > 0)
        .collect();
    if args.docker {
        return docker::write(&dir, &project);
    }
    let session = state::Session::acquire(&dir)?;
    let log_file = state::data_plane_log(&dir);
    // A fresh log per session, so `fiso logs` shows this run.
    let _ = std::fs::remove_file(&log_file);
    let tracing = project
        .link
        .as_ref()
        .and_then(|l| l.config.tracing.as_ref());
    let _logs = LogSettings::from_env_and_file(tracing)?
        .with_format(LogFormat::Pretty)
        .with_file(&log_file)
        .init()?;

    tokio_runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let obs = Observability::default();
        let health_stop = CancellationToken::new();
        let health = serve(
            &args.metrics_addr,
            HealthState::new(obs.metrics.clone(), obs.readiness.clone()).with_config(obs.config.clone()),
            health_stop.clone(),
        )
        .await
        .map_err(|e| with_port_fix(e, "stop it, or pass --metrics-addr to use another port"))?;
        let apps_dir = dir.join("apps");
        let apps = if apps_dir.is_dir() {
            Some(RunningApps::start(AppsSource::Dir(apps_dir), &obs).await?)
        } else {
            None
        };
        let runtime = FlowRuntime::start_with(&flows_dir, &obs, RuntimeOptions::dev())?;
        let link_config = dir.join("link").join("config.yaml");
        let link = if link_config.is_file() {
            Some(LinkRuntime::start(&link_config, &obs).await.map_err(|e| {
                with_port_fix(e, &format!("stop it, or change listenAddr in {}", link_config.display()))
            })?)
        } else {
            None
        };
        obs.readiness.mark_started();

        let port = app_port(&project).filter(|_| std::env::var_os("PORT").is_none());
        let app = match user_app {
            Some(spec) => Some((spec, Role::User)),
            None if args.no_service => None,
            None => sample_service(&dir).map(|spec| (spec, Role::Sample)),
        }
        .map(|(mut spec, role)| {
            spec.env = app_env(port, link.as_ref().map(LinkRuntime::local_addr));
            spec.stop_timeout = args.stop_timeout;
            (spec, role)
        });
        banner(&project, &invalid_flows, &runtime, link.as_ref(), health.local_addr, &dir, app.as_ref().map(|(s, _)| s));
        if app.is_none() && !args.no_service && dir.join("temporal-worker").is_dir() {
            say!(
                "{} run the Temporal worker with it: fiso dev --app-name worker -- python3 {}",
                style::dim("→"),
                dir.join("temporal-worker").join("worker.py").display()
            );
        }
        // Spawned here, on the `block_on` thread (see `RunningApp::spawn`).
        let mut failed = None;
        let mut running = match app {
            Some((spec, role)) => match RunningApp::spawn(&spec, state::service_log(&dir, &spec.name)) {
                Ok(app) => Some((app, role)),
                Err(e) if role == Role::Sample => {
                    say!(
                        "{} could not start the sample service: {}; run it yourself, or pass --no-service",
                        style::warning("!"),
                        fiso_runtime::error_text::chain(e.as_ref())
                    );
                    None
                }
                Err(e) => {
                    failed = Some(e);
                    None
                }
            },
            None => None,
        };
        session.publish(&state::SessionInfo {
            pid: Some(std::process::id()),
            metrics_addr: Some(health.local_addr),
            apps: running
                .iter()
                .map(|(a, _)| state::AppInfo { name: a.name.clone(), pid: a.pid, port })
                .collect(),
        })?;
        let mut code = ExitCode::SUCCESS;
        if failed.is_none() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                status = wait_app(&mut running) => {
                    let (app, role) = running.take().expect("an app exited");
                    let name = app.name.clone();
                    app.stop(interrupted()).await;
                    say!("{} [{name}] {}", style::warning("!"), app::describe(status));
                    if role == Role::User {
                        code = ExitCode::from(app::exit_code(status));
                    } else {
                        say!("  the data plane keeps running; see `fiso logs --service {name}`");
                        shutdown.cancelled().await;
                    }
                }
            }
        }
        if let Some((app, _)) = running {
            let name = app.name.clone();
            // Listening before saying so: a Ctrl-C right after the message counts.
            let again = interrupted();
            say!("{} [{name}] stopping (SIGTERM; Ctrl-C again to kill it now)", style::dim("→"));
            let status = app.stop(again).await;
            say!("{} [{name}] stopped ({})", style::dim("→"), app::describe(status));
        }
        if let Some(link) = link {
            link.shutdown().await;
        }
        runtime.shutdown().await;
        if let Some(apps) = apps {
            apps.shutdown().await;
        }
        health_stop.cancel();
        let _ = health.handle.await;
        match failed {
            Some(e) => Err(e),
            None => Ok(code),
        }
    })
}

/// `fiso produce` sending the sample event (or a small one) to a Kafka flow's topic. Run from
/// where `fiso dev` runs, `produce` finds the brokers in the default project itself.
fn produce_line(topic: &str, brokers: &str, sample: &Path, dir: &Path) -> String {
    let mut line = format!("fiso produce --topic {topic}");
    if dir != Path::new(DEFAULT_DIR) && !brokers.is_empty() {
        line.push_str(&format!(" --brokers {brokers}"));
    }
    if sample.is_file() {
        line.push_str(&format!(" --file {}", sample.display()));
    } else {
        line.push_str(r#" --json '{"order_id":"TEST-001"}'"#);
    }
    line
}

/// `error`, and when a port was taken what the user can do about it in `fiso dev`.
fn with_port_fix<E>(error: E, fix: &str) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
        {
            return anyhow::anyhow!("{}; {fix}", fiso_runtime::error_text::chain(&error));
        }
        next = e.source();
    }
    error.into()
}

/// Completes at the next SIGINT or SIGTERM from now (the first one started the shutdown).
fn interrupted() -> impl std::future::Future<Output = ()> {
    let next = fiso_runtime::shutdown::next_signal();
    async move {
        next.await;
    }
}

async fn wait_app(app: &mut Option<(RunningApp, Role)>) -> ExitStatus {
    match app {
        Some((a, _)) => a.wait().await,
        None => std::future::pending().await,
    }
}

/// The scaffold's sample service, when the project has one: `python3 user-service/main.py`.
pub fn sample_service(dir: &Path) -> Option<AppSpec> {
    let script = dir.join("user-service").join("main.py");
    script.is_file().then(|| AppSpec {
        name: SAMPLE_SERVICE.to_owned(),
        command: vec!["python3".into(), script.into_os_string()],
        env: Vec::new(),
        stop_timeout: app::STOP_TIMEOUT,
    })
}

/// The name the sample service runs under.
pub const SAMPLE_SERVICE: &str = "user-service";

/// The port the app is to serve (`PORT`): the one port every flow's HTTP sink on this machine
/// points at, if they agree on one.
pub fn app_port(project: &Project) -> Option<u16> {
    let mut ports = project.flows.iter().filter_map(|f| match &f.config.sink {
        SinkSpec::Http(h) => local_port(&h.url),
        _ => None,
    });
    let first = ports.next()?;
    ports.all(|p| p == first).then_some(first)
}

/// The port of a URL on this machine (`localhost`, a loopback or unspecified address).
pub fn local_port(url: &str) -> Option<u16> {
    let url = url::Url::parse(url).ok()?;
    let local = match url.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback() || ip.is_unspecified(),
        url::Host::Ipv6(ip) => ip.is_loopback() || ip.is_unspecified(),
    };
    local.then(|| url.port_or_known_default()).flatten()
}

/// The environment an app gets: where to serve, where the link proxy is.
fn app_env(port: Option<u16>, link: Option<SocketAddr>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(port) = port {
        env.push(("PORT".to_owned(), port.to_string()));
    }
    if let Some(mut link) = link {
        // A proxy listening on every interface is reached on loopback.
        match link.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => link.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => link.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        env.push(("FISO_LINK_URL".to_owned(), format!("http://{link}/link")));
        env.push(("FISO_LINK_PORT".to_owned(), link.port().to_string()));
    }
    env
}

fn banner(
    project: &fiso_config::validate::Project,
    invalid_flows: &[(&str, usize)],
    runtime: &FlowRuntime,
    link: Option<&LinkRuntime>,
    metrics: SocketAddr,
    dir: &Path,
    app: Option<&AppSpec>,
) {
    say!("\n{}", style::ok("Fiso dev is running"));
    let sample = dir.join("sample-event.json");
    let mut curl = None;
    let mut produce = None;
    for f in &project.flows {
        match &f.config.source {
            SourceSpec::Http(c) => {
                if let Some(addr) = runtime.http_addr(&c.listen_addr) {
                    let url = format!("http://localhost:{}{}", addr.port(), c.path);
                    say!("  flow {:<24} POST {url}", f.name());
                    curl.get_or_insert(url);
                }
            }
            SourceSpec::Kafka(k) => {
                let brokers = f
                    .config
                    .kafka
                    .as_ref()
                    .and_then(|kafka| kafka.clusters.get(&k.cluster))
                    .map(|c| c.brokers.join(","))
                    .unwrap_or_default();
                say!(
                    "  flow {:<24} kafka topic {} on {brokers}",
                    f.name(),
                    k.topic
                );
                produce.get_or_insert_with(|| produce_line(&k.topic, &brokers, &sample, dir));
            }
            SourceSpec::Grpc(c) => say!(
                "  flow {:<24} gRPC fiso.v1.EventService on {}",
                f.name(),
                c.listen_addr
            ),
        }
        if let SinkSpec::Http(s) = &f.config.sink {
            say!("  {:<29} → {}", "", s.url);
        }
    }
    for (file, errors) in invalid_flows {
        let plural = if *errors == 1 { "" } else { "s" };
        say!(
            "  {} {file}: not started, {errors} error{plural} (above); it starts once the file is fixed",
            style::error("✗")
        );
    }
    if let (Some(link), Some(cfg)) = (link, &project.link) {
        for t in &cfg.config.targets {
            let name = t.name.as_deref().unwrap_or_default();
            let to = match (&t.kafka, &t.host) {
                (Some(k), _) => format!("kafka topic {}", k.topic),
                (None, Some(host)) => format!("{}://{host}", t.protocol.as_str()),
                (None, None) => String::new(),
            };
            say!(
                "  link {name:<24} http://localhost:{}/link/{name}/  → {to}",
                link.local_addr().port()
            );
        }
    }
    say!("  metrics                        http://localhost:{}/metrics  (/healthz, /readyz, /config)", metrics.port());
    if let Some(app) = app {
        let port = app
            .env
            .iter()
            .find(|(k, _)| k == "PORT")
            .map(|(_, v)| format!("  (PORT={v})"))
            .unwrap_or_default();
        say!("  app  {:<24}  {}{port}", app.name, app.command_line());
    }
    if curl.is_some() || produce.is_some() {
        say!("\nTry it:");
    }
    if let Some(url) = curl {
        let body = if sample.is_file() {
            format!("@{}", sample.display())
        } else {
            r#"'{"order_id": "12345", "amount": 99.99}'"#.to_owned()
        };
        say!("  curl -X POST {url} -H 'Content-Type: application/json' -d {body}");
    }
    if let Some(produce) = produce {
        say!("  {produce}");
    }
    let app_logs = app
        .map(|a| format!(", `fiso logs --service {}`", a.name))
        .unwrap_or_default();
    say!("\nEdit files under {}: changes apply live. Logs: `fiso logs --follow`{app_logs}. Stop with Ctrl-C.\n", dir.join("flows").display());
}
