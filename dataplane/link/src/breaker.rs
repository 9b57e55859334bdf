//! Circuit breaker per target. `failureThreshold` consecutive failures (a 5xx, a timeout, a
//! connection error — never a 4xx) open it; an answer the proxy made up because of the client
//! (it hung up mid-body, sent a malformed body: [`crate::client_fault`]) is not counted at all; while open every request gets 503 with
//! `Retry-After` = the time left; after `resetTimeout` it is half-open and admits
//! `successThreshold` probes at a time; that many successes close it, one failure opens it
//! again. Every transition is logged and sets `fiso_link_circuit_state`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fiso_config::link::{
    CircuitBreakerConfig, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RESET_TIMEOUT,
    DEFAULT_SUCCESS_THRESHOLD,
};
use fiso_runtime::outline;
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::layer::{Concern, Next};
use crate::metrics::{CircuitState, LinkMetrics};
use crate::response::{error_retry_after, ErrorCode, ProxyError, Request, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes: u32, successes: u32 },
}

/// The breaker's state machine, on tokio's clock.
#[derive(Debug)]
pub struct Breaker {
    target: Arc<str>,
    failure_threshold: u32,
    success_threshold: u32,
    reset_timeout: Duration,
    state: State,
    metrics: LinkMetrics,
}

/// Whether a request may go through.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Rejected { retry_after: Duration },
}

impl Breaker {
    pub fn new(target: &str, cfg: &CircuitBreakerConfig, metrics: LinkMetrics) -> Self {
        let target: Arc<str> = target.into();
        metrics.circuit(&target, CircuitState::Closed);
        Breaker {
            target,
            failure_threshold: cfg
                .failure_threshold
                .unwrap_or(DEFAULT_FAILURE_THRESHOLD)
                .max(1),
            success_threshold: cfg
                .success_threshold
                .unwrap_or(DEFAULT_SUCCESS_THRESHOLD)
                .max(1),
            reset_timeout: cfg.reset_timeout.unwrap_or(DEFAULT_RESET_TIMEOUT),
            state: State::Closed { failures: 0 },
            metrics,
        }
    }

    /// Closed, with no failure counted.
    fn is_healthy(&self) -> bool {
        self.state == State::Closed { failures: 0 }
    }

    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    pub fn admit(&mut self) -> Admission {
        let now = Instant::now();
        match self.state {
            State::Closed { .. } => Admission::Admitted,
            State::Open { until } if now < until => Admission::Rejected {
                retry_after: until - now,
            },
            State::Open { .. } => {
                self.set(State::HalfOpen {
                    probes: 1,
                    successes: 0,
                });
                Admission::Admitted
            }
            State::HalfOpen { probes, successes } if probes < self.success_threshold => {
                self.state = State::HalfOpen {
                    probes: probes + 1,
                    successes,
                };
                Admission::Admitted
            }
            State::HalfOpen { .. } => Admission::Rejected {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    pub fn record(&mut self, success: bool) {
        match (self.state, success) {
            (State::Closed { .. }, true) => self.state = State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.failure_threshold => {
                self.open()
            }
            (State::Closed { failures }, false) => {
                self.state = State::Closed {
                    failures: failures + 1,
                }
            }
            (State::HalfOpen { successes, .. }, true)
                if successes + 1 >= self.success_threshold =>
            {
                self.set(State::Closed { failures: 0 })
            }
            (State::HalfOpen { probes, successes }, true) => {
                self.state = State::HalfOpen {
                    probes: probes.saturating_sub(1),
                    successes: successes + 1,
                }
            }
            (State::HalfOpen { .. }, false) => self.open(),
            // An answer to a request admitted before the breaker opened changes nothing.
            (State::Open { .. }, _) => {}
        }
    }

    /// Forgets an admitted request whose answer said nothing about the target: a half-open
    /// probe slot it held is given back, nothing else changes.
    pub fn forget(&mut self) {
        if let State::HalfOpen { probes, successes } = self.state {
            self.state = State::HalfOpen {
                probes: probes.saturating_sub(1),
                successes,
            };
        }
    }

    fn open(&mut self) {
        self.set(State::Open {
            until: Instant::now() + self.reset_timeout,
        });
    }

    fn set(&mut self, state: State) {
        self.state = state;
        let state = self.state();
        tracing::warn!(target_name = %self.target, state = ?state, "circuit breaker transition");
        self.metrics.circuit(&self.target, state);
    }
}

/// What an answer says about the target: `Some(true)` it failed (any 5xx, including the 502 /
/// 504 the proxy answers for connection errors and timeouts), `Some(false)` it is fine (any
/// other answer of the upstream), `None` nothing (the proxy answered a client error itself).
pub fn upstream_failed(response: &Response) -> Option<bool> {
    match response.extensions().get::<ProxyError>() {
        Some(ProxyError(code)) if code.is_client_error() => None,
        _ => Some(response.status().is_server_error()),
    }
}

/// The circuit-breaker concern of one target.
#[derive(Clone)]
pub struct CircuitBreaker {
    breaker: Arc<Shared>,
}

/// The state machine, and whether it is closed with no failure counted: the state in which a
/// request is admitted and a success changes nothing, so neither needs the lock. Every core's
/// requests took the lock twice, and it moved between the cores' caches each time.
struct Shared {
    state: Mutex<Breaker>,
    healthy: AtomicBool,
}

impl Shared {
    /// Changes the state machine under its lock.
    fn change<R>(&self, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut b = lock(&self.state);
        let r = f(&mut b);
        self.healthy.store(b.is_healthy(), Ordering::Release);
        r
    }
}

impl CircuitBreaker {
    pub fn new(target: &str, cfg: &CircuitBreakerConfig, metrics: LinkMetrics) -> Self {
        CircuitBreaker {
            breaker: Arc::new(Shared {
                state: Mutex::new(Breaker::new(target, cfg, metrics)),
                healthy: AtomicBool::new(true),
            }),
        }
    }
}

fn lock(b: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    b.lock().unwrap_or_else(|e| e.into_inner())
}

/// The breaker's state as the request met it (after admission: the request that ends the
/// open period sees `half_open`), on the answer for the `link <target>` span; set only when
/// traces are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSeen(pub CircuitState);

impl Concern for CircuitBreaker {
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response> {
        let breaker = Arc::clone(&self.breaker);
        let traced = fiso_runtime::otel::enabled();
        let (admission, seen) = if breaker.healthy.load(Ordering::Acquire) {
            let seen = traced.then_some(CircuitSeen(CircuitState::Closed));
            (Admission::Admitted, seen)
        } else {
            breaker.change(|b| (b.admit(), traced.then(|| CircuitSeen(b.state()))))
        };
        if let Admission::Rejected { retry_after } = admission {
            let target = lock(&breaker.state).target.clone();
            let mut response = error_retry_after(
                ErrorCode::CircuitOpen,
                format!("circuit breaker of target `{target}` is open"),
                retry_after,
            );
            if let Some(seen) = seen {
                response.extensions_mut().insert(seen);
            }
            return Box::pin(async move { response });
        }
        let answer = next.handle(req);
        outline::pinned(|| async move {
            let mut response = answer.await;
            let failed = upstream_failed(&response);
            // A success or a client's fault leaves a healthy breaker as it is.
            if failed == Some(true) || !breaker.healthy.load(Ordering::Acquire) {
                breaker.change(|b| match failed {
                    Some(failed) => b.record(!failed),
                    None => b.forget(),
                });
            }
            if let Some(seen) = seen {
                response.extensions_mut().insert(seen);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, successes: u32, reset: u64) -> Breaker {
        Breaker::new(
            "t",
            &CircuitBreakerConfig {
                enabled: true,
                failure_threshold: Some(failures),
                success_threshold: Some(successes),
                reset_timeout: Some(Duration::from_secs(reset)),
            },
            LinkMetrics::unregistered(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn full_cycle() {
        let mut b = breaker(3, 2, 30);
        let metrics = b.metrics.clone();
        // A success resets the count of consecutive failures.
        for ok in [false, false, true, false, false] {
            assert_eq!(b.admit(), Admission::Admitted);
            b.record(ok);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.record(false);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(metrics.circuit_state("t"), 2);
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_after: Duration::from_secs(30)
            }
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_after: Duration::from_secs(20)
            }
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        // Half-open: two probes at a time, a third waits.
        assert_eq!(b.admit(), Admission::Admitted);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(metrics.circuit_state("t"), 1);
        assert_eq!(b.admit(), Admission::Admitted);
        assert!(matches!(b.admit(), Admission::Rejected { .. }));
        b.record(true);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record(true);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(metrics.circuit_state("t"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn client_faults_neither_fail_nor_heal_the_target() {
        use crate::client_fault::ClientFault;
        use crate::layer::{layer, leaf};

        let breaker = CircuitBreaker::new(
            "t",
            &CircuitBreakerConfig {
                enabled: true,
                failure_threshold: Some(2),
                success_threshold: Some(1),
                reset_timeout: Some(Duration::from_secs(30)),
            },
            LinkMetrics::unregistered(),
        );
        let answers = |faults: Vec<Response>| {
            let faults = Arc::new(Mutex::new(faults));
            leaf(
                faults,
                |faults: Arc<Mutex<Vec<Response>>>, _req| async move {
                    faults.lock().unwrap().remove(0)
                },
            )
        };
        let upstream_500 = || {
            let mut r = Response::new(axum::body::Body::empty());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        };
        let svc = layer(
            breaker.clone(),
            answers(vec![
                upstream_500(),
                ClientFault::Closed.response(),
                ClientFault::Malformed.response(),
                ClientFault::Stalled.response(),
                upstream_500(),
            ]),
        );
        let statuses = {
            let mut out = Vec::new();
            for _ in 0..5 {
                let r = svc.handle(Request::new(axum::body::Body::empty()));
                out.push(r.await.status().as_u16());
            }
            out
        };
        assert_eq!(statuses, [500, 499, 400, 408, 500]);
        // The client faults did not reset the count: the two upstream 500s are consecutive.
        assert_eq!(lock(&breaker.breaker.state).state(), CircuitState::Open);

        // Half-open: a probe that ends in a client fault gives its slot back.
        tokio::time::advance(Duration::from_secs(30)).await;
        let mut b = lock(&breaker.breaker.state);
        assert_eq!(b.admit(), Admission::Admitted);
        b.forget();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.admit(), Admission::Admitted, "the slot was given back");
        b.record(true);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let mut b = breaker(1, 1, 5);
        b.record(false);
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(), Admission::Admitted);
        b.record(false);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.admit(),
            Admission::Rejected {
                retry_after: Duration::from_secs(5)
            }
        );
    }
}
