//! Rare, large futures kept out of the hot path's stack frames.
//!
//! Calling an async fn builds its whole future (KiBs for a dead-letter write, an interceptor
//! chain, a tonic call) in the caller's stack frame before it is boxed or awaited, and that
//! frame is the poll function of the caller's own future: every event's poll then reserves
//! (and stack-probes) those KiBs though the branch almost never runs. [`boxed`] builds the
//! future in a frame of its own instead, and hands back only the pointer.

use std::future::Future;
use std::pin::Pin;

/// A boxed future whose output is `T`.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The future `make` returns, built in this function's frame (never inlined) and boxed.
#[inline(never)]
pub fn boxed<'a, F>(make: impl FnOnce() -> F) -> Boxed<'a, F::Output>
where
    F: Future + Send + 'a,
{
    Box::pin(make())
}
