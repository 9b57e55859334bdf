//! `fiso dev` as a child process in a project directory: its banner (stdout) and its readable
//! log lines (stderr) captured as they come, `/readyz` and `/metrics` on the port the banner
//! names, Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::logs::Logs;
use crate::metrics::Metrics;
use crate::process::captured;
use crate::{client, eventually, Answer, DEADLINE};

/// A running `fiso dev --no-service`; killed when dropped (its output is printed if the test
/// failed).
pub struct DevProcess {
    child: Child,
    pid: u32,
    banner: Logs,
    logs: Logs,
    metrics_addr: SocketAddr,
    client: reqwest::Client,
}

impl DevProcess {
    /// `fiso dev --metrics-addr 127.0.0.1:0 --no-service` in `project` (the directory holding
    /// `fiso/`), returned once its banner is printed.
    pub async fn start(project: &Path) -> DevProcess {
        let bin = tokio::task::spawn_blocking(crate::fiso_bin)
            .await
            .expect("locating the fiso binary");
        let mut cmd = Command::new(bin);
        cmd.args(["dev", "--metrics-addr", "127.0.0.1:0", "--no-service"])
            .current_dir(project)
            .env("NO_COLOR", "1")
            .env_remove("FISO_LOG_LEVEL")
            .env_remove("FISO_KAFKA_BROKERS");
        captured(&mut cmd).stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawning fiso dev");
        let pid = child.id().expect("a running child has a pid");
        let banner = Logs::capture(child.stdout.take().expect("stdout is piped"));
        let logs = Logs::capture(child.stderr.take().expect("stderr is piped"));
        let metrics = banner
            .wait_for(|l| l.raw.trim_start().starts_with("metrics "), DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("fiso dev printed no banner: {e}\n{}", logs.tail(40)));
        let port = metrics
            .raw
            .split("http://localhost:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no metrics port in {:?}", metrics.raw));
        banner
            .wait_for(|l| l.raw.contains("Stop with Ctrl-C"), DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("the banner did not end: {e}"));
        DevProcess {
            child,
            pid,
            banner,
            logs,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client: client(),
        }
    }

    /// The banner as printed.
    pub fn banner(&self) -> String {
        self.banner
            .lines()
            .into_iter()
            .map(|l| l.raw)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Index of the next log line, to wait for lines written after this point.
    pub fn log_mark(&self) -> usize {
        self.logs.mark()
    }

    /// The first log line at index `mark` or later that contains every one of `parts`;
    /// panics after `timeout`.
    pub async fn wait_for_log_since(
        &self,
        mark: usize,
        parts: &[&str],
        timeout: std::time::Duration,
    ) -> String {
        self.logs
            .wait_since(mark, |l| parts.iter().all(|p| l.raw.contains(p)), timeout)
            .await
            .unwrap_or_else(|e| panic!("no log line with {parts:?}: {e}"))
            .raw
    }

    /// `GET /readyz`: status and JSON body.
    pub async fn readyz(&self) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("http://{}/readyz", self.metrics_addr))
            .send()
            .await
            .expect("GET /readyz");
        let answer = Answer::read(resp).await.expect("reading /readyz");
        (answer.status, answer.json())
    }

    /// Waits until `/readyz` answers `status`; returns its body.
    pub async fn wait_for_readyz(&self, status: StatusCode, timeout: std::time::Duration) -> Value {
        eventually(timeout, || async {
            Some(self.readyz().await)
                .filter(|(s, _)| *s == status)
                .map(|(_, body)| body)
        })
        .await
        .unwrap_or_else(|| panic!("/readyz never answered {status}\n{}", self.logs.tail(40)))
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        crate::process::scrape_metrics(&self.client, self.metrics_addr).await
    }

    /// Ctrl-C.
    pub fn interrupt(&self) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, not
        // reaped before `wait_exit` or drop.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit (panics after `DEADLINE`).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("waiting for fiso dev"),
            Err(_) => panic!(
                "fiso dev did not exit within {DEADLINE:?}\n{}",
                self.logs.tail(40)
            ),
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fiso dev (pid {}) banner:\n{}\nlogs:\n{}",
                self.pid,
                self.banner(),
                self.logs.tail(200)
            );
        }
    }
}
