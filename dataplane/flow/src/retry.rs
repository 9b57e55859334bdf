//! Delivery retry policy: how long to wait before attempt *n*, given the flow's
//! `errorHandling` (backoff shape, intervals, full jitter) and an upstream `Retry-After`.

use std::time::{Duration, SystemTime};

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
        let d = match self.backoff {
            Backoff::Constant => self.initial,
            Backoff::Linear => self.initial.saturating_mul(retry.saturating_add(1)),
            Backoff::Exponential => self
                .initial
                .saturating_mul(2u32.saturating_pow(retry.min(31))),
        };
        d.min(self.max)
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

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT` → how long from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

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

    #[test]
    fn defaults_from_config() {
        let p = RetryPolicy::from_config(None);
        assert_eq!(
            (p.max_retries, p.initial, p.max),
            (3, Duration::from_millis(200), Duration::from_secs(30))
        );
    }
}
