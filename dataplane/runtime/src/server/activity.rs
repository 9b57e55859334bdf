//! What one connection is doing, as far as its deadlines care: requests being answered, when
//! it last became idle, whether a new request has started to arrive, and whether a request
//! body was left unread (then closing it needs a lingering close).
//!
//! The request and response body wrappers and the socket wrapper update it; a watchdog
//! ([`ConnActivity::expired`]) sleeps until the deadline it implies. Updating it wakes
//! nothing: a wake-up per request would poll the connection's task once more per request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ServerTimeouts;

const NONE: u64 = u64::MAX;

/// Shared by a connection's socket, its requests and its watchdog.
#[derive(Debug)]
pub(crate) struct ConnActivity {
    accepted: Instant,
    /// Requests whose response has not been sent yet.
    in_flight: AtomicUsize,
    /// Requests seen so far (the first one gets `readHeaderTimeout` from accept).
    requests: AtomicU64,
    /// Milliseconds after `accepted` when `in_flight` last dropped to 0.
    idle_since: AtomicU64,
    /// Milliseconds after `accepted` of the first byte read since then (HTTP/1: the next
    /// request's head is arriving), or [`NONE`].
    first_byte: AtomicU64,
    http2: AtomicBool,
    /// A request body was neither read to its end nor refused before the client sent it.
    body_unread: AtomicBool,
}

impl ConnActivity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnActivity {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            http2: AtomicBool::new(false),
            body_unread: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    /// A request's head has been read; the returned guard ends it when the response is sent
    /// (or abandoned).
    pub(crate) fn request_started(self: &Arc<Self>, http2: bool) -> InFlight {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// The socket read `n` bytes.
    pub(crate) fn read(&self, n: usize) {
        if n > 0
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.first_byte.load(Ordering::Relaxed) == NONE
        {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    pub(crate) fn body_pending(&self, pending: bool) {
        self.body_unread.store(pending, Ordering::Relaxed);
    }

    /// Whether closing must drain what the client may still be sending.
    pub(crate) fn needs_linger(&self) -> bool {
        self.body_unread.load(Ordering::Relaxed)
    }

    /// The deadline in milliseconds after accept, if the connection has one right now.
    fn deadline(&self, t: &ServerTimeouts) -> Option<u64> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Answering: the request body has its own progress deadline, the answer is the
            // handler's (sink / upstream timeouts).
            return None;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        if self.requests.load(Ordering::Relaxed) == 0 {
            // From accept to a complete first request: nothing sent, a trickled head, an h2c
            // preface and SETTINGS with no stream all end here.
            return Some(ms(t.read_header));
        }
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        if self.http2.load(Ordering::Relaxed) || first_byte == NONE {
            // HTTP/2 frames without a stream (PING, SETTINGS) do not make a connection busy.
            return Some(idle_since.saturating_add(ms(t.idle)));
        }
        Some(first_byte.saturating_add(ms(t.read_header)))
    }

    /// Resolves once the connection has outlived its deadline. Nothing tells it of a change:
    /// it looks again at least every `min(readHeaderTimeout, idleTimeout)`, and no change can
    /// bring the deadline closer than that to the moment it happens (a request's end starts
    /// `idleTimeout`, the next request's first byte `readHeaderTimeout`), so it still fires on
    /// the deadline itself.
    pub(crate) async fn expired(&self, t: &ServerTimeouts) {
        // Tokio's timers tick in milliseconds: a zero timeout, which validation refuses, must
        // still not make this a busy loop while a request is in flight.
        let recheck = t.read_header.min(t.idle).max(Duration::from_millis(1));
        // One timer, moved to each wake-up.
        let sleep = tokio::time::sleep_until(self.accepted);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            let wake = match self.deadline(t) {
                None => now + recheck,
                Some(at) => {
                    let at = self.accepted + Duration::from_millis(at);
                    if at <= now {
                        return;
                    }
                    at.min(now + recheck)
                }
            };
            sleep.as_mut().reset(wake);
            (&mut sleep).await;
        }
    }
}

/// One request being answered.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnActivity>);

impl InFlight {
    pub(crate) fn activity(&self) -> &Arc<ConnActivity> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::Relaxed);
        a.first_byte.store(NONE, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> ServerTimeouts {
        ServerTimeouts {
            read_header: Duration::from_secs(10),
            idle: Duration::from_secs(75),
            body: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_gets_the_header_deadline_from_accept() {
        let a = ConnActivity::new();
        assert_eq!(a.deadline(&timeouts()), Some(10_000));
        tokio::time::advance(Duration::from_secs(3)).await;
        a.read(5);
        assert_eq!(
            a.deadline(&timeouts()),
            Some(10_000),
            "bytes do not extend it"
        );
        let before = Instant::now();
        a.expired(&timeouts()).await;
        assert_eq!(Instant::now() - before, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_while_answering_then_idle_then_header() {
        let a = ConnActivity::new();
        let req = a.request_started(false);
        assert_eq!(a.deadline(&timeouts()), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        a.read(10); // body bytes of the request being answered
        drop(req);
        assert_eq!(
            a.deadline(&timeouts()),
            Some(100_000 + 75_000),
            "keep-alive idle"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        a.read(1);
        assert_eq!(
            a.deadline(&timeouts()),
            Some(105_000 + 10_000),
            "the next request's head has readHeaderTimeout from its first byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_without_a_stream_do_not_extend_idle() {
        let a = ConnActivity::new();
        drop(a.request_started(true));
        tokio::time::advance(Duration::from_secs(1)).await;
        a.read(17); // a PING
        assert_eq!(a.deadline(&timeouts()), Some(75_000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_follows_a_request_that_starts_and_ends() {
        let a = ConnActivity::new();
        let watchdog = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.expired(&timeouts()).await })
        };
        tokio::time::advance(Duration::from_secs(9)).await;
        let req = a.request_started(false);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            !watchdog.is_finished(),
            "a request in flight has no deadline"
        );
        drop(req);
        tokio::time::advance(Duration::from_secs(74)).await;
        tokio::task::yield_now().await;
        assert!(!watchdog.is_finished());
        tokio::time::advance(Duration::from_secs(1)).await;
        watchdog.await.unwrap();
    }

    /// Paused time only moves on while every task sleeps: a watchdog spinning on a zero
    /// recheck would hang this test instead of letting the timeout fire.
    #[tokio::test(start_paused = true)]
    async fn zero_timeouts_do_not_make_the_watchdog_spin_while_a_request_is_in_flight() {
        let zero = ServerTimeouts {
            read_header: Duration::ZERO,
            idle: Duration::ZERO,
            body: Duration::ZERO,
        };
        let a = ConnActivity::new();
        let req = a.request_started(false);
        let waited = tokio::time::timeout(Duration::from_millis(20), a.expired(&zero)).await;
        assert!(waited.is_err(), "no deadline while the request is answered");
        drop(req);
        a.expired(&zero).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_keeps_the_header_deadline_of_a_request_begun_while_it_slept() {
        let a = ConnActivity::new();
        drop(a.request_started(false));
        let watchdog = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.expired(&timeouts()).await })
        };
        tokio::time::advance(Duration::from_secs(20)).await;
        a.read(1);
        tokio::time::advance(Duration::from_secs(9)).await;
        tokio::task::yield_now().await;
        assert!(
            !watchdog.is_finished(),
            "readHeaderTimeout runs from the first byte"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(
            watchdog.is_finished(),
            "on the header deadline, not the idle one it slept towards"
        );
    }
}
