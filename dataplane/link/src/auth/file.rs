//! A secret in a file, re-read when it changes.
//!
//! The parent directory is watched rather than the file: kubelet updates a Secret volume by
//! swapping the `..data` symlink, and editors replace a file by renaming a new one over it; a
//! watch on the file itself would stay on the old inode. Any event in the directory triggers a
//! re-read; an unchanged content is not a refresh.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use super::{AuthError, Shared};

/// Events come in bursts (create, write, rename); read once the burst is over.
const SETTLE: Duration = Duration::from_millis(50);

pub(super) fn describe(path: &Path) -> String {
    format!("file {}", path.display())
}

pub(super) async fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| AuthError::File {
            path: path.to_owned(),
            source,
        })
}

/// Starts watching the directory of `path`; `changed` is notified on every event there.
pub(super) fn watch(path: &Path) -> Result<(RecommendedWatcher, Arc<Notify>), AuthError> {
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let watch_error = |source| AuthError::Watch {
        path: path.to_owned(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        // Errors too: re-reading is how we find out what happened.
        notify.notify_one();
    })
    .map_err(watch_error)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        // A missing directory is best reported as the missing file.
        if let Err(read) = std::fs::metadata(path) {
            return Err(AuthError::File {
                path: path.to_owned(),
                source: read,
            });
        }
        return Err(watch_error(e));
    }
    Ok((watcher, changed))
}

/// Re-reads `path` on every change until cancelled (the watcher lives as long as this task).
pub(super) async fn run(
    shared: Arc<Shared>,
    path: PathBuf,
    mut last: Vec<u8>,
    watcher: RecommendedWatcher,
    changed: Arc<Notify>,
) {
    let _watcher = watcher;
    let from = describe(&path);
    let mut failing = false;
    loop {
        changed.notified().await;
        tokio::time::sleep(SETTLE).await;
        match read(&path).await {
            Ok(bytes) if bytes == last && !failing => {}
            Ok(bytes) => {
                last.clone_from(&bytes);
                // An emptied or invalid file is a failure too; keep reporting until it is fixed.
                failing = shared.format.value(&bytes, &from).is_err();
                shared.refreshed(&from, Ok(bytes));
            }
            Err(e) => {
                failing = true;
                shared.failed(&e);
            }
        }
    }
}
