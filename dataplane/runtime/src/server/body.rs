//! The request body must keep arriving (nginx's `client_body_timeout`: the time between two
//! reads, not the whole body); the response body tells the connection when its request is over.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::activity::{ConnActivity, InFlight};

type BoxError = Box<dyn StdError + Send + Sync>;

/// A request body that stopped arriving for longer than the server's body timeout. Handlers
/// answer it 408 (see [`is_body_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyTimeout(pub Duration);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body stopped arriving for {}",
            humantime::format_duration(self.0)
        )
    }
}

impl StdError for BodyTimeout {}

/// Whether `error` (or what caused it, e.g. an upstream client's error about the body it was
/// streaming) is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn StdError + 'static)) -> bool {
    body_timeout(error).is_some()
}

/// The [`BodyTimeout`] that caused `error`, if one did.
pub fn body_timeout(error: &(dyn StdError + 'static)) -> Option<BodyTimeout> {
    let mut e = Some(error);
    while let Some(err) = e {
        if let Some(t) = err.downcast_ref::<BodyTimeout>() {
            return Some(*t);
        }
        e = err.source();
    }
    None
}

/// A request body with a progress deadline.
pub(crate) struct ProgressBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed while waiting for the next frame; re-armed after each frame.
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    done: bool,
    activity: Arc<ConnActivity>,
}

impl ProgressBody {
    pub(crate) fn wrap(inner: Incoming, timeout: Duration, activity: Arc<ConnActivity>) -> Body {
        let done = inner.is_end_stream();
        activity.body_pending(!done);
        Body::new(ProgressBody {
            inner,
            timeout,
            sleep: None,
            waiting: false,
            done,
            activity,
        })
    }

    fn finish(&mut self) {
        self.done = true;
        self.activity.body_pending(false);
    }
}

impl HttpBody for ProgressBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if this.inner.is_end_stream() {
                    this.activity.body_pending(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.timeout;
                if !this.waiting {
                    this.waiting = true;
                    match &mut this.sleep {
                        Some(s) => s.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let expired = this
                    .sleep
                    .as_mut()
                    .is_some_and(|s| s.as_mut().poll(cx).is_ready());
                if expired {
                    // Left unread: the connection closes after the answer, lingering.
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// A response body that ends its request's [`InFlight`] when it has been sent or dropped.
pub struct TrackedBody {
    inner: Body,
    _request: InFlight,
}

impl TrackedBody {
    pub(crate) fn new(inner: Body, request: InFlight) -> Self {
        TrackedBody {
            inner,
            _request: request,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_timeout_is_found_behind_other_errors() {
        #[derive(Debug)]
        struct Wrapper(BoxError);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("sending the request failed")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&*self.0)
            }
        }
        let timeout = BodyTimeout(Duration::from_secs(2));
        let outer = Wrapper(Box::new(axum::Error::new(timeout)));
        assert!(is_body_timeout(&outer));
        assert!(!is_body_timeout(&Wrapper("reset".into())));
        assert_eq!(
            timeout.to_string(),
            "the request body stopped arriving for 2s"
        );
    }
}
