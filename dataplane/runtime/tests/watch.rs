//! The config-dir watcher against a real filesystem (inotify on Linux).
//!
//! Each test waits for a notification and then for the snapshot to show the expected state:
//! a slow machine may split one write into two settled batches, so the first notification
//! can show a half-written file, never a missed change.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use fiso_runtime::watch::{self, diff, is_yaml, snapshot, watch_dir, ConfigFile, DirWatcher};
use tokio::time::timeout;

const DEBOUNCE: Duration = Duration::from_millis(50);
/// A deadline for a notification that must come, not a synchronisation delay.
const DEADLINE: Duration = Duration::from_secs(20);

async fn until(
    w: &mut DirWatcher,
    dir: &Path,
    what: &str,
    done: impl Fn(&[ConfigFile]) -> bool,
) -> Vec<ConfigFile> {
    let wait = async {
        loop {
            w.changed().await.expect("watcher stopped");
            let files = snapshot(dir, is_yaml).unwrap().files;
            if done(&files) {
                return files;
            }
        }
    };
    match timeout(DEADLINE, wait).await {
        Ok(files) => files,
        Err(_) => panic!(
            "no notification showing {what} within {DEADLINE:?}; dir now: {:?}",
            snapshot(dir, is_yaml).unwrap().files
        ),
    }
}

fn content<'a>(files: &'a [ConfigFile], name: &str) -> Option<&'a str> {
    files
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.content.as_str())
}

fn names(files: &[ConfigFile]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

#[tokio::test]
async fn notices_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.yaml");
    fs::write(&path, "v: 1\n").unwrap();
    let before = snapshot(dir.path(), is_yaml).unwrap().files;
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();

    fs::write(&path, "v: 2\n").unwrap();
    let after = until(&mut w, dir.path(), "v: 2", |f| {
        content(f, "orders.yaml") == Some("v: 2\n")
    })
    .await;
    assert_ne!(before[0].hash, after[0].hash);
    assert_eq!(diff(&before, &after).changed, ["orders.yaml"]);
}

#[tokio::test]
async fn notices_a_create() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), "a\n").unwrap();
    let before = snapshot(dir.path(), is_yaml).unwrap().files;
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();

    fs::write(dir.path().join("b.yml"), "b\n").unwrap();
    let after = until(&mut w, dir.path(), "b.yml", |f| {
        content(f, "b.yml") == Some("b\n")
    })
    .await;
    assert_eq!(names(&after), ["a.yaml", "b.yml"]);
    assert_eq!(diff(&before, &after).added, ["b.yml"]);
}

#[tokio::test]
async fn notices_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), "a\n").unwrap();
    fs::write(dir.path().join("b.yaml"), "b\n").unwrap();
    let before = snapshot(dir.path(), is_yaml).unwrap().files;
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();

    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let after = until(&mut w, dir.path(), "a.yaml gone", |f| f.len() == 1).await;
    assert_eq!(names(&after), ["b.yaml"]);
    assert_eq!(diff(&before, &after).removed, ["a.yaml"]);
}

#[tokio::test]
async fn notices_an_atomic_rename_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.yaml");
    fs::write(&path, "v: 1\n").unwrap();
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();

    // How editors and `kubectl cp`-like tools save: write aside, then rename over.
    let tmp = dir.path().join(".orders.yaml.tmp");
    fs::write(&tmp, "v: 2\n").unwrap();
    fs::rename(&tmp, &path).unwrap();
    let after = until(&mut w, dir.path(), "v: 2", |f| {
        content(f, "orders.yaml") == Some("v: 2\n")
    })
    .await;
    assert_eq!(names(&after), ["orders.yaml"], "temp file is hidden");
}

/// Lays out a ConfigMap volume revision the way kubelet's AtomicWriter does.
struct ConfigMapVolume<'a> {
    dir: &'a Path,
    revision: u32,
}

impl<'a> ConfigMapVolume<'a> {
    fn create(dir: &'a Path, files: &[(&str, &str)]) -> Self {
        let mut volume = Self { dir, revision: 0 };
        volume.update(files);
        volume
    }

    /// New timestamped dir, `..data_tmp` → it, rename over `..data`, add user-visible links
    /// for new keys, remove links for dropped keys, delete the old timestamped dir.
    fn update(&mut self, files: &[(&str, &str)]) {
        let old = fs::read_link(self.dir.join("..data")).ok();
        self.revision += 1;
        let ts = format!("..2026_01_02_03_04_05.{:09}", self.revision);
        fs::create_dir(self.dir.join(&ts)).unwrap();
        for (name, text) in files {
            fs::write(self.dir.join(&ts).join(name), text).unwrap();
        }
        symlink(&ts, self.dir.join("..data_tmp")).unwrap();
        fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(name), link).unwrap();
            }
        }
        for entry in fs::read_dir(self.dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.starts_with('.') && !files.iter().any(|(n, _)| *n == name) {
                fs::remove_file(self.dir.join(name)).unwrap();
            }
        }
        if let Some(old) = old {
            fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

#[tokio::test]
async fn notices_configmap_data_symlink_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::create(dir.path(), &[("orders.yaml", "v: 1\n")]);
    let before = snapshot(dir.path(), is_yaml).unwrap().files;
    assert_eq!(
        names(&before),
        ["orders.yaml"],
        "kubelet's ..entries are hidden"
    );
    assert_eq!(before[0].content, "v: 1\n", "symlinks are followed");
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();

    volume.update(&[("orders.yaml", "v: 2\n")]);
    until(&mut w, dir.path(), "v: 2 after the first swap", |f| {
        content(f, "orders.yaml") == Some("v: 2\n")
    })
    .await;

    // Again, to prove the watch survived the removal of the directory it was following.
    volume.update(&[("orders.yaml", "v: 3\n"), ("payments.yaml", "p: 1\n")]);
    let after = until(&mut w, dir.path(), "v: 3 and payments.yaml", |f| {
        content(f, "orders.yaml") == Some("v: 3\n") && content(f, "payments.yaml").is_some()
    })
    .await;
    assert_eq!(names(&after), ["orders.yaml", "payments.yaml"]);

    volume.update(&[("payments.yaml", "p: 2\n")]);
    let after = until(&mut w, dir.path(), "orders.yaml dropped", |f| {
        names(f) == ["payments.yaml"] && content(f, "payments.yaml") == Some("p: 2\n")
    })
    .await;
    assert_eq!(diff(&before, &after).removed, ["orders.yaml"]);
}

#[tokio::test]
async fn notices_an_edit_inside_the_data_target() {
    // Writing through `orders.yaml -> ..data/orders.yaml` produces events only in the target
    // directory, which is why it is watched too.
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::create(dir.path(), &[("orders.yaml", "v: 1\n")]);
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();

    fs::write(dir.path().join("orders.yaml"), "v: edited\n").unwrap();
    until(&mut w, dir.path(), "the edit", |f| {
        content(f, "orders.yaml") == Some("v: edited\n")
    })
    .await;

    // After a swap the watch must follow `..data` to the new directory.
    volume.update(&[("orders.yaml", "v: 2\n")]);
    until(&mut w, dir.path(), "the swap", |f| {
        content(f, "orders.yaml") == Some("v: 2\n")
    })
    .await;
    fs::write(dir.path().join("orders.yaml"), "v: edited again\n").unwrap();
    until(&mut w, dir.path(), "the edit after the swap", |f| {
        content(f, "orders.yaml") == Some("v: edited again\n")
    })
    .await;
}

#[tokio::test]
async fn reading_the_dir_is_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), "a\n").unwrap();
    let mut w = watch_dir(dir.path(), DEBOUNCE).unwrap();
    for _ in 0..3 {
        snapshot(dir.path(), is_yaml).unwrap();
    }
    // Proving an absence needs a bounded wait: many debounce periods.
    let quiet = timeout(DEBOUNCE * 10, w.changed()).await;
    assert!(quiet.is_err(), "a snapshot must not trigger a reload");
    assert_eq!(w.generation(), 0);

    fs::write(dir.path().join("a.yaml"), "b\n").unwrap();
    until(&mut w, dir.path(), "the edit", |f| {
        content(f, "a.yaml") == Some("b\n")
    })
    .await;
}

#[tokio::test]
async fn dropping_the_watcher_closes_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let w = watch_dir(dir.path(), DEBOUNCE).unwrap();
    let mut rx = w.subscribe();
    drop(w);
    let closed = timeout(DEADLINE, rx.changed()).await.expect("not closed");
    assert!(closed.is_err());
}

#[tokio::test]
async fn watching_a_missing_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = watch_dir(dir.path().join("nope"), DEBOUNCE).unwrap_err();
    assert!(
        matches!(err, watch::WatchError::NotADirectory { .. }),
        "{err}"
    );
}

#[test]
fn snapshot_hash_changes_iff_content_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    fs::write(&path, "x: 1\n").unwrap();
    let first = snapshot(dir.path(), is_yaml).unwrap().files;

    fs::write(&path, "x: 1\n").unwrap();
    let rewritten = snapshot(dir.path(), is_yaml).unwrap().files;
    assert_eq!(first, rewritten, "same bytes, same hash");
    assert!(diff(&first, &rewritten).is_empty());

    fs::write(&path, "x: 2\n").unwrap();
    let edited = snapshot(dir.path(), is_yaml).unwrap().files;
    assert_ne!(first[0].hash, edited[0].hash);
    assert_eq!(edited[0].hash.len(), 64);

    fs::write(&path, "x: 1\n").unwrap();
    assert_eq!(
        snapshot(dir.path(), is_yaml).unwrap().files[0].hash,
        first[0].hash
    );
}

#[test]
fn snapshot_reads_only_visible_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("b.yaml"), "b\n").unwrap();
    fs::write(d.join("a.yml"), "a\n").unwrap();
    fs::write(d.join("README.md"), "docs\n").unwrap();
    fs::write(d.join(".b.yaml.swp"), "swap\n").unwrap();
    fs::write(d.join("b.yaml~"), "backup\n").unwrap();
    fs::create_dir(d.join("dir.yaml")).unwrap();
    symlink(d.join("missing.yaml"), d.join("dangling.yaml")).unwrap();
    symlink("b.yaml", d.join("link.yaml")).unwrap();

    let files = snapshot(d, is_yaml).unwrap().files;
    assert_eq!(names(&files), ["a.yml", "b.yaml", "link.yaml"]);
    assert_eq!(files[2].content, "b\n");
    assert_eq!(files[1].hash, files[2].hash);

    let only_link = snapshot(d, |name| name == "link.yaml").unwrap().files;
    assert_eq!(names(&only_link), ["link.yaml"]);
}

#[test]
fn files_that_cannot_be_read_are_their_own_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("bad.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    symlink("loop-b.yaml", d.join("loop-a.yaml")).unwrap();
    symlink("loop-a.yaml", d.join("loop-b.yaml")).unwrap();
    let big = "x".repeat(usize::try_from(watch::MAX_CONFIG_FILE_SIZE).unwrap() + 1);
    fs::write(d.join("big.yaml"), &big).unwrap();
    fs::write(d.join("edge.yaml"), &big[1..]).unwrap();
    fs::write(d.join("good.yaml"), "good\n").unwrap();

    let found = snapshot(d, is_yaml).unwrap();
    // A file of exactly the limit is read.
    assert_eq!(names(&found.files), ["edge.yaml", "good.yaml"]);
    let problems: Vec<(&str, String)> = found
        .unreadable
        .iter()
        .map(|u| (u.name.as_str(), u.error.to_string()))
        .collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(matches!(
        found.unreadable[0].error,
        watch::WatchError::NotUtf8 { .. }
    ));
    assert!(problems[0].1.contains("bad.yaml"), "{problems:?}");
    assert!(
        problems[1].1.contains("larger than 1048576 bytes"),
        "{problems:?}"
    );
    for (name, error) in &problems[2..] {
        assert!(name.starts_with("loop-"), "{problems:?}");
        assert!(error.contains("symbolic links"), "{error}");
    }
}
