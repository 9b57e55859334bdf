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
mod tests;
