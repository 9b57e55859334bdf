//! An app `fiso dev` runs next to the data plane (`fiso dev -- <command>`, or the scaffold's
//! sample service): its output shown inline as `[name] …` and kept in
//! `.dev/services/<name>.log`, its whole process group stopped with it.

use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use console::Style;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::task::JoinHandle;

use crate::lines::{Line, LineSplitter};

/// How long an app has to stop after SIGTERM before it gets SIGKILL, unless told otherwise
/// (as `docker stop`).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// An app's log is cut over to `<name>.log.1` when it reaches this size: two files at most.
pub const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// Names the data plane's own logs answer to in `fiso logs --service`.
const RESERVED: [&str; 5] = ["flow", "link", "fiso-flow", "fiso-link", "dev"];

/// What to run.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub name: String,
    pub command: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// How long it has to stop after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
}

impl AppSpec {
    /// `name`, or the program's file name made into a name.
    pub fn new(name: Option<String>, command: Vec<OsString>) -> Result<Self> {
        let Some(program) = command.first() else {
            bail!("no command to run after `--`");
        };
        let name = match name {
            Some(name) => {
                if !is_name(&name) {
                    bail!("--app-name `{name}`: use letters, digits, '.', '_' and '-'");
                }
                name
            }
            None => {
                let base = Path::new(program)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name: String = base
                    .chars()
                    .map(|c| if is_name_char(c) { c } else { '-' })
                    .collect();
                if !is_name(&name) {
                    bail!("cannot name the app after `{base}`: pass --app-name");
                }
                name
            }
        };
        if RESERVED.contains(&name.as_str()) {
            bail!("`{name}` names the data plane's log in `fiso logs`: pass another --app-name");
        }
        Ok(AppSpec {
            name,
            command,
            env: Vec::new(),
            stop_timeout: STOP_TIMEOUT,
        })
    }

    /// The command as a shell would show it.
    pub fn command_line(&self) -> String {
        self.command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.len() <= 64 && name.chars().all(is_name_char)
}

/// A started app.
#[derive(Debug)]
pub struct RunningApp {
    pub name: String,
    pub pid: u32,
    stop_timeout: Duration,
    child: Child,
    output: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl RunningApp {
    /// Starts `spec` in a process group of its own (so stopping it stops what it started, and a
    /// Ctrl-C in the terminal reaches `fiso dev` alone, which then stops it in order), stdin
    /// closed, output piped to the terminal and `log`.
    ///
    /// Call it on the thread that lives as long as the process (the `block_on` thread): on
    /// Linux the app is told to stop when that thread ends, so a killed `fiso dev` leaves no
    /// orphan.
    pub fn spawn(spec: &AppSpec, log: PathBuf) -> Result<RunningApp> {
        let log = ServiceLog::create(log)?;
        let mut cmd = tokio::process::Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The last resort when this value is dropped without `stop` (an error path).
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid).
        unsafe {
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0
                    || libc::getppid() != parent
                {
                    return Err(std::io::Error::other("fiso dev is gone"));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", spec.command_line()))?;
        let pid = child.id().context("the app exited at once")?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let output = tokio::spawn(pump(Prefix::new(&spec.name), stdout, stderr, log));
        Ok(RunningApp {
            name: spec.name.clone(),
            pid,
            stop_timeout: spec.stop_timeout,
            child,
            output: Some(output),
            exited: None,
        })
    }

    /// Waits for the app to exit on its own (cancel-safe); [`RunningApp::stop`] then ends
    /// what it left behind and lets its output drain.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        // `wait` fails only for a child already reaped, which `exited` rules out.
        let status = self.child.wait().await.unwrap_or(ExitStatus::from_raw(0));
        self.exited = Some(status);
        status
    }

    /// SIGTERM to the app's process group, SIGKILL after its stop timeout or as soon as `force`
    /// completes (a second Ctrl-C); returns how the app ended.
    pub async fn stop(mut self, force: impl Future<Output = ()>) -> ExitStatus {
        let mut force = std::pin::pin!(force);
        // A completed future is not polled again.
        let mut forced = false;
        if self.exited.is_none() {
            signal_group(self.pid, libc::SIGTERM);
            let stopped = tokio::select! {
                status = tokio::time::timeout(self.stop_timeout, self.child.wait()) => status.ok().and_then(Result::ok),
                () = &mut force => {
                    forced = true;
                    None
                }
            };
            let status = match stopped {
                Some(status) => status,
                None => {
                    signal_group(self.pid, libc::SIGKILL);
                    self.child.wait().await.unwrap_or(ExitStatus::from_raw(0))
                }
            };
            self.exited = Some(status);
        }
        // What is left of the group once its leader is gone is stopped the same way; then the
        // output drains (the pipes close when the last process holding them ends).
        if let Some(mut output) = self.output.take() {
            let drained = !forced
                && signal_group(self.pid, libc::SIGTERM)
                && tokio::select! {
                    done = tokio::time::timeout(self.stop_timeout, &mut output) => done.is_ok(),
                    () = &mut force => false,
                };
            if !drained {
                signal_group(self.pid, libc::SIGKILL);
                let _ = output.await;
            }
        }
        self.exited.unwrap_or(ExitStatus::from_raw(0))
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if self.exited.is_none() {
            signal_group(self.pid, libc::SIGKILL);
        }
    }
}

/// Sends `signal` to the process group `pgid`; false when the group has no process left.
fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    // SAFETY: plain syscall; a negative pid addresses the group.
    unsafe { libc::kill(-(pgid as libc::pid_t), signal) == 0 }
}

/// `exited with code 3`, `was killed by SIGKILL`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by {}", signal_name(signal)),
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGKILL => "SIGKILL".to_owned(),
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        libc::SIGSEGV => "SIGSEGV".to_owned(),
        libc::SIGABRT => "SIGABRT".to_owned(),
        other => format!("signal {other}"),
    }
}

/// The exit code `fiso dev` passes on for an app that ended with `status` (a shell's `$?`).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// `[name] ` styled for each stream (plain when that stream is not a terminal).
struct Prefix {
    out: String,
    err: String,
}

impl Prefix {
    fn new(name: &str) -> Self {
        let label = format!("[{name}]");
        let style = Style::new().cyan().bold();
        Prefix {
            out: style.apply_to(&label).to_string(),
            err: style.for_stderr().apply_to(&label).to_string(),
        }
    }
}

/// Shows and logs both output streams line by line until both close.
async fn pump(
    prefix: Prefix,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    mut log: ServiceLog,
) {
    let mut out = Stream::new(stdout);
    let mut err = Stream::new(stderr);
    while !(out.done && err.done) {
        tokio::select! {
            lines = out.next(), if !out.done => for line in lines {
                let _ = writeln!(std::io::stdout(), "{} {}", prefix.out, line.display());
                log.append(&line);
            },
            lines = err.next(), if !err.done => for line in lines {
                let _ = writeln!(std::io::stderr(), "{} {}", prefix.err, line.display());
                log.append(&line);
            },
        }
    }
    log.flush();
}

/// One pipe, split into bounded lines.
struct Stream<R> {
    reader: Option<R>,
    splitter: LineSplitter,
    buf: Box<[u8]>,
    done: bool,
}

impl<R: AsyncRead + Unpin> Stream<R> {
    fn new(reader: Option<R>) -> Self {
        Stream {
            done: reader.is_none(),
            reader,
            splitter: LineSplitter::default(),
            buf: vec![0; 8192].into_boxed_slice(),
        }
    }

    /// The lines the next read completes (cancel-safe: a read either happened or did not).
    async fn next(&mut self) -> Vec<Line> {
        let Some(reader) = self.reader.as_mut() else {
            self.done = true;
            return Vec::new();
        };
        let mut lines = Vec::new();
        match reader.read(&mut self.buf).await {
            Ok(n) if n > 0 => self.splitter.push(&self.buf[..n], |l| lines.push(l)),
            _ => {
                self.done = true;
                self.reader = None;
                lines.extend(self.splitter.finish());
            }
        }
        lines
    }
}

/// An app's log file: its lines as they came, cut over to `<name>.log.1` at
/// [`MAX_LOG_BYTES`].
struct ServiceLog {
    path: PathBuf,
    file: Option<std::io::BufWriter<File>>,
    size: u64,
}

impl ServiceLog {
    /// A fresh log for this session (the previous session's is removed).
    fn create(path: PathBuf) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(rotated(&path));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ServiceLog {
            path,
            file: Some(std::io::BufWriter::new(file)),
            size: 0,
        })
    }

    fn append(&mut self, line: &Line) {
        let text = line.display();
        let len = text.len() as u64 + 1;
        if self.size + len > MAX_LOG_BYTES && self.size > 0 {
            self.flush();
            let _ = std::fs::rename(&self.path, rotated(&self.path));
            self.file = File::create(&self.path).ok().map(std::io::BufWriter::new);
            self.size = 0;
        }
        if let Some(file) = self.file.as_mut() {
            // A full disk costs the log, never the app's run.
            let _ = writeln!(file, "{text}");
            self.size += len;
        }
        // `fiso logs --follow` sees each line as it comes.
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
    }
}

/// The previous generation of an app log.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_come_from_the_program_or_the_flag() {
        let cmd = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            AppSpec::new(None, cmd(&["sh", "-c", "x"])).unwrap().name,
            "sh"
        );
        assert_eq!(
            AppSpec::new(None, cmd(&["./bin/my server"])).unwrap().name,
            "my-server"
        );
        assert_eq!(
            AppSpec::new(Some("api".into()), cmd(&["python3"]))
                .unwrap()
                .name,
            "api"
        );
        let e = AppSpec::new(None, cmd(&["/usr/bin/link"])).unwrap_err();
        assert!(e.to_string().contains("--app-name"), "{e}");
        assert!(AppSpec::new(Some("../x".into()), cmd(&["sh"])).is_err());
        assert!(AppSpec::new(None, vec![]).is_err());
    }

    #[test]
    fn the_log_is_cut_over_at_its_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("services/app.log");
        let mut log = ServiceLog::create(path.clone()).unwrap();
        let line = Line {
            text: "x".repeat(1023),
            cut: 0,
        };
        for _ in 0..(MAX_LOG_BYTES / 1024 + 10) {
            log.append(&line);
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(rotated(&path)).unwrap().len();
        assert_eq!(current, 10 * 1024);
        assert_eq!(previous, MAX_LOG_BYTES);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGTERM)),
            "was killed by SIGTERM"
        );
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited with code 0");
    }
}
