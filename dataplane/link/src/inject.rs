//! Auth injection: the target's credential replaces whatever the app sent in that header (and
//! any `Authorization`), so an app can never smuggle its own credential alongside.

use std::task::{Context, Poll};

use http::header;
use tower::{Layer, Service};

use crate::auth::Credentials;
use crate::response::Request;

#[derive(Clone)]
pub struct AuthLayer {
    credentials: Credentials,
}

impl AuthLayer {
    pub fn new(credentials: Credentials) -> Self {
        AuthLayer { credentials }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = InjectAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InjectAuth {
            credentials: self.credentials.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct InjectAuth<S> {
    credentials: Credentials,
    inner: S,
}

impl<S: Service<Request>> Service<Request> for InjectAuth<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let (name, value) = self.credentials.header();
        let headers = req.headers_mut();
        headers.remove(header::AUTHORIZATION);
        headers.remove(&name);
        headers.insert(name, value);
        self.inner.call(req)
    }
}
