//! `cargo xtask infra up|down|env`: the real servers and tools the tests run against.
//!
//! Everything lives under `target/infra/` (binaries, downloads, logs, per-run state, the env
//! file), except build caches that outlive `cargo clean` (the Kubernetes build in
//! `/var/cache/local-k8s`). Each server or tool is one [`Component`]; a new one (Kafka broker,
//! Temporal, OpenBao, ...) is a module implementing it plus a line in [`components`].
//!
//! * `up [names...]`   — install what is missing (idempotent, pinned, cached), start what is not
//!   running, wait until ready, write `target/infra/env`.
//! * `down [names...]` — stop the servers by PID, rewrite the env file.
//! * `env`             — print `export ...` lines for a shell: `eval "$(cargo xtask infra env)"`.
//!
//! Tests read the env file's variables (`cargo xtask ci` passes them to `cargo test`; the e2e
//! crate also reads `target/infra/env` directly) and fail, never skip, when a server is missing.

mod kafka;
mod kube_tools;
mod kubernetes;
pub mod node;
mod oauth2;
mod openbao;
mod otel;
mod pip;
pub(crate) mod process;
mod prometheus;
mod temporal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Paths shared by every component.
pub struct Ctx {
    /// `target/infra` of the workspace.
    pub dir: PathBuf,
}

impl Ctx {
    pub fn new(workspace_root: &Path) -> Self {
        Ctx {
            dir: workspace_root.join("target").join("infra"),
        }
    }

    /// Installed executables (`helm`, `kubectl`, ...).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Downloads, kept so a second `up` after `down` needs no network.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Logs of installs and of the servers xtask starts itself.
    /// Where the server `name` keeps its files: `<name>.pid`, `<name>.port`, `logs/<name>.log`,
    /// `logs/<name>-install.log`.
    pub fn server(&self, name: &'static str) -> ServerFiles {
        ServerFiles {
            dir: self.dir.clone(),
            logs: self.logs_dir(),
            name,
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// `KEY=value` lines for tests and humans.
    pub fn env_file(&self) -> PathBuf {
        self.dir.join("env")
    }
}

/// One server or tool the tests need.
pub trait Component {
    /// Short name for `up`/`down` arguments and messages.
    fn name(&self) -> &'static str;

    /// Install whatever is missing. Idempotent and cheap when everything is in place.
    fn install(&self, ctx: &Ctx) -> Result<()>;

    /// Running and ready (a tool: installed).
    fn is_up(&self, ctx: &Ctx) -> bool;

    /// A tool is installed, never started or stopped.
    fn is_tool(&self) -> bool {
        false
    }

    /// Start and wait until ready. Only called when [`Component::is_up`] is false.
    fn start(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    /// Stop by PID whatever [`Component::start`] started; no error when nothing runs.
    fn stop(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    /// Components that must be up before this one; `up` of this one alone brings them up too,
    /// and `down` of one of them stops this one first.
    fn requires(&self) -> &'static [&'static str] {
        &[]
    }

    /// Variables tests need while this component is up.
    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)>;

    /// Log files worth showing when install or start fails.
    fn logs(&self, _ctx: &Ctx) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// Every component, in start order (`down` stops in reverse).
/// The files of one server component (see [`Ctx::server`]).
pub struct ServerFiles {
    dir: PathBuf,
    logs: PathBuf,
    name: &'static str,
}

impl ServerFiles {
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    pub fn port_file(&self) -> PathBuf {
        self.dir.join(format!("{}.port", self.name))
    }

    /// The port recorded when the server was started on a free one.
    pub fn port(&self) -> Option<u16> {
        std::fs::read_to_string(self.port_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log(&self) -> PathBuf {
        self.logs.join(format!("{}.log", self.name))
    }

    pub fn install_log(&self) -> PathBuf {
        self.logs.join(format!("{}-install.log", self.name))
    }
}

fn components() -> Vec<Box<dyn Component>> {
    vec![
        Box::new(kube_tools::KubeTools),
        Box::new(prometheus::Prometheus),
        Box::new(kubernetes::Kubernetes),
        Box::new(node::Node),
        Box::new(kafka::Kafka),
        Box::new(openbao::OpenBao),
        Box::new(temporal::Temporal),
        Box::new(oauth2::OAuth2),
        Box::new(otel::Otel),
    ]
}

fn select(names: &[String]) -> Result<Vec<Box<dyn Component>>> {
    let all = components();
    if let Some(unknown) = names
        .iter()
        .find(|n| !all.iter().any(|c| c.name() == n.as_str()))
    {
        let known: Vec<_> = all.iter().map(|c| c.name()).collect();
        bail!(
            "unknown infra component {unknown:?} (known: {})",
            known.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|c| names.is_empty() || names.iter().any(|n| n == c.name()))
        .collect())
}

/// `names` plus the components they require, transitively (empty stays empty: all).
fn with_requirements(names: &[String]) -> Vec<String> {
    closure(names, |c, name| c.name() == name, |c| c.requires().to_vec())
}

/// `names` plus the components that require them, transitively (empty stays empty: all).
fn with_dependents(names: &[String]) -> Vec<String> {
    closure(
        names,
        |c, name| c.requires().contains(&name),
        |c| vec![c.name()],
    )
}

/// Grows `names`: for each name, the components `related` to it add what `add` says.
fn closure(
    names: &[String],
    related: impl Fn(&dyn Component, &str) -> bool,
    add: impl Fn(&dyn Component) -> Vec<&'static str>,
) -> Vec<String> {
    let all = components();
    let mut wanted = names.to_vec();
    let mut i = 0;
    while let Some(name) = wanted.get(i).cloned() {
        for c in all.iter().filter(|c| related(c.as_ref(), &name)) {
            for more in add(c.as_ref()) {
                if !wanted.iter().any(|w| w == more) {
                    wanted.push(more.to_owned());
                }
            }
        }
        i += 1;
    }
    wanted
}

/// `cargo xtask infra <up|down|env> [names...]`.
pub fn main(ctx: &Ctx, args: &[String]) -> Result<()> {
    let (verb, names) = args
        .split_first()
        .map_or(("", &[][..]), |(v, n)| (v.as_str(), n));
    match verb {
        "up" => {
            let mut started = Vec::new();
            up(ctx, names, &mut started)?;
            println!("infra is up; for a shell: eval \"$(cargo xtask infra env)\"");
            Ok(())
        }
        "down" => down(ctx, names),
        "env" => {
            print!("{}", shell_exports(ctx)?);
            Ok(())
        }
        _ => bail!("usage: cargo xtask infra <up|down|env> [component...]"),
    }
}

/// Install and start the selected components (all when `names` is empty). The names of the
/// ones this call started are pushed to `started` as it goes, so a caller can stop exactly those
/// even when a later one fails. A failure prints the component's log tails.
pub fn up(ctx: &Ctx, names: &[String], started: &mut Vec<&'static str>) -> Result<()> {
    for dir in [ctx.bin_dir(), ctx.cache_dir(), ctx.logs_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for c in select(&with_requirements(names))? {
        let name = c.name();
        let result = c
            .install(ctx)
            .with_context(|| format!("installing {name}"))
            .and_then(|()| {
                if c.is_up(ctx) {
                    println!("infra: {name} ready");
                    return Ok(());
                }
                println!("infra: starting {name}");
                let t0 = std::time::Instant::now();
                c.start(ctx).with_context(|| format!("starting {name}"))?;
                started.push(name);
                println!("infra: {name} up after {:.1?}", t0.elapsed());
                Ok(())
            });
        if let Err(e) = result {
            for log in c.logs(ctx) {
                process::print_tail(&log, 40);
            }
            // Leave nothing half-started behind.
            if let Err(stop) = c.stop(ctx) {
                eprintln!("infra: stopping {name} after the failure: {stop:#}");
            }
            write_env_file(ctx)?;
            return Err(e);
        }
    }
    write_env_file(ctx)
}

/// Runs `work` with the selected components up (all when `names` is empty), then stops the
/// ones this call started, whatever `work` returned (a server that was already up stays up).
pub fn with_servers<T>(ctx: &Ctx, names: &[&str], work: impl FnOnce() -> Result<T>) -> Result<T> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut started = Vec::new();
    let result = up(ctx, &names, &mut started).and_then(|()| work());
    if started.is_empty() {
        return result;
    }
    println!("infra: down {}", started.join(", "));
    let started: Vec<String> = started.iter().map(|s| s.to_string()).collect();
    let down = down(ctx, &started);
    result.and_then(|value| down.map(|()| value))
}

/// Stop the selected components (all when `names` is empty), in reverse start order.
pub fn down(ctx: &Ctx, names: &[String]) -> Result<()> {
    let mut first_error = None;
    for c in select(&with_dependents(names))?
        .into_iter()
        .rev()
        .filter(|c| !c.is_tool())
    {
        match c.stop(ctx) {
            Ok(()) => println!("infra: {} down", c.name()),
            Err(e) => {
                eprintln!("infra: stopping {}: {e:#}", c.name());
                first_error.get_or_insert(e);
            }
        }
    }
    write_env_file(ctx)?;
    first_error.map_or(Ok(()), Err)
}

/// The variables of every component that is up, in a stable order.
pub fn env_vars(ctx: &Ctx) -> BTreeMap<&'static str, String> {
    components()
        .iter()
        .filter(|c| c.is_up(ctx))
        .flat_map(|c| c.env(ctx))
        .collect()
}

/// `PATH` with the infra bin dir first, for child processes.
pub fn path_with_bin(ctx: &Ctx) -> std::ffi::OsString {
    let mut paths = vec![ctx.bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).expect("infra paths contain no ':'")
}

fn write_env_file(ctx: &Ctx) -> Result<()> {
    let vars = env_vars(ctx);
    let path = ctx.env_file();
    if vars.is_empty() {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => return Ok(()),
        }
    }
    let mut text = String::from(
        "# Written by `cargo xtask infra up|down`: the servers and tools that are up.\n\
         # Shell: set -a; . target/infra/env; set +a   (or: eval \"$(cargo xtask infra env)\")\n",
    );
    for (k, v) in &vars {
        text.push_str(&format!("{k}={v}\n"));
    }
    std::fs::create_dir_all(&ctx.dir)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn shell_exports(ctx: &Ctx) -> Result<String> {
    let vars = env_vars(ctx);
    if vars.is_empty() {
        bail!("no infra component is up: run `cargo xtask infra up`");
    }
    let mut out = String::new();
    for (k, v) in &vars {
        out.push_str(&format!("export {k}='{v}'\n"));
    }
    out.push_str(&format!(
        "export PATH='{}':\"$PATH\"\n",
        ctx.bin_dir().display()
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strings as names;

    #[test]
    fn up_brings_requirements_and_down_takes_dependents() {
        assert_eq!(
            with_requirements(&names(&["node"])),
            names(&["node", "kubernetes"])
        );
        assert_eq!(with_requirements(&names(&["kafka"])), names(&["kafka"]));
        assert_eq!(
            with_dependents(&names(&["kubernetes"])),
            names(&["kubernetes", "node"])
        );
        assert_eq!(with_dependents(&names(&["node"])), names(&["node"]));
        assert!(with_requirements(&[]).is_empty() && with_dependents(&[]).is_empty());
    }
}
