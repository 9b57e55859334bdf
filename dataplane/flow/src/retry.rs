//! Delivery retry policy: how long to wait before attempt *n*, given the flow's
//! `errorHandling` (backoff shape, intervals, full jitter) and an upstream `Retry-After`.

use std::time::Duration;

use fiso_config::common::Backoff;
use fiso_config::flow::{
    ErrorHandling, DEFAULT_INITIAL_INTERVAL, DEFAULT_MAX_INTERVAL, DEFAULT_MAX_RETRIES,
};

/// Retries after the first attempt, and the wait before each.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Backoff,
    pub initial: Duration,
    pub max: Duration,
    /// Full jitter (AWS "exponential backoff and jitter"): wait uniformly in `[0, delay]`, which
    /// spreads a thundering herd best. Off only in tests that assert exact delays.
    pub full_jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from_config(None)
    }
}

impl RetryPolicy {
    pub fn from_config(eh: Option<&ErrorHandling>) -> Self {
        let eh = eh.cloned().unwrap_or_default();
        RetryPolicy {
            max_retries: eh.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            backoff: eh.backoff.unwrap_or_default(),
            initial: eh.initial_interval.unwrap_or(DEFAULT_INITIAL_INTERVAL),
            max: eh.max_interval.unwrap_or(DEFAULT_MAX_INTERVAL),
            full_jitter: true,
        }
    }

    /// The un-jittered delay before retry number `retry` (0 = the first retry).
    pub fn base_delay(&self, retry: u32) -> Duration {
        fiso_runtime::backoff::base_delay(self.backoff, self.initial, self.max, retry)
    }

    /// The wait before retry `retry`: the upstream's `Retry-After` (capped at `max`) when it gave
    /// one, else the jittered backoff.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max);
        }
        let base = self.base_delay(retry);
        if self.full_jitter && !base.is_zero() {
            base.mul_f64(fastrand::f64())
        } else {
            base
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Success(T),
    /// Retrying cannot help (a 4xx other than 429, ...).
    Permanent(E),
    /// Worth another try, after the upstream's `Retry-After` when it sent one.
    Retryable(E, Option<Duration>),
}

/// How a retried operation ended without success.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryError<E> {
    Permanent(E),
    Exhausted { attempts: u32, last: E },
}

/// Runs `attempt` (given the 0-based attempt number) until it succeeds, fails permanently, or
/// `policy.max_retries` retries have failed, sleeping `policy.delay` between attempts.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<T, E>>,
{
    let mut n = 0u32;
    loop {
        match attempt(n).await {
            Attempt::Success(v) => return Ok(v),
            Attempt::Permanent(e) => return Err(RetryError::Permanent(e)),
            Attempt::Retryable(e, retry_after) => {
                if n >= policy.max_retries {
                    return Err(RetryError::Exhausted {
                        attempts: n + 1,
                        last: e,
                    });
                }
                tokio::time::sleep(policy.delay(n, retry_after)).await;
                n += 1;
            }
        }
    }
}

pub use fiso_runtime::backoff::parse_retry_after;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            backoff,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            full_jitter: false,
        }
    }

    #[test]
    fn backoff_shapes_are_capped() {
        let ms = |p: &RetryPolicy| {
            (0..6)
                .map(|n| p.base_delay(n).as_millis())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ms(&policy(Backoff::Exponential)),
            vec![100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(
            ms(&policy(Backoff::Linear)),
            vec![100, 200, 300, 400, 500, 600]
        );
        assert_eq!(ms(&policy(Backoff::Constant)), vec![100; 6]);
        assert_eq!(
            policy(Backoff::Exponential).base_delay(u32::MAX),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn full_jitter_stays_within_the_base_delay() {
        let p = RetryPolicy {
            full_jitter: true,
            ..policy(Backoff::Exponential)
        };
        for n in 0..6 {
            for _ in 0..200 {
                assert!(p.delay(n, None) <= p.base_delay(n));
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_max_interval() {
        let p = policy(Backoff::Exponential);
        assert_eq!(
            p.delay(0, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(60))),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn retry_after_formats() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// Fails `fail` times (asking for `retry_after` each time), then succeeds; records when
    /// (in paused Tokio time) each attempt started.
    async fn run(
        p: &RetryPolicy,
        fail: u32,
        retry_after: Option<Duration>,
    ) -> (Result<u32, RetryError<&'static str>>, Vec<Duration>) {
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        let r = with_retries(p, |n| {
            at.push(start.elapsed());
            async move {
                if n < fail {
                    Attempt::Retryable("503", retry_after)
                } else {
                    Attempt::Success(n)
                }
            }
        })
        .await;
        (r, at)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_the_backoff_in_paused_time() {
        let p = policy(Backoff::Exponential);
        let (r, at) = run(&p, 3, None).await;
        assert_eq!(r, Ok(3));
        let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 100, 300, 700]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_overrides_backoff_and_exhaustion_counts_attempts() {
        let p = policy(Backoff::Constant);
        let (r, at) = run(&p, 10, Some(Duration::from_millis(250))).await;
        assert_eq!(
            r,
            Err(RetryError::Exhausted {
                attempts: 6,
                last: "503"
            })
        );
        let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 250, 500, 750, 1000, 1250]);
    }

    #[tokio::test(start_paused = true)]
    async fn jittered_waits_stay_within_the_backoff() {
        let p = RetryPolicy {
            full_jitter: true,
            ..policy(Backoff::Exponential)
        };
        let (r, at) = run(&p, 5, None).await;
        assert_eq!(r, Ok(5));
        for (n, pair) in at.windows(2).enumerate() {
            assert!(pair[1] - pair[0] <= p.base_delay(n as u32), "{at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = with_retries(&policy(Backoff::Constant), |_| {
            calls += 1;
            async { Attempt::Permanent("400") }
        })
        .await;
        assert_eq!(r, Err(RetryError::Permanent("400")));
        assert_eq!(calls, 1);
    }

    #[test]
    fn defaults_from_config() {
        let p = RetryPolicy::from_config(None);
        assert_eq!(
            (p.max_retries, p.initial, p.max),
            (3, Duration::from_millis(200), Duration::from_secs(30))
        );
    }
}
