//! Rate limit per target: a token bucket (`requestsPerSecond`, `burst` defaulting to the rate
//! rounded up). A request that finds the bucket empty is refused with 429 and a `Retry-After`
//! saying when the next token arrives; it never waits in a queue the app cannot see.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fiso_config::link::RateLimitConfig;
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::layer::{Concern, Next};
use crate::metrics::LinkMetrics;
use crate::response::{error_retry_after, ErrorCode, Request, Response};

/// A token bucket on tokio's clock (so tests can pause time).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let rate = cfg.requests_per_second.max(f64::MIN_POSITIVE);
        let capacity = f64::from(cfg.burst.unwrap_or_else(|| rate.ceil() as u32).max(1));
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            refilled: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The rate-limit concern of one target.
#[derive(Clone)]
pub struct RateLimiter {
    target: Arc<str>,
    bucket: Arc<Mutex<TokenBucket>>,
    metrics: LinkMetrics,
}

impl RateLimiter {
    pub fn new(target: &str, cfg: &RateLimitConfig, metrics: LinkMetrics) -> Self {
        let target: Arc<str> = target.into();
        metrics.rate_limit_started(&target);
        RateLimiter {
            target,
            bucket: Arc::new(Mutex::new(TokenBucket::new(cfg))),
            metrics,
        }
    }
}

impl Concern for RateLimiter {
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response> {
        let taken = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take();
        if let Err(wait) = taken {
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
        let mut b = bucket(10.0, Some(3));
        for _ in 0..3 {
            assert_eq!(b.try_take(), Ok(()));
        }
        let wait = b.try_take().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        tokio::time::advance(wait).await;
        assert_eq!(b.try_take(), Ok(()));
        assert!(b.try_take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn burst_defaults_to_the_rate_rounded_up() {
        let mut b = bucket(2.5, None);
        let granted = (0..10).filter(|_| b.try_take().is_ok()).count();
        assert_eq!(granted, 3);
    }

    /// Over 2 s of clients asking every millisecond, the bucket grants `2 * rate + burst`
    /// requests within 5 %.
    #[tokio::test(start_paused = true)]
    async fn accurate_over_two_seconds() {
        for rps in [5.0, 50.0, 200.0, 1000.0] {
            let burst = 10;
            let mut b = bucket(rps, Some(burst));
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
