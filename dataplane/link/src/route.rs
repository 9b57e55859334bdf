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
use std::ops::Deref;
use std::sync::Arc;
use tracing::field::Empty;
use tracing::Instrument;

use arc_swap::ArcSwap;
use fiso_runtime::server::PerCore;
use http::Method;
use tokio::time::Instant;

use crate::breaker::CircuitSeen;
use crate::client_fault::ClientFault;
use crate::forward::Forward;
use crate::framing::{refuse_framing, refuse_method, MAX_METHOD_LEN};
use crate::metrics::LinkMetrics;
use crate::path::normalise;
use crate::response::{error, strip_hop_by_hop, ErrorCode, ProxyError, Request, Response};
use crate::target::Target;

/// A target as the route table holds it: built, or refused with the reason.
#[derive(Clone)]
pub enum Route {
    Ready(Ready),
    /// The target is configured but could not be built (e.g. its secret is missing): 503.
    Broken(Arc<str>),
}

/// A built target, copied for each core ([`Target::for_core`]): a request clones and updates
/// its own core's copy, which no other core's requests touch.
#[derive(Clone)]
pub struct Ready(Arc<PerCore<Arc<Target>>>);

impl Ready {
    pub fn new(target: &Target) -> Ready {
        Ready(Arc::new(PerCore::new(|| Arc::new(target.for_core()))))
    }
}

impl Deref for Ready {
    type Target = Arc<Target>;

    /// The calling core's copy.
    fn deref(&self) -> &Arc<Target> {
        self.0.get()
    }
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
    let caller = fiso_runtime::otel::enabled().then(|| caller_trace(req.headers()));
    let (target, response, span) = match resolve(routes, &mut req) {
        Ok(target) => {
            let span = link_span(&target.name, &method, caller.as_ref());
            let response = target.service.handle(req).instrument(span.clone()).await;
            (Ok(target), response, span)
        }
        Err(refusal) => {
            let span = link_span(&refusal.target, &method, caller.as_ref());
            (Err(refusal.target), *refusal.response, span)
        }
    };
    let status = response.status().as_u16();
    if !span.is_disabled() {
        record_answer(&span, &response);
    }
    let name = match &target {
        Ok(target) => &target.name,
        Err(name) => name,
    };
    if let Some(fault) = response.extensions().get::<ClientFault>() {
        fault.log(name, &method, status);
    }
    let seconds = started.elapsed().as_secs_f64();
    match &target {
        Ok(target) => target.requests.record(&method, status, seconds, &span),
        Err(name) => metrics.request(name, &method, status, "http", seconds, &span),
    }
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
    // A clone of the URI shares its text, which then outlives the changes to `req`.
    let uri = req.uri().clone();
    let Some(rest) = uri.path().strip_prefix("/link/") else {
        return refuse(
            NO_TARGET,
            ErrorCode::NotFound,
            "only /link/{target}/{path} is served here",
        );
    };
    let (name, raw) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if let Some(refused) = refuse_method(req.method()) {
        return refuse_with(NO_TARGET, refused);
    }
    // A guard, not a clone: the table's reference count is shared by every core.
    let table = routes.table.load();
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
    let path = match normalise(raw) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                name,
                ErrorCode::PathNotAllowed,
                format!("path refused: {e}"),
            )
        }
    };
    let query = uri.query().map(str::to_owned);
    req.extensions_mut().insert(Forward {
        target: target.name.clone(),
        path,
        query,
    });
    Ok(target)
}

/// The caller's W3C context from its request headers.
fn caller_trace(headers: &http::HeaderMap) -> fiso_runtime::otel::TraceHeaders {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    fiso_runtime::otel::TraceHeaders {
        traceparent: text("traceparent"),
        tracestate: text("tracestate"),
    }
}

/// `link <target>`: the server span of one proxied request, when traces are exported. No
/// header, query or credential becomes an attribute.
fn link_span(
    target: &str,
    method: &Method,
    caller: Option<&fiso_runtime::otel::TraceHeaders>,
) -> tracing::Span {
    let Some(caller) = caller else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "link",
        otel.name = format!("link {target}"),
        otel.kind = "server",
        otel.status_code = Empty,
        fiso.link.target = target,
        http.request.method = method.as_str(),
        http.route = "/link/{target}/{path}",
        http.response.status_code = Empty,
        fiso.link.path_allowed = Empty,
        fiso.link.rate_limited = Empty,
        fiso.link.circuit_open = Empty,
        fiso.link.circuit_state = Empty,
        error.type = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    fiso_runtime::otel::continue_trace(&span, caller);
    span
}

/// The answer on the link span: status, which concern decided when the proxy answered itself
/// (allowed paths, rate limit, breaker), and the breaker's state as the request saw it.
fn record_answer(span: &tracing::Span, response: &Response) {
    span.record("http.response.status_code", response.status().as_u16());
    let code = response.extensions().get::<ProxyError>().map(|e| e.0);
    span.record(
        "fiso.link.path_allowed",
        !matches!(code, Some(ErrorCode::PathNotAllowed)),
    );
    span.record(
        "fiso.link.rate_limited",
        matches!(code, Some(ErrorCode::RateLimited)),
    );
    span.record(
        "fiso.link.circuit_open",
        matches!(code, Some(ErrorCode::CircuitOpen)),
    );
    if let Some(CircuitSeen(state)) = response.extensions().get::<CircuitSeen>() {
        span.record("fiso.link.circuit_state", state.as_str());
    }
    if let Some(code) = code {
        span.record("error.type", code.as_str());
    } else if response.status().is_server_error() {
        span.record("error.type", response.status().as_str());
    } else {
        return;
    }
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
