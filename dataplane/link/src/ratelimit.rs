//! Rate limit per target: a token bucket (`requestsPerSecond`, `burst` defaulting to the rate
//! rounded up). A request that finds the bucket empty is refused with 429 and a `Retry-After`
//! saying when the next token arrives; it never waits in a queue the app cannot see.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fiso_config::link::RateLimitConfig;
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::layer::{Concern, Next};
use crate::metrics::LinkMetrics;
use crate::response::{error_retry_after, ErrorCode, Request, Response};

/// A token bucket on tokio's clock (so tests can pause time), kept as the time its next token
/// is due (GCRA: the same grants and waits as counting tokens) in one atomic, so that the cores
/// taking tokens from it share no lock.
#[derive(Debug)]
pub struct TokenBucket {
    /// Nanoseconds between two tokens.
    interval: u64,
    /// How far past now the next token may be due: `burst` tokens' worth.
    tolerance: u64,
    start: Instant,
    /// When, in nanoseconds since `start`, a request would be granted with the bucket full.
    due: AtomicU64,
}

impl TokenBucket {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let rate = cfg.requests_per_second.max(f64::MIN_POSITIVE);
        let capacity = u64::from(cfg.burst.unwrap_or_else(|| rate.ceil() as u32).max(1));
        // At least a nanosecond: a faster rate is no limit this clock can tell from none.
        let interval = ((1e9 / rate).round() as u64).max(1);
        TokenBucket {
            interval,
            tolerance: interval.saturating_mul(capacity),
            start: Instant::now(),
            due: AtomicU64::new(0),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut due = self.due.load(Ordering::Relaxed);
        loop {
            let next = due.max(now).saturating_add(self.interval);
            let ahead = next - now;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match self
                .due
                .compare_exchange_weak(due, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => due = current,
            }
        }
    }
}

/// The rate-limit concern of one target.
#[derive(Clone)]
pub struct RateLimiter {
    target: Arc<str>,
    bucket: Arc<TokenBucket>,
    metrics: LinkMetrics,
}

impl RateLimiter {
    pub fn new(target: &str, cfg: &RateLimitConfig, metrics: LinkMetrics) -> Self {
        let target: Arc<str> = target.into();
        metrics.rate_limit_started(&target);
        RateLimiter {
            target,
            bucket: Arc::new(TokenBucket::new(cfg)),
            metrics,
        }
    }
}

impl Concern for RateLimiter {
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response> {
        if let Err(wait) = self.bucket.try_take() {
            self.metrics.rate_limited(&self.target);
            let response = error_retry_after(
                ErrorCode::RateLimited,
                format!("rate limit of target `{}` exceeded", self.target),
                wait,
            );
            return Box::pin(async move { response });
        }
        next.handle(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rps: f64, burst: Option<u32>) -> TokenBucket {
        TokenBucket::new(&RateLimitConfig {
            requests_per_second: rps,
            burst,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_the_rate() {
        let b = bucket(10.0, Some(3));
        for _ in 0..3 {
            assert_eq!(b.try_take(), Ok(()));
        }
        let wait = b.try_take().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        tokio::time::advance(wait).await;
        assert_eq!(b.try_take(), Ok(()));
        assert!(b.try_take().is_err());
    }

    #[test]
    fn threads_taking_at_once_get_the_burst_and_no_more() {
        let b = Arc::new(bucket(0.001, Some(100)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || (0..100).filter(|_| b.try_take().is_ok()).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_defaults_to_the_rate_rounded_up() {
        let b = bucket(2.5, None);
        let granted = (0..10).filter(|_| b.try_take().is_ok()).count();
        assert_eq!(granted, 3);
    }

    /// Over 2 s of clients asking every millisecond, the bucket grants `2 * rate + burst`
    /// requests within 5 %.
    #[tokio::test(start_paused = true)]
    async fn accurate_over_two_seconds() {
        for rps in [5.0, 50.0, 200.0, 1000.0] {
            let burst = 10;
            let b = bucket(rps, Some(burst));
            let mut granted = 0u32;
            for _ in 0..2000 {
                while b.try_take().is_ok() {
                    granted += 1;
                }
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            let expected = 2.0 * rps + f64::from(burst);
            let error = (f64::from(granted) - expected).abs() / expected;
            assert!(
                error <= 0.05,
                "rps {rps}: {granted} granted, {expected} expected"
            );
        }
    }
}
