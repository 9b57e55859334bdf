//! `prometheus` and `promtool` 2.42 from Debian's `prometheus` package, for the monitoring tests
//! (a real Prometheus scraping `fiso run` and the operator; `promtool check rules` and
//! `promtool test rules` on the chart's alerts). The tests start their own Prometheus, so this
//! is a tool, never a server.
//!
//! A system-wide install of the package is used as it is. Otherwise the package is not
//! installed: its maintainer scripts would start a Prometheus on :9090 (the sidecar's metrics
//! port) and it pulls in the web UI's JavaScript libraries. `apt-get download` fetches the .deb
//! into `target/infra/cache` (kept, like the other downloads) and the two binaries are extracted
//! from it into `target/infra/bin`. Measured here: download ~5 s (19 MB), extraction ~1 s.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::node::deb_installed;
use super::process::{output, run_logged};
use super::{Component, Ctx};

const PACKAGE: &str = "prometheus";
/// The Debian version's upstream part; Debian revisions (security updates) are accepted.
const VERSION_PREFIX: &str = "2.42.";
const TOOLS: [&str; 2] = ["prometheus", "promtool"];
const SYSTEM_BIN: &str = "/usr/bin";

pub struct Prometheus;

impl Prometheus {
    fn stamp(ctx: &Ctx) -> PathBuf {
        ctx.bin_dir().join(".prometheus-version")
    }

    fn log(ctx: &Ctx) -> PathBuf {
        ctx.logs_dir().join("prometheus-install.log")
    }

    /// The system's package, when it is installed in the pinned version.
    fn system_install() -> bool {
        deb_installed(PACKAGE)
            && output(
                "dpkg-query",
                Command::new("dpkg-query").args(["-W", "-f=${Version}", PACKAGE]),
            )
            .is_ok_and(|v| v.starts_with(VERSION_PREFIX))
    }

    /// Where `prometheus` and `promtool` are.
    fn bin_dir(ctx: &Ctx) -> PathBuf {
        if Self::system_install() {
            PathBuf::from(SYSTEM_BIN)
        } else {
            ctx.bin_dir()
        }
    }

    fn extracted(ctx: &Ctx) -> bool {
        std::fs::read_to_string(Self::stamp(ctx)).is_ok_and(|v| v.starts_with(VERSION_PREFIX))
            && TOOLS.iter().all(|t| ctx.bin_dir().join(t).is_file())
    }

    /// The cached .deb, downloaded once (`apt-get update` first when the lists lack it).
    fn deb(ctx: &Ctx) -> Result<PathBuf> {
        let cached = || -> Result<Option<PathBuf>> {
            let prefix = format!("{PACKAGE}_{VERSION_PREFIX}");
            for entry in std::fs::read_dir(ctx.cache_dir())? {
                let path = entry?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if name.starts_with(&prefix) && name.ends_with(".deb") {
                    return Ok(Some(path));
                }
            }
            Ok(None)
        };
        if let Some(deb) = cached()? {
            return Ok(deb);
        }
        let log = Self::log(ctx);
        let download = || {
            run_logged(
                "apt-get download prometheus",
                Command::new("apt-get")
                    .args(["download", "-qq", PACKAGE])
                    .current_dir(ctx.cache_dir()),
                &log,
            )
        };
        if download().is_err() {
            run_logged(
                "apt-get update",
                Command::new("apt-get").args(["update", "-qq"]),
                &log,
            )?;
            download()?;
        }
        match cached()? {
            Some(deb) => Ok(deb),
            None => bail!(
                "apt-get download {PACKAGE} did not fetch version {VERSION_PREFIX}x (see {}); \
                 the tests need Debian 12's Prometheus 2.42",
                log.display()
            ),
        }
    }
}

impl Component for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        if Self::system_install() || Self::extracted(ctx) {
            return Ok(());
        }
        println!("infra: extracting prometheus + promtool from Debian's {PACKAGE} package");
        let deb = Self::deb(ctx)?;
        let version = output(
            "dpkg-deb -f",
            Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"),
        )?;
        let version = version.trim();
        if !version.starts_with(VERSION_PREFIX) {
            bail!(
                "{} is version {version}, expected {VERSION_PREFIX}x",
                deb.display()
            );
        }
        let work = ctx
            .cache_dir()
            .join(format!("prometheus.{}", std::process::id()));
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        // `dpkg-deb -x` writes the whole package (web assets too); only the binaries are wanted.
        run_logged(
            "extract prometheus + promtool",
            Command::new("sh")
                .arg("-c")
                .arg(
                    r#"set -e; dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ./usr/bin/prometheus ./usr/bin/promtool"#,
                )
                .arg("sh")
                .arg(&deb)
                .arg(&work),
            &Self::log(ctx),
        )?;
        for tool in TOOLS {
            let from = work.join("usr/bin").join(tool);
            let to = ctx.bin_dir().join(tool);
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        std::fs::remove_dir_all(&work)?;
        std::fs::write(Self::stamp(ctx), version)?;
        let promtool = output(
            "promtool --version",
            Command::new(ctx.bin_dir().join("promtool")).arg("--version"),
        )?;
        println!(
            "infra: {}",
            promtool.lines().next().unwrap_or_default().trim()
        );
        Ok(())
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        Self::system_install() || Self::extracted(ctx)
    }

    fn is_tool(&self) -> bool {
        true
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let bin = Self::bin_dir(ctx);
        vec![
            (
                "FISO_E2E_PROMETHEUS",
                bin.join("prometheus").display().to_string(),
            ),
            (
                "FISO_E2E_PROMTOOL",
                bin.join("promtool").display().to_string(),
            ),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        vec![Self::log(ctx)]
    }
}
