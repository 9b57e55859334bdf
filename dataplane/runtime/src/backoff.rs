//! Backoff shared by every part of Fiso that waits before trying again: the delay shapes of
//! `errorHandling` / Link `retry` (`exponential` / `constant` / `linear`, capped),
//! `Retry-After` parsing, and [`Restart`], the doubling delay between restarts of something
//! that keeps failing (a flow's source, a Temporal connection, an operator render).

use std::time::{Duration, SystemTime};

use fiso_config::common::Backoff;
use tokio_util::sync::CancellationToken;

/// The un-jittered delay before retry number `retry` (0 = the first retry), capped at `max`.
pub fn base_delay(shape: Backoff, initial: Duration, max: Duration, retry: u32) -> Duration {
    let d = match shape {
        Backoff::Constant => initial,
        Backoff::Linear => initial.saturating_mul(retry.saturating_add(1)),
        Backoff::Exponential => initial.saturating_mul(2u32.saturating_pow(retry.min(31))),
    };
    d.min(max)
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT` → how long from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before each restart of one thing that keeps failing: `initial`, doubled per
/// consecutive failure, capped at `max`; [`reset`](Restart::reset) after a success.
///
/// Owned by the loop that restarts (one per flow, per connection, per selection), so it needs
/// no locking. The usual shape:
///
/// ```
/// # use std::time::Duration;
/// # use fiso_runtime::backoff::Restart;
/// # use tokio_util::sync::CancellationToken;
/// # async fn connect() -> Result<(), String> { Ok(()) }
/// # async fn run(cancel: CancellationToken) {
/// let mut restart = Restart::new(Duration::from_millis(500), Duration::from_secs(5));
/// loop {
///     match connect().await {
///         Ok(()) => return,
///         Err(e) => tracing::warn!(error = %e, retry_in = ?restart.delay(), "not connected"),
///     }
///     if !restart.sleep(&cancel).await {
///         return; // cancelled while waiting
///     }
/// }
/// # }
/// ```
///
/// A loop that does not wait itself (the operator re-queues the work item instead) takes
/// [`next_delay`](Restart::next_delay) and schedules with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    initial: Duration,
    max: Duration,
    /// Consecutive failures whose delay has been handed out since the last reset.
    failures: u32,
}

impl Restart {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Restart {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay [`next_delay`](Restart::next_delay) will return, for logging before waiting.
    pub fn delay(&self) -> Duration {
        base_delay(Backoff::Exponential, self.initial, self.max, self.failures)
    }

    /// The delay before this restart (`initial` the first time), counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay();
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Consecutive failures counted since the last [`reset`](Restart::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Waits [`next_delay`](Restart::next_delay); `false` when `cancel` fired first (the caller
    /// stops instead of restarting), `true` when the delay elapsed.
    pub async fn sleep(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn restart_doubles_up_to_the_cap() {
        let mut r = Restart::new(secs(1), secs(30));
        let delays: Vec<u64> = (0..8).map(|_| r.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(r.failures(), 8);
        for _ in 0..100 {
            r.next_delay();
        }
        assert_eq!(r.delay(), secs(30), "no overflow after many failures");
    }

    #[test]
    fn delay_peeks_without_counting() {
        let mut r = Restart::new(Duration::from_millis(500), secs(5));
        assert_eq!(r.delay(), Duration::from_millis(500));
        assert_eq!(r.delay(), Duration::from_millis(500));
        assert_eq!(r.next_delay(), Duration::from_millis(500));
        assert_eq!(r.delay(), secs(1));
    }

    #[test]
    fn reset_starts_over() {
        let mut r = Restart::new(secs(5), secs(300));
        r.next_delay();
        r.next_delay();
        assert_eq!(r.delay(), secs(20));
        r.reset();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_delay(), secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_each_delay_in_turn() {
        let cancel = CancellationToken::new();
        let mut r = Restart::new(secs(1), secs(3));
        let start = Instant::now();
        for total in [1, 3, 6, 9] {
            assert!(r.sleep(&cancel).await);
            assert_eq!(start.elapsed(), secs(total));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let mut r = Restart::new(secs(10), secs(10));
        let start = Instant::now();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(secs(3)).await;
            canceller.cancel();
        });
        assert!(!r.sleep(&cancel).await);
        assert_eq!(start.elapsed(), secs(3));
        assert!(
            !r.sleep(&cancel).await,
            "an already cancelled token returns at once"
        );
        assert_eq!(start.elapsed(), secs(3));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 120 ", now), Some(secs(120)));
        let later = httpdate::fmt_http_date(now + secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(secs(30)));
        let earlier = httpdate::fmt_http_date(now - secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
