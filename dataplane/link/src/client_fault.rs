//! Failures that are the client's, not the target's: a request body that broke off because the
//! client hung up or reset its stream (499, nginx's "client closed request"), a body whose
//! framing is invalid (400), or one that stopped arriving (408).
//!
//! They are answered with their own status (so `fiso_link_requests_total` shows them apart from
//! the target's 5xx), logged at `info` like nginx does, never retried, and never fed to the
//! circuit breaker: a client that hangs up three times must not open the breaker for everyone.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::response::{error, ErrorCode, Response};

/// What went wrong with a client's request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The client closed the connection (or reset the HTTP/2 stream) before the body was
    /// complete.
    Closed,
    /// The body's framing was invalid (a bad chunk size line, for instance).
    Malformed,
    /// The body stopped arriving.
    Stalled,
}

impl ClientFault {
    /// What an error of the client's request body says about the client. hyper reports the
    /// framing of an HTTP/1 body as an `io::Error`: an early end or a reset is the client
    /// going away, invalid data is a malformed body; an HTTP/2 stream reset carries no
    /// `io::Error` and is the client going away too.
    pub fn of(error: &(dyn StdError + 'static)) -> ClientFault {
        let mut next = Some(error);
        while let Some(e) = next {
            // The server's bodyTimeout (no progress for that long).
            if e.is::<fiso_runtime::server::BodyTimeout>() {
                return ClientFault::Stalled;
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::TimedOut => ClientFault::Stalled,
                    io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                        ClientFault::Malformed
                    }
                    _ => ClientFault::Closed,
                };
            }
            next = e.source();
        }
        ClientFault::Closed
    }

    pub fn code(self) -> ErrorCode {
        match self {
            ClientFault::Closed => ErrorCode::ClientClosedRequest,
            ClientFault::Malformed => ErrorCode::InvalidRequest,
            ClientFault::Stalled => ErrorCode::RequestTimeout,
        }
    }

    /// The answer (which a client that hung up never reads, but the log and metrics do).
    pub fn response(self) -> Response {
        let message = match self {
            ClientFault::Closed => "the client closed the request before its body was complete",
            ClientFault::Malformed => "the request body is malformed",
            ClientFault::Stalled => "the request body stopped arriving",
        };
        let mut response = error(self.code(), message);
        response.extensions_mut().insert(self);
        response
    }

    /// Logs `self` for a request to `target` (no header, no body: nothing secret).
    pub fn log(self, target: &str, method: &http::Method, status: u16) {
        match self {
            ClientFault::Closed => tracing::info!(
                target_name = %target, %method, status,
                "client closed request before its body was complete"
            ),
            ClientFault::Malformed => tracing::info!(
                target_name = %target, %method, status, "client sent a malformed request body"
            ),
            ClientFault::Stalled => tracing::info!(
                target_name = %target, %method, status, "client request body stopped arriving"
            ),
        }
    }
}

/// How a client body on its way upstream is doing: whether it failed, and whether its reader
/// is waiting for the client right now (so an upstream timeout can tell a silent client from
/// a silent upstream).
#[derive(Debug, Default)]
pub struct BodyWatch {
    fault: OnceLock<ClientFault>,
    waiting_on_client: AtomicBool,
}

impl BodyWatch {
    /// Why the client's body broke off, if it did.
    pub fn fault(&self) -> Option<ClientFault> {
        self.fault.get().copied()
    }

    /// Whether the body was still incomplete and its reader was waiting for the client's next
    /// bytes.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }
}

/// A client body stream that reports to a [`BodyWatch`].
pub struct Watched<S> {
    inner: S,
    watch: Arc<BodyWatch>,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, Arc<BodyWatch>) {
        let watch = Arc::new(BodyWatch::default());
        (
            Watched {
                inner,
                watch: Arc::clone(&watch),
            },
            watch,
        )
    }
}

impl<S, E> Stream for Watched<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: StdError + 'static,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        let waiting = match &polled {
            Poll::Pending => true,
            Poll::Ready(Some(Err(e))) => {
                let _ = self.watch.fault.set(ClientFault::of(e));
                false
            }
            Poll::Ready(_) => false,
        };
        self.watch
            .waiting_on_client
            .store(waiting, Ordering::Relaxed);
        polled
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn io_errors_tell_a_client_that_left_from_a_malformed_body() {
        let io = |kind, msg: &str| io::Error::new(kind, msg.to_owned());
        // What hyper's HTTP/1 body decoder yields, wrapped the way axum hands it over.
        let wrapped = |e: io::Error| axum::Error::new(e);
        for (kind, fault) in [
            (io::ErrorKind::UnexpectedEof, ClientFault::Closed),
            (io::ErrorKind::ConnectionReset, ClientFault::Closed),
            (io::ErrorKind::BrokenPipe, ClientFault::Closed),
            (io::ErrorKind::InvalidInput, ClientFault::Malformed),
            (io::ErrorKind::InvalidData, ClientFault::Malformed),
            (io::ErrorKind::TimedOut, ClientFault::Stalled),
        ] {
            assert_eq!(ClientFault::of(&wrapped(io(kind, "x"))), fault, "{kind:?}");
        }
        let other = axum::Error::new("stream reset by the peer");
        assert_eq!(ClientFault::of(&other), ClientFault::Closed);
        // The server's bodyTimeout, as the request body reports it.
        let stalled = axum::Error::new(fiso_runtime::server::BodyTimeout(
            std::time::Duration::from_secs(1),
        ));
        assert_eq!(ClientFault::of(&stalled), ClientFault::Stalled);
    }

    #[test]
    fn client_fault_answers_have_their_own_status() {
        assert_eq!(ClientFault::Closed.response().status().as_u16(), 499);
        assert_eq!(ClientFault::Malformed.response().status().as_u16(), 400);
        assert_eq!(ClientFault::Stalled.response().status().as_u16(), 408);
        let r = ClientFault::Closed.response();
        assert_eq!(r.extensions().get(), Some(&ClientFault::Closed));
    }

    #[tokio::test]
    async fn a_watched_body_remembers_why_it_broke_off() {
        let chunks: Vec<Result<Bytes, axum::Error>> = vec![
            Ok(Bytes::from_static(b"head")),
            Err(axum::Error::new(io::Error::from(
                io::ErrorKind::UnexpectedEof,
            ))),
        ];
        let (mut body, watch) = Watched::new(futures::stream::iter(chunks));
        assert!(body.next().await.unwrap().is_ok());
        assert_eq!(watch.fault(), None);
        assert!(body.next().await.unwrap().is_err());
        assert_eq!(watch.fault(), Some(ClientFault::Closed));
    }

    #[tokio::test]
    async fn a_watched_body_knows_when_it_waits_for_the_client() {
        let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, axum::Error>>(1);
        let (mut body, watch) = Watched::new(rx);
        let next = futures::poll!(body.next());
        assert!(next.is_pending());
        assert!(watch.waiting_on_client());
        drop(tx);
        assert!(body.next().await.is_none());
        assert!(!watch.waiting_on_client());
    }
}
