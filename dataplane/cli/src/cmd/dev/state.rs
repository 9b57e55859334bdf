//! What `fiso dev` keeps in `<project>/.dev/`: the data plane's log (`dev.log`), each app's
//! output (`services/<name>.log`), and while it runs a lock (`session.lock`, held for the
//! process's life, so a crash leaves nothing stale) with what it serves (`session.json`).
//! `fiso logs` and `fiso doctor` read them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The data plane's log (tracing JSON lines), fresh each session.
pub const DEV_LOG: &str = "dev.log";

/// `<project>/.dev`.
pub fn dir(project: &Path) -> PathBuf {
    project.join(".dev")
}

/// The data plane's log file.
pub fn data_plane_log(project: &Path) -> PathBuf {
    dir(project).join(DEV_LOG)
}

/// Where the output of the app `name` is kept.
pub fn service_log(project: &Path, name: &str) -> PathBuf {
    dir(project).join("services").join(format!("{name}.log"))
}

/// The names of the apps that have a log, sorted.
pub fn services(project: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir(project).join("services")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// What a running `fiso dev` serves. Every field is optional: a session that is starting has
/// not written it yet.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionInfo {
    pub pid: Option<u32>,
    /// The metrics / health server, as bound.
    pub metrics_addr: Option<SocketAddr>,
    pub apps: Vec<AppInfo>,
}

/// An app `fiso dev` started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    pub pid: u32,
    /// The port it was told to listen on (`PORT`), when there is one.
    #[serde(default)]
    pub port: Option<u16>,
}

/// The running session of this process: holds the lock until dropped.
#[derive(Debug)]
pub struct Session {
    info: PathBuf,
    _lock: File,
}

impl Session {
    /// Takes the project's lock, or says which `fiso dev` holds it.
    pub fn acquire(project: &Path) -> Result<Session> {
        let dev = dir(project);
        std::fs::create_dir_all(&dev).with_context(|| format!("creating {}", dev.display()))?;
        let path = dev.join("session.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // `fiso doctor` holds the lock shared for an instant to see whether a session runs.
        for _ in 0..20 {
            match lock.try_lock() {
                Ok(()) => {
                    return Ok(Session {
                        info: dev.join("session.json"),
                        _lock: lock,
                    })
                }
                Err(TryLockError::WouldBlock) => {
                    if let Some(pid) = read_info(project).and_then(|i| i.pid) {
                        bail!(
                            "`fiso dev` is already running for {} (pid {pid}); stop it first",
                            project.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()))
                }
            }
        }
        bail!(
            "`fiso dev` is already running for {} ({} is locked)",
            project.display(),
            path.display()
        )
    }

    /// Records what the session serves, for `fiso doctor`.
    pub fn publish(&self, info: &SessionInfo) -> Result<()> {
        let tmp = self.info.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.info)
            .with_context(|| format!("writing {}", self.info.display()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.info);
    }
}

/// The `fiso dev` running for `project`, if one is.
pub fn running(project: &Path) -> Option<SessionInfo> {
    let lock = File::open(dir(project).join("session.lock")).ok()?;
    match lock.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => Some(read_info(project).unwrap_or_default()),
        Err(TryLockError::Error(_)) => None,
    }
}

/// `fiso dev` writes a few hundred bytes; anything larger was not written by it.
const MAX_INFO_BYTES: u64 = 64 * 1024;

fn read_info(project: &Path) -> Option<SessionInfo> {
    let mut text = Vec::new();
    File::open(dir(project).join("session.json"))
        .ok()?
        .take(MAX_INFO_BYTES + 1)
        .read_to_end(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_INFO_BYTES {
        return None;
    }
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_seen_while_it_lives_and_not_after() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path();
        assert!(running(project).is_none());
        let session = Session::acquire(project).unwrap();
        assert!(running(project).is_some_and(|i| i.pid.is_none()));
        session
            .publish(&SessionInfo {
                pid: Some(42),
                metrics_addr: Some("127.0.0.1:9090".parse().unwrap()),
                apps: vec![],
            })
            .unwrap();
        assert_eq!(running(project).and_then(|i| i.pid), Some(42));
        let second = Session::acquire(project).unwrap_err().to_string();
        assert!(
            second.contains("already running") && second.contains("pid 42"),
            "{second}"
        );
        drop(session);
        assert!(running(project).is_none());
        assert!(!dir(project).join("session.json").exists());
        Session::acquire(project).unwrap();
    }

    #[test]
    fn session_info_is_read_up_to_its_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path();
        std::fs::create_dir_all(dir(project)).unwrap();
        let info = |padding: usize| {
            let head = r#"{"pid": 7, "apps": [], "pad": ""#;
            let tail = r#""}"#;
            let fill = padding - head.len() - tail.len();
            format!("{head}{}{tail}", " ".repeat(fill))
        };
        let at_bound = info(MAX_INFO_BYTES as usize);
        std::fs::write(dir(project).join("session.json"), &at_bound).unwrap();
        assert_eq!(read_info(project).and_then(|i| i.pid), Some(7));
        std::fs::write(
            dir(project).join("session.json"),
            info(MAX_INFO_BYTES as usize + 1),
        )
        .unwrap();
        assert!(read_info(project).is_none());
    }
}
