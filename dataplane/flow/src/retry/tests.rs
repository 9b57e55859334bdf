//! The retry policy: backoff, jitter, `Retry-After` and classification of attempts.

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
