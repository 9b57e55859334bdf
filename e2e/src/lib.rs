//! End-to-end tests: each test in `tests/` drives the real `fiso` binary (and, as later issues
//! land, real Kafka / Kubernetes / Temporal / Vault servers started on 127.0.0.1).
//!
//! The harness shared by those tests:
//! - [`fiso_bin`]: the binary under test, built once per test binary;
//! - [`FisoProcess`]: `fiso flow` as a child process with its JSON logs captured, the ports it
//!   bound read back from them, signals, `/readyz`, `/metrics`, `/config`;
//! - [`DevProcess`]: `fiso dev` in a project directory, its banner and readable logs captured;
//! - [`SinkServer`]: a scripted HTTP sink that records what it receives;
//! - [`FlowDir`] / [`HttpFlow`]: a temporary, watched flow directory and flow files;
//! - [`infra`]: what `cargo xtask infra up` provides (kubeconfig, helm, kubectl) — a test fails
//!   with instructions, never skips, when it is missing;
//! - [`cluster`]: the Kubernetes test cluster: client, per-test namespaces, CRDs, watch-based
//!   waits;
//! - [`operator`]: the Helm chart's manifests applied to a test namespace and `fiso-operator`
//!   run as a child process with the chart's environment and RBAC;
//! - [`pods`]: the images in the test node, the chart installed with `helm install`, pods run
//!   by kubelet;
//! - [`conformance`]: the CloudEvents conformance vectors and the checks of what sinks receive;
//! - [`guests`]: the C test guests of the Wasmer/WASIX apps, compiled here with clang;
//! - [`prometheus`]: a real Prometheus scraping test processes; [`promql`]: the metric names and
//!   labels a PromQL expression uses.
//!
//! Everything binds port 0 and waits on readiness signals (log lines, `/readyz`, a request
//! reaching the sink) with generous deadlines; nothing sleeps to synchronise.

mod bin;
pub mod cluster;
pub mod conformance;
mod dev;
mod flowdir;
pub mod guests;
pub mod infra;
pub mod kafka;
pub mod link;
mod logs;
mod metrics;
pub mod operator;
pub mod otel;
pub mod pods;
mod process;
pub mod prometheus;
pub mod promql;
pub mod reliability;
mod sink;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

pub use bin::{fiso_bin, FISO_BIN_ENV};
pub use dev::DevProcess;
pub use flowdir::{FlowDir, HttpFlow};
pub use logs::{LogLine, Logs};
pub use metrics::{Metrics, Sample};
pub use process::FisoProcess;
pub mod temporal;
pub mod tls;
pub mod wasm;
pub use sink::{Gate, Recorded, Reply, Script, SinkServer};

/// How long anything may take before a test gives up. A deadline, not an expectation of speed:
/// it only bounds how long a broken test hangs on a slow, loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two checks of a condition polled by [`eventually`].
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// An HTTP client for talking to fiso and sinks on 127.0.0.1: never through a proxy, and no
/// request outlives [`DEADLINE`].
pub fn client() -> reqwest::Client {
    client_builder().build().expect("building an HTTP client")
}

/// [`client`]'s settings, to add more (e.g. no connection reuse).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy().timeout(DEADLINE)
}

/// Polls `check` until it yields a value or `timeout` passes (then `None`).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// An address on 127.0.0.1 where nothing listens (yet): bound, read back, released. For a
/// server that is down at first and comes up later at the address a config already names.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A whole HTTP answer, read to the end.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> reqwest::Result<Answer> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends `req` and reads the whole answer; panics on a transport error.
pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("sending the request");
    Answer::read(resp).await.expect("reading the response")
}

/// `POST url` with a JSON body.
pub async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Answer {
    send(
        client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}
