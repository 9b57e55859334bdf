//! `fiso dev`: the project's flows, link proxy and apps (`fiso/apps/*.yaml`, when the directory
//! exists) in one process, pretty logs (also written to
//! `fiso/.dev/dev.log` for `fiso logs`), live reload, the sample service next to them, and the
//! URLs and a `curl` to try it. `--docker` writes a compose file and image instead.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use fiso_config::flow::{SinkSpec, SourceSpec};
use fiso_flow::topology::runtime::{FlowRuntime, Observability, RuntimeOptions};
use fiso_link::LinkRuntime;
use fiso_runtime::health::{serve, HealthState};
use fiso_runtime::logging::{LogFormat, LogSettings};
use fiso_runtime::shutdown::shutdown_signal;
use tokio_util::sync::CancellationToken;

use crate::cmd::apps::{AppsSource, RunningApps};
use crate::cmd::flow::tokio_runtime;
use crate::cmd::logs::DEV_LOG;
use crate::project::{ProjectFiles, DEFAULT_DIR};
use crate::style;

mod docker;

/// `println!` that ignores a closed stdout: `fiso dev | head` or a caller that stops reading
/// after the URL must not take the running data plane down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Project directory created by `fiso init`.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Metrics and health server.
    #[arg(long, default_value = ":9090")]
    pub metrics_addr: String,
    /// Do not start the sample service.
    #[arg(long)]
    pub no_service: bool,
    /// Write fiso/docker-compose.yml and the data-plane image instead of running locally.
    #[arg(long)]
    pub docker: bool,
    /// Create the default project first (`fiso init --defaults`) when there is none.
    #[arg(long)]
    pub init: bool,
}

pub fn run(args: DevArgs) -> Result<ExitCode> {
    let flows_dir = args.dir.join("flows");
    if args.init && !args.dir.exists() && args.dir == Path::new(DEFAULT_DIR) {
        crate::cmd::init::run(crate::cmd::init::InitArgs::defaults())?;
    }
    if !flows_dir.is_dir() {
        bail!(
            "{} not found: run `fiso init` first (or pass --dir)",
            flows_dir.display()
        );
    }
    let files = ProjectFiles::read(&args.dir)?;
    let (project, diags) = files.check();
    for d in diags.iter() {
        eprintln!("{d}");
    }
    if args.docker {
        return docker::write(&args.dir, &project);
    }
    let dev_dir = args.dir.join(".dev");
    std::fs::create_dir_all(&dev_dir).with_context(|| format!("creating {}", dev_dir.display()))?;
    let log_file = dev_dir.join(DEV_LOG);
    // A fresh log per session, so `fiso logs` shows this run.
    let _ = std::fs::remove_file(&log_file);
    let _logs = LogSettings::from_env()?
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
        .await?;
        let apps_dir = args.dir.join("apps");
        let apps = if apps_dir.is_dir() {
            Some(RunningApps::start(AppsSource::Dir(apps_dir), &obs).await?)
        } else {
            None
        };
        let runtime = FlowRuntime::start_with(&flows_dir, &obs, RuntimeOptions::dev())?;
        let link_config = args.dir.join("link").join("config.yaml");
        let link = if link_config.is_file() {
            Some(LinkRuntime::start(&link_config, &obs).await?)
        } else {
            None
        };
        obs.readiness.mark_started();
        let mut service = if args.no_service { None } else { start_service(&args.dir, &dev_dir).await };
        banner(&project, &runtime, link.as_ref(), health.local_addr, &args.dir);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            exited = wait_child(&mut service) => {
                if let Some(status) = exited {
                    eprintln!("{} the sample service exited ({status}); see {}", style::warning("!"), dev_dir.join("user-service.log").display());
                }
                shutdown.cancelled().await;
            }
        }
        if let Some(child) = service.as_mut() {
            let _ = child.kill().await;
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
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
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

async fn wait_child(child: &mut Option<tokio::process::Child>) -> Option<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await.ok(),
        None => std::future::pending().await,
    }
}

/// Starts `user-service/main.py` when the project has one and `python3` is available.
async fn start_service(dir: &Path, dev_dir: &Path) -> Option<tokio::process::Child> {
    let script = dir.join("user-service").join("main.py");
    if !script.is_file() {
        let worker = dir.join("temporal-worker");
        if worker.is_dir() {
            say!(
                "{} start the Temporal worker yourself: see {}",
                style::dim("→"),
                worker.join("README.md").display()
            );
        }
        return None;
    }
    let log_path = dev_dir.join("user-service.log");
    let log = std::fs::File::create(&log_path).ok()?;
    let err = log.try_clone().ok()?;
    match tokio::process::Command::new("python3")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => {
            say!(
                "{} user-service started (python3 {}, log {})",
                style::ok("✓"),
                script.display(),
                log_path.display()
            );
            Some(child)
        }
        Err(e) => {
            say!(
                "{} could not start the sample service ({e}); run it yourself: python3 {}",
                style::warning("!"),
                script.display()
            );
            None
        }
    }
}

fn banner(
    project: &fiso_config::validate::Project,
    runtime: &FlowRuntime,
    link: Option<&LinkRuntime>,
    metrics: std::net::SocketAddr,
    dir: &Path,
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
    say!("\nEdit files under {}/flows: changes apply live. Logs: `fiso logs --follow`. Stop with Ctrl-C.\n", dir.display());
}
