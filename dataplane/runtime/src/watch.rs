//! Watching a config directory and reading it as content-hashed snapshots.
//!
//! The watcher does not try to say *what* changed: editors save through temp files and
//! renames, and kubelet updates a ConfigMap volume by writing a new `..<timestamp>` directory
//! and atomically swapping the `..data` symlink that every visible file points through, so
//! event paths are a poor guide. Any event in the directory means "rescan"; the reloader takes
//! a [`snapshot`] and [`diff`]s it by content hash against the last good one, which also makes
//! spurious notifications free.
//!
//! Hashes are SHA-256 (crate `sha2`, no default features, no assembly): config files are tiny,
//! it is in most dependency trees already, and the digest is recognisable to operators
//! comparing `/config` with `sha256sum`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// kubelet's ConfigMap/Secret volume layout: visible files are symlinks through this.
const DATA_LINK: &str = "..data";

/// A steady stream of events (a process writing a log file into the config dir) must not
/// postpone reloads forever: after this many debounce periods the notification goes out anyway.
const MAX_DEBOUNCE_PERIODS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot watch {}: {source}", path.display())]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{} is larger than {limit} bytes, the most a config file may be", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
}

/// Notifies after changes in a directory have settled. Dropping it stops watching.
#[derive(Debug)]
pub struct DirWatcher {
    generation: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl DirWatcher {
    /// Waits for the next settled batch of changes and returns its generation (1, 2, ...).
    /// Batches that happen while the caller is busy reloading collapse into one notification.
    /// `None` if the watcher has stopped.
    pub async fn changed(&mut self) -> Option<u64> {
        self.generation.changed().await.ok()?;
        Some(*self.generation.borrow_and_update())
    }

    /// Number of settled batches so far.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Another receiver of the generation counter, e.g. for a second reloader.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// A watcher driven by hand instead of by a directory, for tests of what consumes one.
    #[cfg(test)]
    pub(crate) fn from_generation(generation: watch::Receiver<u64>) -> Self {
        DirWatcher {
            generation,
            task: tokio::spawn(async {}),
        }
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        // The task owns the notify watcher; aborting it releases the inotify watches.
        self.task.abort();
    }
}

/// Watches `dir` (non-recursively, plus the current `..data` target of a ConfigMap volume)
/// and notifies once events have stopped for `debounce`. The watches are in place when this
/// returns, so nothing changed afterwards is missed. Must be called inside a Tokio runtime.
pub fn watch_dir(dir: impl AsRef<Path>, debounce: Duration) -> Result<DirWatcher, WatchError> {
    let dir = dir.as_ref().to_path_buf();
    if !dir.is_dir() {
        return Err(WatchError::NotADirectory { path: dir });
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if is_change(&event) {
            let _ = events_tx.send(());
        }
    })
    .map_err(|source| WatchError::Notify {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify {
            path: dir.clone(),
            source,
        })?;
    let mut data = DataTarget::default();
    data.follow(&mut watcher, &dir);

    let (generation_tx, generation) = watch::channel(0);
    let task = tokio::spawn(settle(events, generation_tx, debounce, move || {
        // After a ConfigMap swap the old target is gone; watch the new one.
        data.follow(&mut watcher, &dir);
    }));
    Ok(DirWatcher { generation, task })
}

fn is_change(event: &notify::Result<Event>) -> bool {
    match event {
        // Reads (ours included: every snapshot opens the files) are not changes; without this
        // each reload would trigger the next.
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        // Typically a queue overflow: events were lost, so rescan.
        Err(e) => {
            tracing::warn!(error = %e, "config watch error; rescanning");
            true
        }
    }
}

/// Bumps `generation` once events have paused for `debounce` (or kept coming for
/// [`MAX_DEBOUNCE_PERIODS`] periods), calling `on_settled` first.
async fn settle(
    mut events: mpsc::UnboundedReceiver<()>,
    generation: watch::Sender<u64>,
    debounce: Duration,
    mut on_settled: impl FnMut() + Send + 'static,
) {
    let mut count = 0;
    while events.recv().await.is_some() {
        let deadline = Instant::now() + debounce * MAX_DEBOUNCE_PERIODS;
        loop {
            let quiet_until = (Instant::now() + debounce).min(deadline);
            match tokio::time::timeout_at(quiet_until, events.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                Err(_elapsed) => break,
            }
        }
        on_settled();
        count += 1;
        tracing::debug!(generation = count, "config dir changed");
        generation.send_replace(count);
    }
}

/// The directory `..data` currently points at, watched so that in-place edits inside it are
/// seen too; re-pointed after every swap.
#[derive(Default)]
struct DataTarget(Option<PathBuf>);

impl DataTarget {
    fn follow(&mut self, watcher: &mut RecommendedWatcher, dir: &Path) {
        let current = std::fs::canonicalize(dir.join(DATA_LINK))
            .ok()
            .filter(|p| p.is_dir());
        if current == self.0 {
            return;
        }
        if let Some(old) = self.0.take() {
            // Usually already gone: kubelet deletes the old timestamped dir after the swap.
            let _ = watcher.unwatch(&old);
        }
        if let Some(new) = &current {
            if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %new.display(), error = %e, "cannot watch ..data target");
                return;
            }
        }
        self.0 = current;
    }
}

/// One config file as read at snapshot time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// File name within the directory, e.g. `orders.yaml`.
    pub name: String,
    pub path: PathBuf,
    pub content: String,
    /// Lowercase hex SHA-256 of `content`.
    pub hash: String,
}

/// The default filter for [`snapshot`]: `*.yaml` and `*.yml`.
pub fn is_yaml(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Largest config file read: a ConfigMap holds at most 1 MiB in all, and a config file larger
/// than that is a mistake (a log, a dump) that must not be read into memory whole.
pub const MAX_CONFIG_FILE_SIZE: u64 = 1024 * 1024;

/// What [`snapshot`] found: the files it read, and those it could not, each with its reason.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub files: Vec<ConfigFile>,
    /// Files that passed the filter but could not be read (permission, symlink loop, not
    /// UTF-8, too large): each is that file's problem, not the directory's.
    pub unreadable: Vec<Unreadable>,
}

/// A file of a [`Snapshot`] that could not be read.
#[derive(Debug)]
pub struct Unreadable {
    /// File name within the directory.
    pub name: String,
    pub error: WatchError,
}

/// Reads the files in `dir` whose names pass `filter`, sorted by name. Symlinks are followed
/// (ConfigMap volumes are all symlinks); hidden entries are skipped, which covers kubelet's
/// `..data` / `..<timestamp>` and editors' `.name.swp`. A file that vanishes while being
/// read is skipped: its removal is itself an event, so a rescan follows. Only a directory that
/// cannot be listed is an error; a file that cannot be read is listed in
/// [`Snapshot::unreadable`].
pub fn snapshot(
    dir: impl AsRef<Path>,
    filter: impl Fn(&str) -> bool,
) -> Result<Snapshot, WatchError> {
    let dir = dir.as_ref();
    let dir_error = |source| WatchError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut found = Snapshot::default();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !filter(&name) {
            continue;
        }
        let path = entry.path();
        match read_config_file(&path) {
            Ok(Some(content)) => found.files.push(ConfigFile {
                hash: hex_sha256(content.as_bytes()),
                name,
                path,
                content,
            }),
            Ok(None) => {}
            Err(error) => found.unreadable.push(Unreadable { name, error }),
        }
    }
    found.files.sort_by(|a, b| a.name.cmp(&b.name));
    found.unreadable.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Reads one config file as text, following symlinks, within [`MAX_CONFIG_FILE_SIZE`];
/// `None` when it is not (or no longer) a file.
pub fn read_config_file(path: &Path) -> Result<Option<String>, WatchError> {
    use std::io::Read as _;
    let read_error = |source| WatchError::Read {
        path: path.to_owned(),
        source,
    };
    let opened = std::fs::metadata(path).and_then(|meta| {
        if meta.is_file() {
            std::fs::File::open(path).map(Some)
        } else {
            Ok(None)
        }
    });
    let file = match opened {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_SIZE {
        return Err(WatchError::TooLarge {
            path: path.to_owned(),
            limit: MAX_CONFIG_FILE_SIZE,
        });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| WatchError::NotUtf8 {
            path: path.to_owned(),
        })
}

fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// File names that differ between two snapshots, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl SnapshotDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

pub fn diff(old: &[ConfigFile], new: &[ConfigFile]) -> SnapshotDiff {
    let old: BTreeMap<_, _> = old.iter().map(|f| (&f.name, &f.hash)).collect();
    let new: BTreeMap<_, _> = new.iter().map(|f| (&f.name, &f.hash)).collect();
    let mut out = SnapshotDiff::default();
    for (name, hash) in &new {
        match old.get(name) {
            None => out.added.push((*name).clone()),
            Some(h) if h != hash => out.changed.push((*name).clone()),
            Some(_) => {}
        }
    }
    out.removed = old
        .keys()
        .filter(|name| !new.contains_key(*name))
        .map(|name| (*name).clone())
        .collect();
    out
}

/// A `/config` section describing a loaded snapshot:
/// `{"dir": ..., "loadedAt": RFC 3339, "digest": ..., "files": {"a.yaml": {"sha256": ...}}}`.
/// `digest` covers every file name and hash, one value to compare across replicas.
pub fn version_document(dir: &Path, files: &[ConfigFile], loaded_at: SystemTime) -> Value {
    let mut whole = Sha256::new();
    let mut listed = serde_json::Map::new();
    for f in files {
        whole.update(f.name.as_bytes());
        whole.update([0]);
        whole.update(f.hash.as_bytes());
        whole.update([b'\n']);
        listed.insert(f.name.clone(), json!({ "sha256": f.hash }));
    }
    json!({
        "dir": dir.display().to_string(),
        "loadedAt": humantime::format_rfc3339_millis(loaded_at).to_string(),
        "digest": format!("{:x}", whole.finalize()),
        "files": listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> ConfigFile {
        ConfigFile {
            name: name.into(),
            path: name.into(),
            content: content.into(),
            hash: hex_sha256(content.as_bytes()),
        }
    }

    fn debouncer(debounce: Duration) -> (mpsc::UnboundedSender<()>, watch::Receiver<u64>) {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (generation_tx, generation) = watch::channel(0);
        tokio::spawn(settle(events, generation_tx, debounce, || {}));
        (events_tx, generation)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_notification_after_it_settles() {
        let debounce = Duration::from_millis(100);
        let (events, mut generation) = debouncer(debounce);
        let start = Instant::now();
        for _ in 0..5 {
            events.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        generation.changed().await.unwrap();
        assert_eq!(*generation.borrow_and_update(), 1);
        // Last event at 120ms, then 100ms of quiet.
        assert_eq!(start.elapsed(), Duration::from_millis(220));
        assert!(!generation.has_changed().unwrap());

        events.send(()).unwrap();
        generation.changed().await.unwrap();
        assert_eq!(*generation.borrow(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_still_notifies() {
        let debounce = Duration::from_millis(100);
        let (events, mut generation) = debouncer(debounce);
        let start = Instant::now();
        let feeder = tokio::spawn(async move {
            loop {
                if events.send(()).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        generation.changed().await.unwrap();
        assert_eq!(start.elapsed(), debounce * MAX_DEBOUNCE_PERIODS);
        feeder.abort();
    }

    #[tokio::test]
    async fn stops_when_events_end() {
        let (events, mut generation) = debouncer(Duration::from_millis(1));
        drop(events);
        assert!(generation.changed().await.is_err());
    }

    #[test]
    fn diff_by_hash() {
        let old = [
            file("a.yaml", "1"),
            file("b.yaml", "2"),
            file("c.yaml", "3"),
        ];
        let new = [
            file("a.yaml", "1"),
            file("b.yaml", "22"),
            file("d.yaml", "4"),
        ];
        assert_eq!(
            diff(&old, &new),
            SnapshotDiff {
                added: vec!["d.yaml".into()],
                changed: vec!["b.yaml".into()],
                removed: vec!["c.yaml".into()],
            }
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn yaml_filter() {
        assert!(is_yaml("orders.yaml"));
        assert!(is_yaml("orders.YML"));
        assert!(!is_yaml("orders.yaml.bak"));
        assert!(!is_yaml("README.md"));
    }

    #[test]
    fn sha256_hex() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn version_document_lists_hashes() {
        let files = [file("a.yaml", "1")];
        let doc = version_document(Path::new("/etc/fiso/flows"), &files, SystemTime::UNIX_EPOCH);
        assert_eq!(doc["dir"], "/etc/fiso/flows");
        assert_eq!(doc["loadedAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(doc["files"]["a.yaml"]["sha256"], files[0].hash.as_str());
        let other = version_document(
            Path::new("/etc/fiso/flows"),
            &[file("a.yaml", "2")],
            SystemTime::UNIX_EPOCH,
        );
        assert_ne!(doc["digest"], other["digest"]);
    }
}
