//! Accepting connections when the process is short of file descriptors (or memory): the
//! listener is fine, so wait and try again — exponentially longer, up to a second — and say so
//! in the log at most once a second instead of once per attempt.

use std::io;
use std::time::Duration;

use fiso_config::common::Backoff;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::backoff::base_delay;

const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A listener whose `accept` only returns connections, backing off while accepting fails.
pub struct Acceptor {
    listener: TcpListener,
    failures: u32,
    log: RateLimitedLog,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Self {
        Acceptor {
            listener,
            failures: 0,
            log: RateLimitedLog::default(),
        }
    }

    /// The next connection. Errors that concern one connection (the client gave up before it
    /// was accepted) are skipped; the others (EMFILE, ENFILE, ENOMEM, ENOBUFS) are waited out.
    pub async fn accept(&mut self) -> TcpStream {
        loop {
            match self.listener.accept().await {
                Ok((tcp, _)) => {
                    if self.failures > 0 {
                        let suppressed = self.log.take_suppressed();
                        tracing::info!(
                            failed_attempts = self.failures,
                            suppressed_warnings = suppressed,
                            "accepting connections again"
                        );
                        self.failures = 0;
                        self.log = RateLimitedLog::default();
                    }
                    return tcp;
                }
                Err(e) if concerns_one_connection(&e) => continue,
                Err(e) => {
                    let wait = self.next_delay();
                    if let Some(suppressed) = self.log.allow(Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            retry_in_ms = wait.as_millis() as u64,
                            suppressed_warnings = suppressed,
                            "accepting a connection failed"
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn next_delay(&mut self) -> Duration {
        let d = base_delay(Backoff::Exponential, FIRST_DELAY, MAX_DELAY, self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }
}

/// What hyper / std treat as a failure of the one connection being accepted, not of the
/// listener.
fn concerns_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Lets one line through per [`LOG_EVERY`] and counts the ones held back.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// `Some(lines held back since the last one)` when a line may be written now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_a_second() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut a = Acceptor::new(TcpListener::from_std(listener).unwrap());
        let delays: Vec<u128> = (0..10).map(|_| a.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000],
            "exponential from 5 ms, capped at 1 s"
        );
    }

    #[test]
    fn at_most_one_line_a_second() {
        let mut log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.allow(t0), Some(0));
        // 20 failures within the same second are held back and counted.
        for i in 1..=20 {
            assert_eq!(log.allow(t0 + Duration::from_millis(i * 45)), None);
        }
        assert_eq!(log.allow(t0 + Duration::from_secs(1)), Some(20));
        assert_eq!(log.allow(t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn an_aborted_handshake_is_not_a_listener_failure() {
        assert!(concerns_one_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!concerns_one_connection(&io::Error::from_raw_os_error(
            24 // EMFILE
        )));
    }
}
