//! Project automation. `cargo xtask <task>`:
//!
//! * `crds`  — regenerate `crds/*.yaml` (and the chart's copy) from the `fiso-config` types.
//! * `docs`  — regenerate the README's configuration and CLI references.
//! * `infra up|down|env` — the real servers and tools tests need (see [`infra`]).
//! * `bench [kafka | http] [--quick]` — benchmarks against nginx / direct (or one scenario alone), report in
//!   `target/bench/` (see [`bench`]; `bench --help` for the rest).
//! * `reliability [--short | --report-only]` — the reliability suite at full scale against a release build,
//!   report in `target/reliability/` (see [`reliability`]).
//! * `image [--profile P | --bin-dir DIR] [--no-import] [name...]` — the data-plane, operator and test-kit
//!   images as OCI archives in `target/images/`, imported into the test node (see [`image`]).
//! * `ci`    — everything CI checks: fmt, clippy, CRD drift, the whole test suite against the
//!   real servers (`infra up` before the tests, `infra down` after, also on failure).
//! * `fuzz [--seconds N] [target...]` — the cargo-fuzz targets of `fuzz/` (default 30 s each),
//!   report in `target/fuzz/report.md` (see [`fuzz`]).
//! * `pgo`   — take `pgo/fiso.profdata.gz` again, the profile release builds of `fiso` are optimised
//!   with (see [`pgo`]).

mod bench;
mod cargo;
mod ci;
mod fuzz;
mod image;
mod infra;
mod measure;
mod pgo;
mod reliability;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or_default();
    match task {
        "crds" => write_crds(),
        "docs" => write_docs(),
        "infra" => infra::main(&infra::Ctx::new(&root()), &args[1..]),
        "ci" => ci::main(&root()),
        "image" => image::main(&root(), &args[1..]),
        "bench" => bench::main(&root(), &args[1..]),
        "reliability" => reliability::main(&root(), &args[1..]),
        "fuzz" => fuzz::main(&root(), &args[1..]),
        "pgo" => pgo::main(&root(), &args[1..]),
        // The benchmarks' upstream (started by `bench` from the release build of xtask).
        "bench-upstream" => bench::upstream::serve(
            args.get(1)
                .map(String::as_str)
                .unwrap_or("127.0.0.1:0")
                .parse()?,
        ),
        // The bare hyper proxy the HTTP benchmarks measure Fiso beside.
        "bench-proxy" => match &args[1..] {
            [listen, upstream, shape] => {
                bench::proxy::serve(listen.parse()?, upstream.parse()?, shape.parse()?)
            }
            _ => bail!("usage: xtask bench-proxy <listen> <upstream> <shared|per-core>"),
        },
        _ => {
            eprintln!("usage: cargo xtask <crds|docs|infra|ci|bench [kafka|http] [--quick]>");
            eprintln!("       cargo xtask image [--profile release|dev | --bin-dir DIR] [--no-import] [fiso|operator|testkit...]");
            eprintln!("       cargo xtask fuzz [--seconds N] [target...]");
            eprintln!("       cargo xtask pgo");
            eprintln!("       cargo xtask reliability [--short | --report-only]");
            std::process::exit(2);
        }
    }
}

/// Words as a command line holds them (for tests).
#[cfg(test)]
fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where generated CRDs are checked in.
fn crd_dirs() -> [PathBuf; 2] {
    let root = root();
    [root.join("crds"), root.join("charts/fiso/crds")]
}

fn write_crds() -> Result<()> {
    for dir in crd_dirs() {
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in fiso_config::crd::rendered() {
            let path = dir.join(&name);
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn write_docs() -> Result<()> {
    use fiso_config::reference::{markdown, replace_section};
    let readme_path = root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    let cli = cargo::command()
        .args(["run", "-q", "-p", "fiso", "--", "help-reference"])
        .current_dir(root())
        .output()?;
    if !cli.status.success() {
        bail!(
            "fiso help-reference failed: {}",
            String::from_utf8_lossy(&cli.stderr)
        );
    }
    let readme = replace_section(&readme, "config-reference", &markdown())
        .context("README lacks config-reference markers")?;
    let readme = replace_section(&readme, "cli-reference", &String::from_utf8(cli.stdout)?)
        .context("README lacks cli-reference markers")?;
    std::fs::write(&readme_path, readme)?;
    println!("wrote {}", readme_path.display());
    Ok(())
}
