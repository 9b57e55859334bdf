//! `execution: longRunning`: a WASIX server Fiso starts, supervises and sends HTTP to.
//!
//! The guest runs on its own thread, reads its port from `$PORT` and listens on it (an "any
//! address" listener is bound to `listenHost`, loopback by default). The supervisor:
//!
//! * probes it — until the first success every [`STARTUP_PROBE`], then every
//!   `healthCheckInterval` — with `GET healthCheck` (any 2xx is healthy) or, without a
//!   `healthCheck`, a TCP connect to its port; the app is ready while the last probe passed;
//! * restarts it when it exits, traps or hits its memory limit, after a doubling delay
//!   ([`RESTART_INITIAL`] up to [`RESTART_MAX`]; reset once the app has been healthy), showing
//!   the exit and the next attempt on `/readyz` (`app/<name>`), and "crash loop" from the third
//!   consecutive failure;
//! * stops it on shutdown or reload: the guest's metering points are forced to 0 and its WASIX
//!   process is sent SIGKILL, and one connection to its port wakes a guest blocked in `accept`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fiso_runtime::apps::{AppClient, AppError, AppFuture, AppState, MAX_BODY};
use fiso_runtime::backoff::Restart;
use fiso_runtime::Readiness;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use wasmer_wasix::virtual_fs::StaticFile;

use crate::engine::{Exit, Guest, LogLines, RunHandle, Stdio, StopReason};
use crate::metrics::AppMetrics;

pub(crate) const RESTART_INITIAL: Duration = Duration::from_millis(200);
pub(crate) const RESTART_MAX: Duration = Duration::from_secs(30);
/// Probe interval until an app has answered its first probe.
const STARTUP_PROBE: Duration = Duration::from_millis(50);
/// How long a stopped guest may take to end before it is left behind (its thread then ends at
/// its next instruction or host call).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Consecutive failures from which `/readyz` says "crash loop".
const CRASH_LOOP: u32 = 3;

/// The app as callers see it.
pub(crate) struct LongRunningApp {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    timeout: Duration,
    state: Arc<Mutex<AppState>>,
    client: Client<HttpConnector, Full<Bytes>>,
    metrics: AppMetrics,
}

impl LongRunningApp {
    fn set_state(&self, state: AppState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, AppError> {
        let (mut parts, body) = request.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        parts.uri = format!("http://{}{pq}", self.addr)
            .parse()
            .map_err(|_| self.failed("the request path is not a valid URI"))?;
        parts.headers.remove(http::header::HOST);
        let request = http::Request::from_parts(parts, Full::new(body));
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| self.failed(&format!("request failed: {}", source_chain(&e))))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    AppError::ResponseTooLarge {
                        app: self.name.clone(),
                        limit: MAX_BODY,
                    }
                } else {
                    self.failed(&format!("response body failed: {e}"))
                }
            })?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    fn failed(&self, message: &str) -> AppError {
        AppError::Failed {
            app: self.name.clone(),
            message: message.to_owned(),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl AppClient for LongRunningApp {
    fn name(&self) -> &str {
        &self.name
    }
    fn execution(&self) -> &'static str {
        "longRunning"
    }
    fn state(&self) -> AppState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn call(&self, request: http::Request<Bytes>) -> AppFuture<'_> {
        Box::pin(async move {
            let result = match tokio::time::timeout(self.timeout, self.send(request)).await {
                Ok(r) => r,
                Err(_) => Err(AppError::Timeout {
                    app: self.name.clone(),
                    timeout: self.timeout,
                }),
            };
            let status = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => e.code().to_owned(),
            };
            self.metrics.request(&self.name, &status);
            result
        })
    }
}

/// What the supervisor needs besides the guest.
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) timeout: Duration,
    pub(crate) health_check: Option<String>,
    pub(crate) health_check_interval: Duration,
}

/// A running supervisor; [`Supervisor::stop`] ends the app.
pub(crate) struct Supervisor {
    pub(crate) app: Arc<LongRunningApp>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    pub(crate) fn start(
        guest: Arc<Guest>,
        settings: Settings,
        readiness: Readiness,
        metrics: AppMetrics,
    ) -> Self {
        let app = Arc::new(LongRunningApp {
            name: settings.name.clone(),
            addr: settings.addr,
            timeout: settings.timeout,
            state: Arc::new(Mutex::new(AppState::NotReady("starting".into()))),
            client: Client::builder(TokioExecutor::new()).build_http(),
            metrics: metrics.clone(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(
            guest,
            settings,
            app.clone(),
            readiness,
            metrics,
            stop.clone(),
        ));
        Supervisor { app, stop, task }
    }

    /// Stops the guest and waits for the supervisor to end.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn component(name: &str) -> String {
    format!("app/{name}")
}

async fn supervise(
    guest: Arc<Guest>,
    settings: Settings,
    app: Arc<LongRunningApp>,
    readiness: Readiness,
    metrics: AppMetrics,
    stop: CancellationToken,
) {
    let name = settings.name.clone();
    let mut backoff = Restart::new(RESTART_INITIAL, RESTART_MAX);
    loop {
        let run = Arc::new(RunHandle::default());
        let (done_tx, mut done_rx) = oneshot::channel();
        let spawned = {
            let guest = guest.clone();
            let run = run.clone();
            std::thread::Builder::new()
                .name(format!("fiso-app-{name}"))
                .spawn(move || {
                    let stdout = LogLines::new(&guest.app, "stdout");
                    let stderr = LogLines::new(&guest.app, "stderr");
                    let exit = guest.run(
                        &run,
                        Stdio {
                            stdin: Box::new(StaticFile::new(Vec::new())),
                            stdout: Box::new(stdout.clone()),
                            stderr: Box::new(stderr.clone()),
                        },
                    );
                    stdout.flush_rest();
                    stderr.flush_rest();
                    let _ = done_tx.send(exit);
                })
        };
        if let Err(e) = spawned {
            let reason = format!("cannot start a thread for the app: {e}");
            tracing::error!(app = %name, "{reason}");
            readiness.set_not_ready(component(&name), reason.clone());
            app.set_state(AppState::NotReady(reason));
            if !backoff.sleep(&stop).await {
                return;
            }
            continue;
        }
        tracing::info!(app = %name, addr = %settings.addr, "app started");
        let starting = if backoff.failures() == 0 {
            "starting".to_owned()
        } else {
            format!("restarting (attempt {})", backoff.failures() + 1)
        };
        readiness.set_not_ready(component(&name), starting.clone());
        app.set_state(AppState::NotReady(starting));

        let mut ever_healthy = false;
        let exit = tokio::select! {
            exit = &mut done_rx => exit.unwrap_or_else(|_| Exit::Trap("the app thread panicked".into())),
            () = probe_loop(&settings, &app, &run, &readiness, &metrics, &mut ever_healthy) => unreachable!("probing never ends"),
            () = stop.cancelled() => {
                run.stop(StopReason::Shutdown);
                // Wakes a guest blocked in `accept`; the refused or accepted connection is dropped.
                let _ = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(settings.addr)).await;
                metrics.set_up(&name, false);
                app.set_state(AppState::NotReady("stopped".into()));
                readiness.remove(&component(&name));
                if tokio::time::timeout(STOP_GRACE, done_rx).await.is_err() {
                    tracing::warn!(app = %name, "app did not stop within {}; left to end on its own", humantime::format_duration(STOP_GRACE));
                } else {
                    tracing::info!(app = %name, "app stopped");
                }
                return;
            }
        };
        metrics.set_up(&name, false);
        metrics.set_memory(&name, run.memory.load(std::sync::atomic::Ordering::Relaxed));
        metrics.restart(&name);
        if ever_healthy {
            backoff.reset();
        }
        let delay = backoff.delay();
        let failures = backoff.failures() + 1;
        let reason = if failures >= CRASH_LOOP {
            format!(
                "crash loop: {exit} ({failures} times in a row); restarting in {}",
                humantime::format_duration(delay)
            )
        } else {
            format!(
                "{exit}; restarting in {}",
                humantime::format_duration(delay)
            )
        };
        tracing::error!(app = %name, "app {reason}");
        readiness.set_not_ready(component(&name), reason.clone());
        app.set_state(AppState::NotReady(reason));
        if !backoff.sleep(&stop).await {
            readiness.remove(&component(&name));
            return;
        }
    }
}

/// Probes the app forever, updating its state, `/readyz` and metrics.
async fn probe_loop(
    settings: &Settings,
    app: &LongRunningApp,
    run: &RunHandle,
    readiness: &Readiness,
    metrics: &AppMetrics,
    ever_healthy: &mut bool,
) {
    let name = &settings.name;
    let mut healthy = false;
    loop {
        let interval = if *ever_healthy {
            settings.health_check_interval
        } else {
            STARTUP_PROBE
        };
        tokio::time::sleep(interval).await;
        metrics.set_memory(name, run.memory.load(std::sync::atomic::Ordering::Relaxed));
        let wait = settings.timeout.min(settings.health_check_interval);
        let result = match &settings.health_check {
            Some(path) => http_probe(app, path, wait).await,
            None => tokio::time::timeout(wait, tokio::net::TcpStream::connect(settings.addr))
                .await
                .map_err(|_| "connect timed out".to_owned())
                .and_then(|r| r.map(drop).map_err(|e| format!("connect failed: {e}"))),
        };
        // Before the first success, a refused connection is the app still starting.
        if !*ever_healthy && result.is_err() {
            continue;
        }
        if settings.health_check.is_some() {
            metrics.health_check(name, result.is_ok());
        }
        match result {
            Ok(()) => {
                if !healthy {
                    tracing::info!(app = %name, "app is healthy");
                }
                healthy = true;
                *ever_healthy = true;
                readiness.set_ready(component(name));
                app.set_state(AppState::Ready);
                metrics.set_up(name, true);
            }
            Err(e) => {
                let reason = format!("health check failed: {e}");
                if healthy {
                    tracing::warn!(app = %name, "app {reason}");
                }
                healthy = false;
                readiness.set_not_ready(component(name), reason.clone());
                app.set_state(AppState::NotReady(reason));
                metrics.set_up(name, false);
            }
        }
    }
}

async fn http_probe(app: &LongRunningApp, path: &str, wait: Duration) -> Result<(), String> {
    let request = http::Request::get(path)
        .body(Bytes::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(wait, app.send(request)).await {
        Err(_) => Err(format!(
            "GET {path} took longer than {}",
            humantime::format_duration(wait)
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!("GET {path} answered {}", r.status().as_u16())),
    }
}
