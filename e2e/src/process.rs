//! `fiso flow` as a child process: spawned on a config directory with the metrics server on a
//! free port, its JSON logs captured, its ports read back from those logs.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::logs::{LogLine, Logs};
use crate::metrics::Metrics;
use crate::{client, eventually, Answer, DEADLINE};

/// Environment variables that would send a child's requests (to sinks, to the API server)
/// through a proxy.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A child process of a test: no stdin, stdout dropped, stderr (its logs) piped for capture,
/// no proxy, killed when its handle is dropped.
pub(crate) fn captured(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// A running `fiso flow`; killed when dropped (its logs are printed if the test failed).
pub struct FisoProcess {
    child: Child,
    pid: u32,
    logs: Logs,
    metrics_addr: SocketAddr,
    client: reqwest::Client,
}

impl FisoProcess {
    /// `fiso flow --config-dir <dir> --metrics-addr 127.0.0.1:0`, returned once the initial
    /// config is loaded (`/readyz` says `started`).
    pub async fn start(config_dir: &Path) -> FisoProcess {
        Self::start_with_env(config_dir, std::iter::empty::<(&str, &str)>()).await
    }

    /// [`FisoProcess::start`] with extra environment variables.
    pub async fn start_with_env<K, V>(
        config_dir: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> FisoProcess
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let args: [&OsStr; 3] = [
            "flow".as_ref(),
            "--config-dir".as_ref(),
            config_dir.as_os_str(),
        ];
        Self::spawn(&args, env).await
    }

    /// [`FisoProcess::start`] with at most `nofile` open file descriptors (`RLIMIT_NOFILE`).
    pub async fn start_with_fd_limit(config_dir: &Path, nofile: u64) -> FisoProcess {
        let args: [&OsStr; 3] = [
            "flow".as_ref(),
            "--config-dir".as_ref(),
            config_dir.as_os_str(),
        ];
        Self::spawn_limited(&args, std::iter::empty::<(&str, &str)>(), Some(nofile)).await
    }

    /// `fiso run` (flows + link, as the injected sidecar runs it) with the given flow directory
    /// and link config, returned once started.
    pub async fn start_run(config_dir: &Path, link_config: &Path) -> FisoProcess {
        let args: [&OsStr; 5] = [
            "run".as_ref(),
            "--config-dir".as_ref(),
            config_dir.as_os_str(),
            "--link-config".as_ref(),
            link_config.as_os_str(),
        ];
        Self::spawn(&args, std::iter::empty::<(&str, &str)>()).await
    }

    /// `fiso run` with flows, link and apps (the all-in-one mode), returned once started.
    pub async fn start_run_with_apps(
        config_dir: &Path,
        link_config: &Path,
        apps_config: &Path,
    ) -> FisoProcess {
        let args: [&OsStr; 7] = [
            "run".as_ref(),
            "--config-dir".as_ref(),
            config_dir.as_os_str(),
            "--link-config".as_ref(),
            link_config.as_os_str(),
            "--apps-config".as_ref(),
            apps_config.as_os_str(),
        ];
        Self::spawn(&args, std::iter::empty::<(&str, &str)>()).await
    }

    /// `fiso <args>` (a data-plane verb: `wasmer`, `run`, ...) with the metrics server on a free
    /// port and JSON logs, returned once started.
    pub async fn start_args(args: &[&OsStr]) -> FisoProcess {
        Self::spawn(args, std::iter::empty::<(&str, &str)>()).await
    }

    /// `fiso link --config <config>` (its `listenAddr` should be `127.0.0.1:0`), returned once
    /// started.
    pub async fn start_link(config: &Path) -> FisoProcess {
        Self::start_link_with_env(config, std::iter::empty::<(&str, &str)>()).await
    }

    /// [`Self::start_link`] with extra environment variables.
    pub async fn start_link_with_env<K, V>(
        config: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> FisoProcess
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let args: [&OsStr; 3] = ["link".as_ref(), "--config".as_ref(), config.as_os_str()];
        Self::spawn(&args, env).await
    }

    /// Where the link proxy listens, from its `link proxy listening` log line.
    pub async fn link_addr(&self) -> SocketAddr {
        self.wait_for_log(|l| l.is("link proxy listening"))
            .await
            .addr()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn spawn<K, V>(args: &[&OsStr], env: impl IntoIterator<Item = (K, V)>) -> FisoProcess
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        Self::spawn_limited(args, env, None).await
    }

    async fn spawn_limited<K, V>(
        args: &[&OsStr],
        env: impl IntoIterator<Item = (K, V)>,
        nofile: Option<u64>,
    ) -> FisoProcess
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        // The first call builds the binary: not on an async worker.
        let bin = tokio::task::spawn_blocking(crate::fiso_bin)
            .await
            .expect("locating the fiso binary");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("FISO_LOG_FORMAT", "json")
            .env("FISO_LOG_LEVEL", "info")
            .envs(env);
        captured(&mut cmd);
        if let Some(n) = nofile {
            // SAFETY: between fork and exec the closure only calls setrlimit(2), which is
            // async-signal-safe, and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().expect("spawning fiso flow");
        let pid = child.id().expect("a running child has a pid");
        let logs = Logs::capture(child.stderr.take().expect("stderr is piped"));
        let metrics_addr = logs
            .wait_for(|l| l.is("metrics server listening"), DEADLINE)
            .await
            .and_then(|l| l.addr())
            .unwrap_or_else(|e| panic!("fiso flow did not start its metrics server: {e}"));
        let fiso = FisoProcess {
            child,
            pid,
            logs,
            metrics_addr,
            client: client(),
        };
        let started = eventually(DEADLINE, || async {
            fiso.try_readyz()
                .await
                .filter(|(_, body)| body["started"] == true)
        })
        .await;
        assert!(
            started.is_some(),
            "fiso flow never finished loading its config\n{}",
            fiso.logs.tail(40)
        );
        fiso
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// User + system CPU time of the process so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("/proc/<pid>/stat");
        // The command name may hold spaces; the fields after it are space-separated.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
            .split(' ')
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    /// Waits until the process has used `seconds` more CPU than it had: something burns it.
    pub async fn wait_for_cpu(&self, seconds: f64) {
        let before = self.cpu_seconds();
        let burning = eventually(DEADLINE, || async {
            (self.cpu_seconds() > before + seconds).then_some(())
        })
        .await;
        assert!(
            burning.is_some(),
            "the process did not burn {seconds} s of CPU"
        );
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Index of the next log line, to wait for lines written after this point.
    pub fn log_mark(&self) -> usize {
        self.logs.mark()
    }

    /// The first log line (since the start) matching `pred`; panics after `DEADLINE`.
    pub async fn wait_for_log(&self, pred: impl Fn(&LogLine) -> bool) -> LogLine {
        self.wait_for_log_since(0, pred).await
    }

    /// The first log line at index `mark` or later matching `pred`; panics after `DEADLINE`.
    pub async fn wait_for_log_since(
        &self,
        mark: usize,
        pred: impl Fn(&LogLine) -> bool,
    ) -> LogLine {
        self.logs
            .wait_since(mark, pred, DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Where the HTTP source server for `listen_addr` (as written in the flow file) is bound,
    /// from its latest `http source listening` log line; waits for the line.
    pub async fn http_addr(&self, listen_addr: &str) -> SocketAddr {
        self.wait_for_log(|l| {
            l.is("http source listening") && l.str_field("listen_addr") == Some(listen_addr)
        })
        .await;
        let latest = self
            .logs
            .matching(0, |l| {
                l.is("http source listening") && l.str_field("listen_addr") == Some(listen_addr)
            })
            .pop()
            .expect("waited for it above");
        latest.addr().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Where the gRPC source of flow `flow` is bound, from its latest `grpc source listening`
    /// log line; waits for the line.
    pub async fn grpc_addr(&self, flow: &str) -> SocketAddr {
        let is_it =
            |l: &LogLine| l.is("grpc source listening") && l.str_field("flow") == Some(flow);
        self.wait_for_log(is_it).await;
        let latest = self
            .logs
            .matching(0, is_it)
            .pop()
            .expect("waited for it above");
        latest.addr().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// `GET /readyz`: status and JSON body.
    pub async fn readyz(&self) -> (StatusCode, Value) {
        self.try_readyz()
            .await
            .unwrap_or_else(|| panic!("GET /readyz failed\n{}", self.logs.tail(40)))
    }

    async fn try_readyz(&self) -> Option<(StatusCode, Value)> {
        let resp = self
            .client
            .get(format!("http://{}/readyz", self.metrics_addr))
            .send()
            .await
            .ok()?;
        let answer = Answer::read(resp).await.ok()?;
        Some((answer.status, serde_json::from_slice(&answer.body).ok()?))
    }

    /// Waits until `/readyz` answers `status`; returns its body.
    pub async fn wait_for_readyz(&self, status: StatusCode) -> Value {
        eventually(DEADLINE, || async {
            self.try_readyz()
                .await
                .filter(|(s, _)| *s == status)
                .map(|(_, body)| body)
        })
        .await
        .unwrap_or_else(|| panic!("/readyz never answered {status}\n{}", self.logs.tail(40)))
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        scrape_metrics(&self.client, self.metrics_addr).await
    }

    /// Waits until `/metrics` has the sample `name{labels}` with value `expected`; returns
    /// that scrape.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        expected: f64,
    ) -> Metrics {
        let found = eventually(DEADLINE, || async {
            Some(self.metrics().await).filter(|m| m.get(name, labels) == Some(expected))
        })
        .await;
        match found {
            Some(m) => m,
            None => panic!(
                "{name}{labels:?} never became {expected}\n{}",
                self.metrics().await
            ),
        }
    }

    /// `GET /config`.
    pub async fn config(&self) -> Value {
        crate::send(
            self.client
                .get(format!("http://{}/config", self.metrics_addr)),
        )
        .await
        .json()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn send_signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
        // is not reaped (so its pid not reused) before `wait_exit` or drop.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the process to exit (panics after `DEADLINE`).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("waiting for fiso"),
            Err(_) => panic!(
                "fiso did not exit within {DEADLINE:?}\n{}",
                self.logs.tail(40)
            ),
        }
    }
}

impl Drop for FisoProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fiso flow (pid {}) logs:\n{}",
                self.pid,
                self.logs.tail(200)
            );
        }
        // kill_on_drop covers a process still running.
    }
}

/// `GET http://<addr>/metrics`, parsed.
pub(crate) async fn scrape_metrics(client: &reqwest::Client, addr: SocketAddr) -> Metrics {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    Metrics::parse(&text)
}
