//! An OAuth2 token endpoint on 127.0.0.1 for the Temporal sink's `auth.oidc`: the npm package
//! `oauth2-mock-server` (a real OAuth2 / OIDC server; pinned; installed with npm into
//! `target/infra/oauth2`), run by the launcher `oauth2_server.mjs` beside this file, which adds
//! client authentication and per-client token lifetimes (see its header). Started by PID on a
//! free port (`target/infra/oauth2.port`), log in `target/infra/logs/oauth2.log`; the client
//! secret is made at start (`target/infra/oauth2.secret`).
//! Tests get `FISO_E2E_OAUTH2_TOKEN_URL` and `FISO_E2E_OAUTH2_CLIENT_SECRET`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::process::{alive_pid, run_logged, spawn_server, stop_server, wait_ready};
use super::{Component, Ctx};

const PACKAGE: &str = "oauth2-mock-server";
/// The last version that runs on Debian's Node 20 (9.x needs Node 22).
const VERSION: &str = "8.2.3";
const LAUNCHER: &str = include_str!("oauth2_server.mjs");

pub struct OAuth2;

impl OAuth2 {
    fn dir(ctx: &Ctx) -> PathBuf {
        ctx.dir.join("oauth2")
    }

    fn secret_file(ctx: &Ctx) -> PathBuf {
        ctx.dir.join("oauth2.secret")
    }

    fn installed(ctx: &Ctx) -> bool {
        let manifest = Self::dir(ctx)
            .join("node_modules")
            .join(PACKAGE)
            .join("package.json");
        std::fs::read_to_string(manifest).is_ok_and(|m| {
            serde_json::from_str::<serde_json::Value>(&m)
                .is_ok_and(|v| v["version"].as_str() == Some(VERSION))
        })
    }

    /// The discovery document answers 200.
    fn ready(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
    }
}

impl Component for OAuth2 {
    fn name(&self) -> &'static str {
        "oauth2"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        let dir = Self::dir(ctx);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("server.mjs"), LAUNCHER)?;
        if Self::installed(ctx) {
            return Ok(());
        }
        run_logged(
            "npm install oauth2-mock-server",
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg(format!("{PACKAGE}@{VERSION}")),
            &ctx.server("oauth2").install_log(),
        )?;
        if !Self::installed(ctx) {
            bail!(
                "npm did not install {PACKAGE}@{VERSION} in {}",
                dir.display()
            );
        }
        Ok(())
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        alive_pid(&ctx.server("oauth2").pid_file()).is_some()
            && Self::secret_file(ctx).is_file()
            && ctx.server("oauth2").port().is_some_and(Self::ready)
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        self.stop(ctx)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("picking a free port for the OAuth2 server")?
            .port();
        let mut random = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .context("reading /dev/urandom")?;
        let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(Self::secret_file(ctx), &secret)?;
        let log = ctx.server("oauth2").log();
        let pid = spawn_server(
            "oauth2",
            Command::new("node")
                .arg(Self::dir(ctx).join("server.mjs"))
                .arg(port.to_string())
                .current_dir(Self::dir(ctx))
                .env("FISO_OAUTH2_CLIENT_SECRET", &secret),
            &log,
            &ctx.server("oauth2").pid_file(),
        )?;
        std::fs::write(ctx.server("oauth2").port_file(), format!("{port}\n"))?;
        wait_ready("the OAuth2 server", pid, &log, || Self::ready(port))
    }

    fn stop(&self, ctx: &Ctx) -> Result<()> {
        stop_server(
            "oauth2",
            &ctx.server("oauth2").pid_file(),
            &[ctx.server("oauth2").port_file(), Self::secret_file(ctx)],
        )
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let (Some(port), Ok(secret)) = (
            ctx.server("oauth2").port(),
            std::fs::read_to_string(Self::secret_file(ctx)),
        ) else {
            return Vec::new();
        };
        vec![
            (
                "FISO_E2E_OAUTH2_TOKEN_URL",
                format!("http://127.0.0.1:{port}/token"),
            ),
            ("FISO_E2E_OAUTH2_CLIENT_SECRET", secret.trim().to_owned()),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        vec![
            ctx.server("oauth2").install_log(),
            ctx.server("oauth2").log(),
        ]
    }
}
