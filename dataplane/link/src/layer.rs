//! The shape every concern of the proxy shares: a tower [`Layer`] whose service hands each
//! request to the concern together with the (boxed) service below it. A concern only says what
//! it does with one request; readiness, cloning and boxing live here once.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::response::{Request, Response};

/// The services below a concern.
pub type Next = BoxCloneSyncService<Request, Response, Infallible>;

/// One concern of the proxy (allowed paths, rate limit, breaker, retry, auth).
pub trait Concern: Clone + Send + Sync + 'static {
    /// Answers `req`, calling `next` to go on towards the upstream (or not).
    fn call(&self, req: Request, next: Next) -> BoxFuture<'static, Response>;
}

/// A [`Concern`] as a tower layer.
#[derive(Clone)]
pub struct ConcernLayer<C>(pub C);

impl<C, S> Layer<S> for ConcernLayer<C>
where
    C: Concern,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = ConcernService<C>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcernService {
            concern: self.0.clone(),
            next: BoxCloneSyncService::new(inner),
        }
    }
}

/// The service of a [`ConcernLayer`].
#[derive(Clone)]
pub struct ConcernService<C> {
    concern: C,
    next: Next,
}

impl<C: Concern> Service<Request> for ConcernService<C> {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every service below is always ready: they queue nothing.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let answer = self.concern.call(req, self.next.clone());
        Box::pin(async move { Ok(answer.await) })
    }
}

/// What the services below answer to `req`.
pub async fn answer(next: Next, req: Request) -> Response {
    use tower::ServiceExt;
    match next.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A leaf service (the upstream) from an async function of the request.
pub fn leaf<T, F, Fut>(state: T, f: F) -> Next
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T, Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    BoxCloneSyncService::new(tower::service_fn(move |req: Request| {
        let (state, f) = (state.clone(), f.clone());
        async move { Ok::<_, Infallible>(f(state, req).await) }
    }))
}
