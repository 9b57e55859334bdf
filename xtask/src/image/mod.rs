//! `cargo xtask image`: the data-plane and operator images (and the e2e suite's test-kit
//! image), built from the workspace's binaries without a container engine.
//!
//! * `image [--profile release|dev | --bin-dir DIR] [--no-import] [NAME ...]` (NAME: `fiso`,
//!   `fiso-wasmer`, `operator`, `testkit`; default the first three) — builds the binaries (or
//!   takes them from `DIR`), writes OCI image-layout archives to `target/images/<name>.tar` and
//!   imports them into the test node's containerd (`cargo xtask infra up node`). `fiso-wasmer`
//!   is `fiso` built with the `wasmer` feature, kept in the bin directory as `fiso-wasmer`.
//! * `image rootfs <bin-dir> <out-dir>` — writes each image's files as a directory tree
//!   (`<out-dir>/fiso/…`, `<out-dir>/fiso-wasmer/…`, `<out-dir>/operator/…`); the root
//!   `Dockerfile` copies these into `FROM scratch` stages, so both ways give the same files by
//!   construction.
//!
//! An image holds its binary (stripped), exactly the shared libraries `ldd` says it loads, the
//! CA bundle, `/etc/passwd` and `/etc/group` naming the non-root user 65532, and an empty
//! `/tmp`. Nothing is written at run time, so the root filesystem can be mounted read-only.

pub mod oci;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::infra::process::output;
use oci::File;

pub use fiso_rootfs::USER;
/// Registry part of the references images are imported under.
pub const REGISTRY: &str = "fiso.local";

/// One image: its name, the binary it runs and its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `fiso`, `operator`, `testkit`: the image's name in `target/images` and in
    /// `<REGISTRY>/<repository>`.
    pub name: &'static str,
    pub repository: &'static str,
    /// Cargo package and binary name.
    pub package: &'static str,
    pub binary: &'static str,
    /// Cargo features of the build (none: the package's defaults).
    pub features: &'static [&'static str],
    /// The binary's file name in the bin directory: `binary`, unless a build with other
    /// features would overwrite it there.
    pub file: &'static str,
    pub config: oci::Config,
}

impl Spec {
    /// Where the binary lives in the image.
    pub fn binary_path(&self) -> String {
        format!("/usr/local/bin/{}", self.binary)
    }

    /// The `cargo build` arguments that make this image's binary.
    pub fn build_args(&self) -> Vec<String> {
        let mut args = vec![
            "-p".to_owned(),
            self.package.to_owned(),
            "--bin".to_owned(),
            self.binary.to_owned(),
        ];
        if !self.features.is_empty() {
            args.extend(["--features".to_owned(), self.features.join(",")]);
        }
        args
    }

    /// `fiso.local/<repository>:<version>`.
    pub fn reference(&self) -> String {
        format!("{REGISTRY}/{}:{}", self.repository, version())
    }
}

/// The workspace version, the images' tag (and the chart's appVersion).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn config(binary: &str, cmd: &[&str], env: &[&str], ports: &[u16]) -> oci::Config {
    oci::Config {
        entrypoint: vec![format!("/usr/local/bin/{binary}")],
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        user: Some(USER.to_owned()),
        env: env.iter().map(|s| (*s).to_owned()).collect(),
        exposed_ports: ports.to_vec(),
        workdir: None,
        labels: BTreeMap::new(),
    }
}

/// The data-plane image `name`: `fiso` built with `features`, kept in the bin directory as
/// `name`.
fn data_plane(name: &'static str, features: &'static [&'static str]) -> Spec {
    Spec {
        name,
        repository: name,
        package: "fiso",
        binary: "fiso",
        features,
        file: name,
        config: config(
            "fiso",
            &["flow"],
            &["FISO_CONFIG_DIR=/etc/fiso/flows", "FISO_METRICS_ADDR=:9090"],
            &[8081, 3500, 9090],
        ),
    }
}

/// Every image, the published ones first.
pub fn specs() -> Vec<Spec> {
    vec![
        data_plane("fiso", &[]),
        // WASIX apps and `runtime: wasmer` interceptors.
        data_plane("fiso-wasmer", &["wasmer"]),
        Spec {
            name: "operator",
            repository: "fiso-operator",
            package: "fiso-operator",
            binary: "fiso-operator",
            features: &[],
            file: "fiso-operator",
            config: config("fiso-operator", &[], &[], &[8443, 8080, 9090]),
        },
        Spec {
            name: "testkit",
            repository: "fiso-testkit",
            package: "fiso-e2e",
            binary: "fiso-testkit",
            features: &[],
            file: "fiso-testkit",
            config: config("fiso-testkit", &[], &[], &[8080]),
        },
    ]
}

/// The images that the root `Dockerfile` also builds.
pub fn published() -> Vec<Spec> {
    specs()
        .into_iter()
        .filter(|s| s.name != "testkit")
        .collect()
}

/// `cargo xtask image …`.
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("rootfs") {
        let [bin_dir, out] = &args[1..] else {
            bail!("usage: cargo xtask image rootfs <bin-dir> <out-dir>");
        };
        return write_rootfs(Path::new(bin_dir), Path::new(out));
    }
    let mut profile = "release".to_owned();
    let mut prebuilt = None;
    let mut import = true;
    let mut names = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--profile" => {
                profile = rest.next().context("--profile needs a value")?.clone();
            }
            "--bin-dir" => {
                prebuilt = Some(PathBuf::from(
                    rest.next().context("--bin-dir needs a value")?,
                ));
            }
            "--no-import" => import = false,
            name => names.push(name.to_owned()),
        }
    }
    let chosen = select(&names)?;
    let bin_dir = match prebuilt {
        Some(dir) => dir,
        None => build(root, &profile, &chosen)?,
    };
    let out_dir = root.join("target/images");
    std::fs::create_dir_all(&out_dir)?;
    for spec in &chosen {
        let t0 = std::time::Instant::now();
        let archive = out_dir.join(format!("{}.tar", spec.name));
        image(spec, &bin_dir, &out_dir)?.write_archive(&archive)?;
        std::fs::remove_file(out_dir.join(format!("{}.stripped", spec.file)))?;
        let size = std::fs::metadata(&archive)?.len();
        println!(
            "image: {} → {} ({:.1} MiB, {:.1?})",
            spec.reference(),
            archive.display(),
            size as f64 / f64::from(1 << 20),
            t0.elapsed()
        );
        if import {
            crate::infra::node::import_image(&crate::infra::Ctx::new(root), &archive)?;
            println!("image: imported {} into the node", spec.reference());
        }
    }
    Ok(())
}

fn select(names: &[String]) -> Result<Vec<Spec>> {
    let all = specs();
    if names.is_empty() {
        return Ok(published());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|s| s.name == n).cloned().with_context(|| {
                let known: Vec<_> = all.iter().map(|s| s.name).collect();
                format!("unknown image {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// `cargo build` of the chosen images' binaries, one image at a time (as the e2e suite builds
/// them, so neither invalidates the other's build by unifying features differently); returns
/// the directory they are in. A binary built with other features is copied to its own `file`
/// before the build with the default features writes the same name.
fn build(root: &Path, profile: &str, specs: &[Spec]) -> Result<PathBuf> {
    let dir =
        crate::measure::target_dir(root).join(if profile == "dev" { "debug" } else { profile });
    // A release build is as the `Dockerfile` makes it: optimised with the checked-in profile.
    let rustflags = match profile {
        "release" => crate::pgo::with_profile(root, std::env::var("RUSTFLAGS").ok())?,
        _ => None,
    };
    let mut ordered: Vec<&Spec> = specs.iter().collect();
    ordered.sort_by_key(|s| s.file == s.binary);
    for spec in ordered {
        let mut cargo = crate::cargo::command();
        if let Some(flags) = &rustflags {
            cargo.env("RUSTFLAGS", flags);
        }
        let status = cargo
            .current_dir(root)
            .args(["build", "--profile", profile])
            .args(spec.build_args())
            .status()
            .context("starting cargo build")?;
        if !status.success() {
            bail!("cargo build of {} failed ({status})", spec.file);
        }
        if spec.file != spec.binary {
            std::fs::copy(dir.join(spec.binary), dir.join(spec.file))
                .with_context(|| format!("copying {} to {}", spec.binary, spec.file))?;
        }
    }
    Ok(dir)
}

/// The image of `spec` from the binary in `bin_dir`; a stripped copy of it goes to `work`.
pub fn image(spec: &Spec, bin_dir: &Path, work: &Path) -> Result<oci::Image> {
    Ok(oci::Image {
        reference: spec.reference(),
        config: spec.config.clone(),
        files: files(spec, bin_dir, work)?,
    })
}

/// The files of `spec`'s image.
pub fn files(spec: &Spec, bin_dir: &Path, work: &Path) -> Result<Vec<File>> {
    let binary = bin_dir.join(spec.file);
    if !binary.is_file() {
        bail!("{} is missing: build it first", binary.display());
    }
    let stripped = work.join(format!("{}.stripped", spec.file));
    output(
        "strip",
        Command::new("strip").arg("-o").arg(&stripped).arg(&binary),
    )?;
    // ldd reads the stripped binary's dynamic section as well as the original's.
    Ok(fiso_rootfs::scratch_image(&stripped, &spec.binary_path())?)
}

/// Every published image's files under `out/<name>/` (for the `Dockerfile`).
fn write_rootfs(bin_dir: &Path, out: &Path) -> Result<()> {
    for spec in published() {
        let dir = out.join(spec.name);
        let work = out.join(format!(".{}-work", spec.name));
        std::fs::create_dir_all(&work)?;
        for file in files(&spec, bin_dir, &work)? {
            oci::materialize(&file, &dir)?;
        }
        std::fs::remove_dir_all(&work)?;
        println!("image: {} files in {}", spec.name, dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
