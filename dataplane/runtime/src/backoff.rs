//! Backoff arithmetic shared by flow delivery retries and Link's retry layer: the delay shape
//! (`exponential` / `constant` / `linear`, capped) and `Retry-After` parsing.

use std::time::{Duration, SystemTime};

use fiso_config::common::Backoff;

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
