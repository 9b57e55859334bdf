//! The upstream of a `protocol: app` target: an app of this process (`apps:`), reached through
//! the [`AppDirectory`] by name at each request, so an app that starts after the Link, restarts
//! or is reloaded is found again. The request is handed over whole (method, `<basePath>/<path>`
//! and query, headers, the body read up to the app's limit: 413 above it); so is the answer.
//!
//! The app's own `timeout` bounds the call; its failures are answered like an unreachable
//! upstream's: 502 `APP_FAILED` / `APP_NOT_FOUND` / `APP_RESPONSE_TOO_LARGE`, 503
//! `APP_NOT_READY`, 504 `APP_TIMEOUT` — upstream failures, so they count against the target
//! (breaker, retry) like a network upstream's.

use axum::body::Body;
use fiso_config::link::TargetConfig;
use fiso_runtime::apps::{AppDirectory, AppError};
use http::header;
use http_body_util::{BodyExt, Limited};

use crate::client_fault::ClientFault;
use crate::forward::Forward;
use crate::response::{error, strip_hop_by_hop, ErrorCode, Request, Response};

/// A target's app; cloning it (once per request) clones a name and a directory handle.
#[derive(Clone)]
pub struct AppUpstream {
    app: std::sync::Arc<str>,
    /// The configured `basePath` with a leading and no trailing slash, or empty.
    base_path: std::sync::Arc<str>,
    apps: AppDirectory,
}

impl AppUpstream {
    pub fn new(cfg: &TargetConfig, app: &str, apps: AppDirectory) -> Self {
        let base_path = cfg.base_path.as_deref().unwrap_or("").trim_end_matches('/');
        let base_path = if base_path.is_empty() || base_path.starts_with('/') {
            base_path.to_owned()
        } else {
            format!("/{base_path}")
        };
        AppUpstream {
            app: app.into(),
            base_path: base_path.into(),
            apps,
        }
    }

    /// Sends `req` to the app and hands its answer back.
    pub async fn forward(self, req: Request) -> Response {
        let Some(forward) = req.extensions().get::<Forward>().cloned() else {
            return error(ErrorCode::NotFound, "no target for this request");
        };
        let Some(app) = self.apps.get(&self.app) else {
            return app_error(&AppError::NotFound(self.app.to_string()));
        };
        let limit = app.max_request_body();
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the body exceeds app `{}`'s limit of {limit} bytes",
                        self.app
                    ),
                )
            }
            Err(e) => return ClientFault::of(&*e).response(),
        };
        let mut line = self.base_path.to_string();
        if line.is_empty() || !forward.path.is_root() {
            forward.path.write_encoded(&mut line);
        }
        if let Some(q) = &forward.query {
            line.push('?');
            line.push_str(q);
        }
        let mut request = http::Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = match line.parse() {
            Ok(uri) => uri,
            Err(_) => return error(ErrorCode::InvalidRequest, "the request path is not valid"),
        };
        *request.headers_mut() = parts.headers;
        request.headers_mut().remove(header::HOST);
        match self.apps.call(&self.app, request).await {
            Ok(answer) => {
                let (parts, body) = answer.into_parts();
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = parts.status;
                *response.headers_mut() = parts.headers;
                strip_hop_by_hop(response.headers_mut());
                response
            }
            Err(e) => app_error(&e),
        }
    }
}

fn app_error(e: &AppError) -> Response {
    let code = match e {
        AppError::NotFound(_) => ErrorCode::AppNotFound,
        AppError::NotReady { .. } => ErrorCode::AppNotReady,
        AppError::RequestTooLarge { .. } => ErrorCode::PayloadTooLarge,
        AppError::ResponseTooLarge { .. } => ErrorCode::AppResponseTooLarge,
        AppError::Timeout { .. } => ErrorCode::AppTimeout,
        AppError::Failed { .. } => ErrorCode::AppFailed,
    };
    error(code, e.to_string())
}
