//! The route layer: `/link/{target}/{path...}` → the target's service, with the path
//! normalised (an escape attempt is 403 here) and the request metrics recorded. Only the path
//! of the request URI is used: an absolute-form URI or a foreign `Host` header can never
//! send a request anywhere but to a configured target.
//!
//! Before anything else sees the request, its framing and method are checked
//! ([`framing`](crate::framing)) and its hop-by-hop headers stripped: a `Connection` header
//! naming `Authorization` (or the API-key header) removes the app's own, never the credential
//! injected further down.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Method;
use tokio::time::Instant;

use crate::client_fault::ClientFault;
use crate::forward::Forward;
use crate::framing::{refuse_framing, refuse_method, MAX_METHOD_LEN};
use crate::metrics::LinkMetrics;
use crate::path::normalise;
use crate::response::{error, strip_hop_by_hop, ErrorCode, Request, Response};
use crate::target::Target;

/// A target as the route table holds it: built, or refused with the reason.
#[derive(Clone)]
pub enum Route {
    Ready(Arc<Target>),
    /// The target is configured but could not be built (e.g. its secret is missing): 503.
    Broken(Arc<str>),
}

/// The route table, swapped whole on reload: a request in flight keeps the services it
/// started with.
#[derive(Default)]
pub struct Routes {
    table: ArcSwap<HashMap<String, Route>>,
}

impl Routes {
    pub fn replace(&self, table: HashMap<String, Route>) {
        self.table.store(Arc::new(table));
    }

    pub fn snapshot(&self) -> Arc<HashMap<String, Route>> {
        self.table.load_full()
    }
}

/// Label for requests that matched no target (bounded, unlike the names callers make up).
const NO_TARGET: &str = "unknown";

/// Answers one request to the proxy.
pub async fn handle(routes: &Routes, metrics: &LinkMetrics, mut req: Request) -> Response {
    let started = Instant::now();
    let method = if req.method().as_str().len() > MAX_METHOD_LEN {
        // Refused below; a label for it keeps made-up methods from minting label values.
        Method::from_bytes(b"OVERLONG").expect("a method token")
    } else {
        req.method().clone()
    };
    let (target, mode, response) = match resolve(routes, &mut req) {
        Ok(target) => {
            let mode = target.mode();
            let name = target.name.clone();
            let response = target.service.handle(req).await;
            (name, mode, response)
        }
        Err(refusal) => (refusal.target, "http", *refusal.response),
    };
    let status = response.status().as_u16();
    if let Some(fault) = response.extensions().get::<ClientFault>() {
        fault.log(&target, &method, status);
    }
    metrics.request(
        &target,
        &method,
        status,
        mode,
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Why a request is answered by the route layer itself.
struct Refusal {
    /// The metrics label: the target, or [`NO_TARGET`].
    target: Arc<str>,
    /// Boxed: the refusal is the rare path, the `Ok` one should stay small.
    response: Box<Response>,
}

fn refuse(
    target: &str,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<Arc<Target>, Refusal> {
    refuse_with(target, error(code, message))
}

fn refuse_with(target: &str, response: Response) -> Result<Arc<Target>, Refusal> {
    Err(Refusal {
        target: target.into(),
        response: Box::new(response),
    })
}

/// The target of `req`, with the [`Forward`] extension set and its hop-by-hop headers
/// stripped; or why not.
fn resolve(routes: &Routes, req: &mut Request) -> Result<Arc<Target>, Refusal> {
    if let Some(refused) = refuse_framing(req.method(), req.headers()) {
        return refuse_with(NO_TARGET, refused);
    }
    strip_hop_by_hop(req.headers_mut());
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/link/") else {
        return refuse(
            NO_TARGET,
            ErrorCode::NotFound,
            "only /link/{target}/{path} is served here",
        );
    };
    let (name, raw) = match rest.split_once('/') {
        Some((name, after)) => (name, format!("/{after}")),
        None => (rest, String::new()),
    };
    if let Some(refused) = refuse_method(req.method()) {
        return refuse_with(NO_TARGET, refused);
    }
    let table = routes.snapshot();
    let target = match table.get(name) {
        Some(Route::Ready(t)) => Arc::clone(t),
        Some(Route::Broken(reason)) => {
            return refuse(
                name,
                ErrorCode::TargetUnavailable,
                format!("target `{name}` is not available: {reason}"),
            )
        }
        None => {
            return refuse(
                NO_TARGET,
                ErrorCode::TargetNotFound,
                format!("no link target named `{name}`"),
            )
        }
    };
    let path = match normalise(&raw) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                name,
                ErrorCode::PathNotAllowed,
                format!("path refused: {e}"),
            )
        }
    };
    let query = req.uri().query().map(str::to_owned);
    req.extensions_mut().insert(Forward {
        target: target.name.clone(),
        path,
        query,
    });
    Ok(target)
}
