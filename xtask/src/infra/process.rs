//! Process helpers: commands with their output in a log file, PID files, log tails.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Run `cmd` to completion with stdout and stderr appended to `log` (stdin closed). Servers the
/// command leaves running in the background must redirect their own output, or they would keep
/// the log open; the local-k8s script does.
pub fn run_logged(what: &str, cmd: &mut Command, log: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "==> {what}: {cmd:?}")?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); log: {}", log.display());
    }
    Ok(())
}

/// Run `cmd` and return its stdout; the error carries stderr.
pub fn output(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{what} printed non-UTF-8"))
}

/// The PID in `pid_file` if that process is alive.
pub fn alive_pid(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    pid_alive(pid).then_some(pid)
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Fail clearly when something else already listens on a port a server needs.
pub fn ensure_port_free(port: u16, server: &str) -> Result<()> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "127.0.0.1:{port} (needed by {server}) is not available: {e}; \
             another instance (started outside `cargo xtask infra`?) may be running"
        ),
    }
}

/// Print the last `lines` lines of a log to stderr (nothing if it does not exist).
pub fn print_tail(path: &Path, lines: usize) {
    let Ok(mut file) = File::open(path) else {
        return;
    };
    let mut text = Vec::new();
    if std::io::Read::read_to_end(&mut file, &mut text).is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    eprintln!(
        "----- last {} lines of {} -----",
        tail.len(),
        path.display()
    );
    for line in tail {
        eprintln!("{line}");
    }
    eprintln!("----- end of {} -----", path.display());
}

/// Starts `cmd` as a background server: output to `log`, its own process group (a Ctrl-C at the
/// terminal that ran `infra up` leaves it be), its PID written to `pid_file`.
pub fn spawn_server(what: &str, cmd: &mut Command, log: &Path, pid_file: &Path) -> Result<u32> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    std::fs::write(pid_file, format!("{pid}\n"))?;
    Ok(pid)
}

/// Waits up to 30 s for `ready`, failing early when the server (`pid`) exits.
pub fn wait_ready(what: &str, pid: u32, log: &Path, ready: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready() {
            return Ok(());
        }
        if !pid_alive(pid) {
            bail!("{what} exited during startup; log: {}", log.display());
        }
        if Instant::now() > deadline {
            bail!("{what} not ready after 30 s; log: {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the server whose PID is in `pid_file` (SIGTERM, then SIGKILL after 10 s) and removes
/// `pid_file` and `extra_files`.
pub fn stop_server(what: &str, pid_file: &Path, extra_files: &[PathBuf]) -> Result<()> {
    if let Some(pid) = alive_pid(pid_file) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if pid_alive(pid) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            std::thread::sleep(Duration::from_millis(200));
        }
        if pid_alive(pid) {
            bail!("{what} (pid {pid}) still runs after SIGKILL");
        }
    }
    for file in std::iter::once(pid_file).chain(extra_files.iter().map(PathBuf::as_path)) {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()))
            }
            _ => {}
        }
    }
    Ok(())
}
