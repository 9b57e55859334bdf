//! A real Prometheus (`FISO_E2E_PROMETHEUS`, Debian's 2.42) scraping processes of the test:
//! config and TSDB in a temporary directory, the web API on 127.0.0.1 at a port the OS picks
//! (read back from its log), ready when `/-/ready` says so; killed when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::infra::prometheus_bin;
use crate::logs::Logs;
use crate::{client, eventually, DEADLINE};

/// One scrape target: its `host:port` and the target labels Prometheus puts on its series (what
/// a ServiceMonitor / PodMonitor adds: `namespace`, `pod`, ...).
pub struct Target<'a> {
    pub addr: SocketAddr,
    pub labels: &'a [(&'a str, &'a str)],
}

/// The label sets of every series of one metric name.
pub type Series = BTreeMap<String, Vec<BTreeMap<String, String>>>;

pub struct Prometheus {
    _child: Child,
    logs: Logs,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second, and waits until it is ready.
    pub async fn start(targets: &[Target<'_>]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: fiso\n    static_configs:\n",
        );
        for t in targets {
            config.push_str(&format!(
                "      - targets: [\"{}\"]\n        labels:\n",
                t.addr
            ));
            for (k, v) in t.labels {
                config.push_str(&format!("          {k}: \"{v}\"\n"));
            }
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing prometheus.yml");
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .args(["--web.listen-address=127.0.0.1:0", "--log.format=json"]);
        crate::process::captured(&mut cmd);
        let mut child = cmd.spawn().expect("spawning prometheus");
        let logs = Logs::capture(child.stderr.take().expect("stderr is piped"));
        let listening = logs
            .wait_for(|l| l.str_field("msg") == Some("Listening on"), DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("prometheus did not start: {e}"));
        let addr: SocketAddr = listening
            .str_field("address")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {}", listening.raw));
        let prometheus = Prometheus {
            _child: child,
            logs,
            addr,
            _dir: dir,
        };
        let ready = eventually(DEADLINE, || async {
            let answer = client()
                .get(format!("http://{addr}/-/ready"))
                .send()
                .await
                .ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "prometheus never ready\n{}",
            prometheus.logs.tail(40)
        );
        prometheus
    }

    /// `GET /api/v1/<path>`'s `data`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let body = client()
            .get(format!("http://{}/api/v1/{path}", self.addr))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("prometheus /api/v1/{path}: {e}"))
            .bytes()
            .await
            .expect("prometheus answer body");
        let answer: Value = serde_json::from_slice(&body).expect("prometheus answers JSON");
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"].clone()
    }

    /// Waits until every target was scraped successfully after now.
    pub async fn wait_for_scrapes(&self, targets: usize) {
        let since = chrono::Utc::now();
        let scraped = eventually(DEADLINE, || async {
            let data = self.api("targets", &[("state", "active")]).await;
            let active = data["activeTargets"].as_array()?.clone();
            let fresh = active.iter().filter(|t| {
                t["health"] == "up"
                    && t["lastScrape"]
                        .as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                        .is_some_and(|at| at > since)
            });
            (fresh.count() == targets).then_some(())
        })
        .await;
        if scraped.is_none() {
            let data = self.api("targets", &[]).await;
            panic!("prometheus did not scrape all {targets} targets: {data:#}");
        }
    }

    /// The label sets of every series whose name matches `name_regex`, by metric name.
    pub async fn series(&self, name_regex: &str) -> Series {
        let selector = format!("{{__name__=~\"{name_regex}\"}}");
        let data = self.api("series", &[("match[]", &selector)]).await;
        let mut out = Series::new();
        for labels in data.as_array().expect("series are a list") {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(labels.clone()).expect("a label set");
            out.entry(labels["__name__"].clone())
                .or_default()
                .push(labels);
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("prometheus logs:\n{}", self.logs.tail(40));
        }
    }
}
