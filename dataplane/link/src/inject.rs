//! Auth injection: the target's credential replaces whatever the app sent in that header (and
//! any `Authorization`), so an app can never smuggle its own credential alongside.

use futures::future::BoxFuture;
use http::header;

use crate::auth::Credentials;
use crate::layer::{Concern, Next};
use crate::response::{Request, Response};

/// The auth-injection concern of one target.
#[derive(Clone)]
pub struct InjectAuth {
    credentials: Credentials,
}

impl InjectAuth {
    pub fn new(credentials: Credentials) -> Self {
        InjectAuth { credentials }
    }
}

impl Concern for InjectAuth {
    fn call(&self, mut req: Request, next: &Next) -> BoxFuture<'static, Response> {
        let (name, value) = self.credentials.header();
        let headers = req.headers_mut();
        headers.remove(header::AUTHORIZATION);
        headers.remove(&name);
        headers.insert(name, value);
        next.handle(req)
    }
}
