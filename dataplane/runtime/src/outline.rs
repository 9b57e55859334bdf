//! Large futures kept out of the hot path's stack frames, and built in their boxes.
//!
//! Calling an async fn builds its whole future (KiBs for a dead-letter write, an interceptor
//! chain, a tonic call) in the caller's stack frame before it is boxed or awaited, and that
//! frame is the poll function of the caller's own future: every event's poll then reserves
//! (and stack-probes) those KiBs though the branch almost never runs. [`boxed`] builds the
//! future in a frame of its own instead, and hands back only the pointer. [`pinned`] is for the
//! futures every event boxes (the pipeline's, a sink's, an HTTP attempt's, a Link layer's): it
//! spares the copy of the whole future into its box.

use std::future::Future;
use std::pin::Pin;

/// A boxed future whose output is `T`.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The future `make` returns, built in this function's frame (never inlined), in its box.
#[inline(never)]
pub fn boxed<'a, F>(make: impl FnOnce() -> F) -> Boxed<'a, F::Output>
where
    F: Future + Send + 'a,
{
    pinned(make)
}

/// The future `make` returns, built in its box. `Box::pin(future)` builds the future first, on
/// the stack, then allocates and copies it whole (its full size, KiBs for a pipeline's or an
/// HTTP exchange's, though only its arguments are set); allocating first lets the compiler
/// write the future's first state straight into the box.
#[inline(always)]
pub fn pinned<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let slot = Box::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_future_built_in_its_box_runs_as_it_would_unboxed() {
        let text = String::from("moved in");
        let big = [7u8; 4096];
        let future = pinned(|| async move { (text.len(), big[4095]) });
        assert_eq!(future.await, (8, 7));
        let boxed: Boxed<'_, usize> = boxed(|| async { big.len() });
        assert_eq!(boxed.await, 4096);
    }
}
