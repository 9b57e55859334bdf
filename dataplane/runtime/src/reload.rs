//! The config reload loop that `fiso flow` and `fiso link` share: after every settled change
//! of a watched directory ([`DirWatcher`]), apply the config again, one reload at a time, until
//! told to stop.
//!
//! What a reload does (snapshot, diff, rebuild what changed, keep the last good config) stays
//! with the caller; this is only the loop, so that every process collapses changes, stops and
//! shuts down the same way:
//!
//! * changes that settle while a reload runs are applied by exactly one more reload (the
//!   watcher's generation counter collapses them);
//! * a stop never interrupts a reload: [`ReloadLoop::stop`] returns once the reload in
//!   progress, if any, has finished, so a caller can tear down what reloads touch afterwards;
//! * the loop also ends when the watcher does.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use fiso_runtime::reload::ReloadLoop;
//! # use fiso_runtime::watch::{watch_dir, WatchError};
//! # struct Config; impl Config { fn reload(&self) {} }
//! # async fn run(config: Arc<Config>) -> Result<(), WatchError> {
//! // Watch first, then load: nothing changed in between is missed.
//! let watcher = watch_dir("/etc/fiso/flows", Duration::from_millis(300))?;
//! config.reload();
//! let reloads = ReloadLoop::spawn(watcher, move || {
//!     let config = Arc::clone(&config);
//!     async move { config.reload() }
//! });
//! // ... on shutdown:
//! reloads.stop().await;
//! # Ok(()) }
//! ```

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::watch::DirWatcher;

/// Calls `apply` after every change `watcher` reports, until `stop` is cancelled (checked
/// between reloads, never during one) or the watcher ends.
pub async fn reload_loop<F, Fut>(mut watcher: DirWatcher, stop: CancellationToken, mut apply: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = watcher.changed() => {
                if changed.is_none() {
                    return;
                }
                apply().await;
            }
        }
    }
}

/// [`reload_loop`] running as its own task.
#[derive(Debug)]
pub struct ReloadLoop {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ReloadLoop {
    /// Spawns the loop on the current Tokio runtime.
    pub fn spawn<F, Fut>(watcher: DirWatcher, apply: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(reload_loop(watcher, stop.clone(), apply));
        ReloadLoop { stop, task }
    }

    /// Stops reloading; returns once a reload in progress has finished.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What a reload changed, in words for its log line: `replaced `orders`; started `a`, `b``.
/// `changes` pairs a verb with the names it applies to; verbs with no names are left out.
pub fn changes_in_words(changes: &[(&str, &[impl AsRef<str>])]) -> String {
    changes
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(verb, names)| {
            let names: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
            format!("{verb} {}", names.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio::time::{sleep, Instant};

    use super::*;

    /// A loop whose reloads take `took` each, with the handle that reports changes and the
    /// count of reloads done.
    fn slow_loop(took: Duration) -> (watch::Sender<u64>, Arc<AtomicU32>, ReloadLoop) {
        let (changes, generation) = watch::channel(0);
        let done = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&done);
        let reloads = ReloadLoop::spawn(DirWatcher::from_generation(generation), move || {
            let counter = Arc::clone(&counter);
            async move {
                sleep(took).await;
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        (changes, done, reloads)
    }

    fn change(changes: &watch::Sender<u64>) {
        changes.send_modify(|g| *g += 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_reload_per_change() {
        let (changes, done, reloads) = slow_loop(Duration::from_millis(10));
        sleep(Duration::from_secs(1)).await;
        assert_eq!(done.load(Ordering::SeqCst), 0, "nothing changed yet");
        for n in 1..=3 {
            change(&changes);
            sleep(Duration::from_secs(1)).await;
            assert_eq!(done.load(Ordering::SeqCst), n);
        }
        reloads.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn changes_during_a_reload_make_one_more() {
        let (changes, done, reloads) = slow_loop(Duration::from_secs(10));
        change(&changes);
        sleep(Duration::from_secs(1)).await;
        for _ in 0..5 {
            change(&changes);
        }
        sleep(Duration::from_secs(60)).await;
        assert_eq!(done.load(Ordering::SeqCst), 2);
        reloads.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn stop_lets_the_reload_in_progress_finish() {
        let (changes, done, reloads) = slow_loop(Duration::from_secs(10));
        change(&changes);
        sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        reloads.stop().await;
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        assert_eq!(done.load(Ordering::SeqCst), 1);
        change(&changes);
        sleep(Duration::from_secs(60)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "no reload after stop");
    }

    #[tokio::test(start_paused = true)]
    async fn ends_with_the_watcher() {
        let (changes, done, reloads) = slow_loop(Duration::ZERO);
        drop(changes);
        tokio::time::timeout(Duration::from_secs(1), reloads.task)
            .await
            .expect("the loop ended")
            .expect("no panic");
        assert_eq!(done.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn changes_are_said_in_words() {
        let none: &[&str] = &[];
        assert_eq!(
            changes_in_words(&[
                ("started", &["a", "b"][..]),
                ("replaced", none),
                ("stopped", &["c"][..])
            ]),
            "started `a`, `b`; stopped `c`"
        );
        assert_eq!(changes_in_words(&[("started", none)]), "");
    }
}
