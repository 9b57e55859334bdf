//! The shape every concern of the proxy shares: a [`Handler`] that hands each request to the
//! concern together with the handler below it. A concern only says what it does with one
//! request; chaining lives here once.
//!
//! A target's chain is built once and shared behind `Arc`s: a request walks it without cloning
//! a service (a chain of tower `BoxCloneService`s clones every service below it at every layer).

use std::future::Future;
use std::sync::Arc;

use fiso_runtime::outline;
use futures::future::BoxFuture;

use crate::response::{Request, Response};

/// Answers requests: a concern in front of the rest of the chain, or the upstream.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> BoxFuture<'static, Response>;
}

/// The handlers below a concern.
pub type Next = Arc<dyn Handler>;

/// One concern of the proxy (allowed paths, rate limit, breaker, retry, auth).
pub trait Concern: Send + Sync + 'static {
    /// Answers `req`, calling `next` to go on towards the upstream (or not).
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response>;
}

struct Layered<C> {
    concern: C,
    next: Next,
}

impl<C: Concern> Handler for Layered<C> {
    fn handle(&self, req: Request) -> BoxFuture<'static, Response> {
        self.concern.call(req, &self.next)
    }
}

/// `concern` in front of `next`.
pub fn layer<C: Concern>(concern: C, next: Next) -> Next {
    Arc::new(Layered { concern, next })
}

/// One layer of a chain being built.
pub type Wrap = Box<dyn FnOnce(Next) -> Next>;

/// `concern` as a layer of [`chain`].
pub fn concern<C: Concern>(concern: C) -> Wrap {
    Box::new(move |next| layer(concern, next))
}

/// `upstream` behind `layers`, which a request meets in the order given (`None`s skipped).
pub fn chain(layers: impl IntoIterator<Item = Option<Wrap>>, upstream: Next) -> Next {
    let layers: Vec<Wrap> = layers.into_iter().flatten().collect();
    layers
        .into_iter()
        .rev()
        .fold(upstream, |next, wrap| wrap(next))
}

struct Leaf<T, F> {
    state: T,
    f: F,
}

impl<T, F, Fut> Handler for Leaf<T, F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn handle(&self, req: Request) -> BoxFuture<'static, Response> {
        outline::pinned(|| (self.f)(self.state.clone(), req))
    }
}

/// A leaf handler (the upstream) from an async function of the request.
pub fn leaf<T, F, Fut>(state: T, f: F) -> Next
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Arc::new(Leaf { state, f })
}
