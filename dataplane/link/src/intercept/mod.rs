//! WASM interceptors of a link target ([`contract`]): `phase: outbound` modules see the app's
//! request after the allowed-path check and may change its body, headers, path and query or
//! reject it; `phase: inbound` modules see the upstream's answer before it reaches the app and
//! may change its body and headers or replace it with a rejection.
//!
//! The engine (limits, module cache, pooling, reload bookkeeping) is `fiso-wasm`, shared with
//! Flow. Bodies are buffered up to the interceptor's `maxInputSize` (a module sees the whole
//! message or nothing): a larger request is refused with 413, a larger answer with 502
//! `INTERCEPTOR_INPUT_TOO_LARGE`, never passed on unseen. A module failure answers 502
//! `INTERCEPTOR_FAILED` unless `failOpen`, which passes the message on unchanged and counts it.
//! Inbound modules run on answers from the target only, not on answers the proxy made up
//! (429, 503 circuit open, 502 unreachable, ...): those describe the proxy, not the upstream.

pub mod contract;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use fiso_config::link::{InterceptorPhase, LinkInterceptorSpec};
use fiso_runtime::outline;
use fiso_wasm::output::{self, Output};
use fiso_wasm::{FailureKind, InterceptorBuildError, Module};
use futures::future::BoxFuture;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::Instrument;

use crate::allow::AllowedPaths;
use crate::breaker::CircuitSeen;
use crate::client_fault::ClientFault;
use crate::forward::Forward;
use crate::layer::{Concern, Next};
use crate::metrics::LinkMetrics;
use crate::path::normalise;
use crate::response::{error, ErrorCode, ProxyError, Request, Response};

use self::contract::{RequestLine, View};

/// One loaded module and its input limit.
struct Loaded {
    module: Module,
    max_input: usize,
}

/// The interceptors concern of one target.
#[derive(Clone)]
pub struct Intercept(Arc<Inner>);

struct Inner {
    target: Arc<str>,
    outbound: Vec<Loaded>,
    inbound: Vec<Loaded>,
    allowed: Arc<AllowedPaths>,
    /// How long a body may take to arrive (the target's `timeout`, as for retry buffering).
    body_timeout: Duration,
    metrics: LinkMetrics,
}

impl Intercept {
    /// Loads every module of `specs` (relative paths against `base_dir`, the link config's
    /// directory). Blocking: reads and compiles the modules (cached by content hash). `None`
    /// when there are none.
    pub fn load(
        target: &str,
        specs: &[LinkInterceptorSpec],
        base_dir: Option<&Path>,
        allowed: Arc<AllowedPaths>,
        body_timeout: Duration,
        metrics: LinkMetrics,
    ) -> Result<Option<Self>, InterceptorBuildError> {
        if specs.is_empty() {
            return Ok(None);
        }
        let (mut outbound, mut inbound) = (Vec::new(), Vec::new());
        for (index, spec) in specs.iter().enumerate() {
            let LinkInterceptorSpec::Wasm(config) = spec;
            let module =
                Module::load(&config.engine(), base_dir).map_err(|kind| InterceptorBuildError {
                    index,
                    module: config.module.clone(),
                    kind,
                })?;
            let loaded = Loaded {
                module,
                max_input: usize::try_from(config.max_input()).unwrap_or(usize::MAX),
            };
            match config.phase {
                InterceptorPhase::Outbound => outbound.push(loaded),
                InterceptorPhase::Inbound => inbound.push(loaded),
            }
        }
        Ok(Some(Intercept(Arc::new(Inner {
            target: target.into(),
            outbound,
            inbound,
            allowed,
            body_timeout,
            metrics,
        }))))
    }

    /// Whether a module file changed on disk since it was loaded (or can no longer be read):
    /// the target is then rebuilt. Blocking (reads and hashes the files).
    pub fn modules_changed(&self) -> bool {
        self.0
            .outbound
            .iter()
            .chain(&self.0.inbound)
            .any(|l| l.module.is_stale())
    }
}

impl Concern for Intercept {
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response> {
        let this = Arc::clone(&self.0);
        let next = Arc::clone(next);
        outline::pinned(|| async move {
            let req = if this.outbound.is_empty() {
                req
            } else {
                match this.outbound(req).await {
                    Ok(req) => req,
                    Err(answer) => return answer,
                }
            };
            let forward = req.extensions().get::<Forward>().cloned();
            let method = req.method().clone();
            let response = next.handle(req).await;
            if this.inbound.is_empty() || response.extensions().get::<ProxyError>().is_some() {
                return response;
            }
            let path = forward
                .as_ref()
                .map(|f| f.path.encoded())
                .unwrap_or_default();
            let line = RequestLine {
                method: method.as_str(),
                path: &path,
                query: forward.as_ref().and_then(|f| f.query.as_deref()),
            };
            // An answer a module replaced still tells the request's span what the breaker was.
            let seen = response.extensions().get::<CircuitSeen>().copied();
            let mut answer = this.inbound(&line, response).await;
            if let Some(seen) = seen {
                answer.extensions_mut().insert(seen);
            }
            answer
        })
    }
}

/// What running the chain on a view came to.
enum Ran {
    Done(View),
    Answer(Response),
}

impl Inner {
    async fn outbound(&self, req: Request) -> Result<Request, Response> {
        let (mut parts, body) = req.into_parts();
        let limit = self.outbound[0].max_input;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let body = match tokio::time::timeout(
            self.body_timeout,
            Limited::new(body, limit).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large(limit)),
            Ok(Err(e)) => return Err(ClientFault::of(&*e).response()),
            Err(_) => return Err(ClientFault::Stalled.response()),
        };
        let Some(mut forward) = parts.extensions.get::<Forward>().cloned() else {
            return Err(error(ErrorCode::NotFound, "no target for this request"));
        };
        let path = forward.path.encoded();
        let line = RequestLine {
            method: parts.method.as_str(),
            path: &path,
            query: forward.query.as_deref(),
        };
        let view = View::new(
            InterceptorPhase::Outbound,
            &line,
            None,
            &parts.headers,
            &body,
        );
        let view = match self.run(InterceptorPhase::Outbound, view).await {
            Ran::Done(view) => view,
            Ran::Answer(answer) => return Err(answer),
        };
        if view.target_changed {
            // `run` checked the path already; normalising it again cannot fail.
            if let Ok(path) = normalise(view.path()) {
                forward.path = path;
            }
            forward.query = view.query();
            parts.extensions.insert(forward);
        }
        view.apply_headers(&mut parts.headers);
        let body = if view.body_changed {
            let body = view.body();
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            body
        } else {
            body
        };
        Ok(Request::from_parts(parts, Body::from(body)))
    }

    async fn inbound(&self, line: &RequestLine<'_>, response: Response) -> Response {
        let (mut parts, body) = response.into_parts();
        let limit = self.inbound[0].max_input;
        let body = match tokio::time::timeout(self.body_timeout, Limited::new(body, limit).collect())
            .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<LengthLimitError>() => {
                return error(
                    ErrorCode::InterceptorInputTooLarge,
                    format!(
                        "the answer of target `{}` is larger than its inbound interceptor's maxInputSize ({limit} bytes)",
                        self.target
                    ),
                )
            }
            Ok(Err(_)) | Err(_) => {
                return error(
                    ErrorCode::UpstreamUnreachable,
                    format!(
                        "the answer of target `{}` broke off or stalled before its inbound interceptors could read it",
                        self.target
                    ),
                )
            }
        };
        let view = View::new(
            InterceptorPhase::Inbound,
            line,
            Some(parts.status.as_u16()),
            &parts.headers,
            &body,
        );
        let view = match self.run(InterceptorPhase::Inbound, view).await {
            Ran::Done(view) => view,
            Ran::Answer(answer) => return answer,
        };
        view.apply_headers(&mut parts.headers);
        let body = if view.body_changed {
            let body = view.body();
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            body
        } else {
            body
        };
        Response::from_parts(parts, Body::from(body))
    }

    /// Runs the `phase` modules in order on `view`.
    async fn run(&self, phase: InterceptorPhase, mut view: View) -> Ran {
        let chain = match phase {
            InterceptorPhase::Outbound => &self.outbound,
            InterceptorPhase::Inbound => &self.inbound,
        };
        for (i, loaded) in chain.iter().enumerate() {
            let module = &loaded.module;
            let span = fiso_runtime::otel::interceptor_span(module.module(), Some(phase.as_str()));
            let ran = self
                .run_one(phase, i, loaded, &mut view)
                .instrument(span.clone())
                .await;
            match ran {
                Step::Next => {}
                Step::FailedOpen(code) => fiso_runtime::otel::failed(&span, code),
                Step::Answer(code, answer) => {
                    fiso_runtime::otel::failed(&span, code);
                    return Ran::Answer(answer);
                }
            }
        }
        Ran::Done(view)
    }

    /// Module `i` of the `phase` chain on `view`.
    async fn run_one(
        &self,
        phase: InterceptorPhase,
        i: usize,
        loaded: &Loaded,
        view: &mut View,
    ) -> Step {
        let target = &self.target;
        let module = &loaded.module;
        // The first module's limit was enforced while reading; a later one may get a body
        // an earlier module grew.
        if i > 0 && view.body_len() > loaded.max_input {
            let e = module.error(FailureKind::InvalidInput(format!(
                "the body an earlier interceptor produced is larger than this one's maxInputSize ({} bytes)",
                loaded.max_input
            )));
            self.metrics.interceptor_error(target, phase.as_str());
            return Step::Answer(e.code(), failed(target, &e.to_string()));
        }
        let started = Instant::now();
        let result = match module.run_raw(view.stdin()).await {
            Ok(stdout) => output::parse(&stdout)
                .and_then(|out| match out {
                    Output::Reject { status, reason } => Ok(Some((status, reason))),
                    Output::Changes(changes) => view.merge(changes).map(|()| None),
                })
                .map_err(|message| module.error(FailureKind::InvalidOutput(message))),
            Err(e) => Err(e),
        };
        self.metrics
            .interceptor_call(target, phase.as_str(), started.elapsed().as_secs_f64());
        match result {
            Ok(None) => {}
            Ok(Some((status, reason))) => {
                self.metrics.interceptor_rejected(target, phase.as_str());
                tracing::info!(target_name = %target, phase = phase.as_str(), module = module.module(), status, reason = %reason, "rejected by an interceptor");
                return Step::Answer(
                    ErrorCode::InterceptorRejected.as_str(),
                    rejected(status, reason),
                );
            }
            Err(e) if module.fail_open() => {
                self.metrics.interceptor_failed_open(target, phase.as_str());
                tracing::warn!(target_name = %target, phase = phase.as_str(), module = module.module(), code = e.code(), error = %e, "interceptor failed; failOpen: passing the message on unchanged");
                return Step::FailedOpen(e.code());
            }
            Err(e) => {
                self.metrics.interceptor_error(target, phase.as_str());
                tracing::warn!(target_name = %target, phase = phase.as_str(), module = module.module(), code = e.code(), error = %e, "interceptor failed");
                return Step::Answer(e.code(), failed(target, &e.to_string()));
            }
        }
        if phase == InterceptorPhase::Outbound && view.target_changed {
            match normalise(view.path()) {
                Ok(path) if self.allowed.allows(&path) => view.set_path(path.encoded()),
                Ok(path) => {
                    return Step::Answer(ErrorCode::PathNotAllowed.as_str(), error(
                        ErrorCode::PathNotAllowed,
                        format!(
                            "interceptor `{}` rewrote the path to {}, which is not allowed for target `{target}`",
                            module.module(),
                            path.as_str()
                        ),
                    ))
                }
                Err(e) => {
                    return Step::Answer(ErrorCode::PathNotAllowed.as_str(), error(
                        ErrorCode::PathNotAllowed,
                        format!(
                            "interceptor `{}` rewrote the path to one that is not allowed: {e}",
                            module.module()
                        ),
                    ))
                }
            }
        }
        Step::Next
    }
}

/// What one module's run came to.
enum Step {
    Next,
    /// It failed with this code and `failOpen` passed the message on.
    FailedOpen(&'static str),
    /// The chain stops with this answer, for this reason.
    Answer(&'static str, Response),
}

fn too_large(limit: usize) -> Response {
    error(
        ErrorCode::PayloadTooLarge,
        format!("the body exceeds the interceptor's maxInputSize ({limit} bytes)"),
    )
}

fn failed(target: &str, message: &str) -> Response {
    error(
        ErrorCode::InterceptorFailed,
        format!("target `{target}`: {message}"),
    )
}

/// A module's rejection: its status, with the proxy's JSON error body.
fn rejected(status: u16, reason: String) -> Response {
    let mut response = error(ErrorCode::InterceptorRejected, reason);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    response
}

#[cfg(test)]
mod tests;
