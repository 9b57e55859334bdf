//! `fiso link` driven from tests: a link config in a temporary directory, its targets, raw
//! HTTP/1.1 requests that no client library would normalise, and the path-escape table.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::FisoProcess;

/// A link config file in a temporary directory, and the `fiso link` serving it.
pub struct Link {
    pub fiso: FisoProcess,
    pub addr: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Link {
    /// `fiso link` with `targets` (YAML list items) on `127.0.0.1:0`.
    pub async fn start(targets: &str) -> Link {
        Self::start_with_env(targets, Vec::<(String, String)>::new()).await
    }

    pub async fn start_with_env(targets: &str, env: Vec<(String, String)>) -> Link {
        Self::start_with_config(&config_text(targets), env).await
    }

    /// `fiso link` with a whole config file (`listenAddr` should be `127.0.0.1:0`).
    pub async fn start_with_config(text: &str, env: Vec<(String, String)>) -> Link {
        Self::start_with_files(text, &[], env).await
    }

    /// [`Self::start_with_config`] with `files` (name, content) written next to the config
    /// first (interceptor modules, which resolve against the config's directory).
    pub async fn start_with_files(
        text: &str,
        files: &[(&str, Vec<u8>)],
        env: Vec<(String, String)>,
    ) -> Link {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, text).unwrap();
        let fiso = FisoProcess::start_link_with_env(&config, env).await;
        let addr = fiso.link_addr().await;
        Link {
            fiso,
            addr,
            config,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the config file the way an editor or kubelet does (write aside, rename over).
    pub fn rewrite(&self, targets: &str) {
        self.rewrite_config(&config_text(targets));
    }

    /// [`Self::rewrite`] with a whole config file.
    pub fn rewrite_config(&self, text: &str) {
        let aside = self.config.with_extension("tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.config).unwrap();
    }
}

pub fn config_text(targets: &str) -> String {
    format!("listenAddr: 127.0.0.1:0\ntargets:\n{targets}")
}

/// An `http` target named `name` for `upstream`, with `extra` YAML lines (4-space indented).
pub fn http_target(name: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: http\n    host: localhost\n    port: {}\n{extra}",
        upstream.port()
    )
}

/// Sends `raw_target` as the request target of a raw HTTP/1.1 request (no client-side URL
/// normalisation) and returns the status code.
pub async fn raw_status(addr: SocketAddr, method: &str, raw_target: &str, host: &str) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{method} {raw_target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    crate::reliability::proc_status_kib(pid, "VmHWM:") * 1024
}

/// Request paths that try to leave `allowedPaths: ["/api/v2/**"]` of a target named `api` (or
/// reach a path outside it): each must be refused with 403 and never reach the upstream.
pub const PATH_ESCAPES: &[&str] = &[
    "/link/api/api/v2/../admin",
    "/link/api/api/v2/../../admin",
    "/link/api/api/v2/%2e%2e/admin",
    "/link/api/api/v2/%2E%2E/admin",
    "/link/api/api/v2/.%2e/admin",
    "/link/api/api/v2/%2e./admin",
    "/link/api/api/v2/..%2fadmin",
    "/link/api/api/v2/%2e%2e%2fadmin",
    "/link/api/api/v2/..%2Fadmin",
    "/link/api/api/v2/%252e%252e/admin",
    "/link/api/api/v2/..%5cadmin",
    "/link/api/api/v2/..\\admin",
    "/link/api/api/v2/%00",
    "/link/api/api/v2/%zz",
    "/link/api/api/v2/%c0%ae%c0%ae/admin",
    "/link/api/api/v2/..;/admin",
    "/link/api/api/v3/x",
    "/link/api/API/v2/x",
    "/link/api//api/v2/../../admin",
];

/// Sends `request` as raw bytes on a new connection and returns the status code and the whole
/// answer as text (what arrived before the connection closed or was reset).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        // A reset after the answer (the peer closed with bytes of ours unread) ends it like EOF.
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(crate::DEADLINE, read)
        .await
        .expect("the connection was not closed after the answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Starts a request announcing `announced` body bytes, sends `sent` of them, then hangs up
/// without reading anything: a client that gives up mid-upload.
pub async fn abort_mid_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    announced: usize,
    sent: usize,
) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {announced}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![b'x'; sent]).await.unwrap();
    drop(tcp);
}
