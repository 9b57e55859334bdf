//! How a Flow or the Link reaches a Wasmer/WASIX app of the same process: look it up by name in
//! the [`AppDirectory`] and send it one HTTP request.
//!
//! The apps runtime (`fiso-apps`) registers an [`AppClient`] per app and replaces it when the app
//! is reloaded; callers keep only the directory (it is in [`Observability`](crate::Observability)),
//! so an app that comes, goes or restarts is found by name at each call. A long-running app is
//! answered over loopback HTTP on its port; a pooled / perRequest app by one run of its module
//! with the request on stdin and the response on stdout. Either way the caller sees
//! `http::Request<Bytes>` → `http::Response<Bytes>`, with both bodies bounded.
//!
//! ```no_run
//! # async fn f(dir: fiso_runtime::apps::AppDirectory) {
//! use bytes::Bytes;
//! let req = http::Request::post("/process").body(Bytes::from_static(b"{}")).unwrap();
//! match dir.call("enrich", req).await {
//!     Ok(resp) => println!("{} {:?}", resp.status(), resp.body()),
//!     Err(e) => println!("{} ({})", e, e.code()),
//! }
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

/// Largest request body an app is sent and largest response body taken from it, unless the
/// caller has a smaller limit of its own.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a call to an app did not produce a response. [`AppError::code`] is a stable label for
/// metrics, logs and error bodies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// No app of that name runs in this process.
    #[error("no app named `{0}` runs in this process")]
    NotFound(String),
    /// The app exists but cannot take requests (starting, failing its health check, crash loop,
    /// shutting down).
    #[error("app `{app}` is not ready: {reason}")]
    NotReady { app: String, reason: String },
    /// The request body exceeds what the app accepts.
    #[error("request body of {size} bytes exceeds the app limit of {limit} bytes")]
    RequestTooLarge { size: usize, limit: usize },
    /// The app answered with more than the response limit.
    #[error("app `{app}` answered more than {limit} bytes")]
    ResponseTooLarge { app: String, limit: usize },
    /// The app did not answer within its `timeout`.
    #[error("app `{app}` did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout { app: String, timeout: Duration },
    /// The app failed the request: connection refused or reset, a guest trap or exit, an
    /// unparseable answer. The message never carries request data.
    #[error("app `{app}` failed: {message}")]
    Failed { app: String, message: String },
}

impl AppError {
    /// Stable code: `APP_NOT_FOUND`, `APP_NOT_READY`, `APP_REQUEST_TOO_LARGE`,
    /// `APP_RESPONSE_TOO_LARGE`, `APP_TIMEOUT`, `APP_FAILED`.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "APP_NOT_FOUND",
            AppError::NotReady { .. } => "APP_NOT_READY",
            AppError::RequestTooLarge { .. } => "APP_REQUEST_TOO_LARGE",
            AppError::ResponseTooLarge { .. } => "APP_RESPONSE_TOO_LARGE",
            AppError::Timeout { .. } => "APP_TIMEOUT",
            AppError::Failed { .. } => "APP_FAILED",
        }
    }

    /// The HTTP status a proxy should answer with: 404 unknown app, 503 not ready, 413 request
    /// too large, 504 timeout, 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            AppError::ResponseTooLarge { .. } | AppError::Failed { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Whether an app takes requests now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    Ready,
    /// Not ready, with a reason fit for `/readyz` and logs.
    NotReady(String),
}

/// The future an [`AppClient`] returns.
pub type AppFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, AppError>> + Send + 'a>>;

/// One app, as callers see it. Implemented by the apps runtime.
pub trait AppClient: Send + Sync {
    /// The app's configured name.
    fn name(&self) -> &str;
    /// `longRunning`, `pooled` or `perRequest`.
    fn execution(&self) -> &'static str;
    /// Ready or not, now. A call to a not-ready app fails with [`AppError::NotReady`].
    fn state(&self) -> AppState;
    /// Largest request body this app accepts (at most [`MAX_BODY`]).
    fn max_request_body(&self) -> usize {
        MAX_BODY
    }
    /// Sends one request. The URI is origin-form (`/process?x=1`); the app's `timeout` applies
    /// and the response body is at most [`MAX_BODY`].
    fn call(&self, request: http::Request<Bytes>) -> AppFuture<'_>;
}

/// The apps of this process by name. Cheap to clone; every clone sees the same apps.
#[derive(Clone, Default)]
pub struct AppDirectory {
    apps: Arc<RwLock<BTreeMap<String, Arc<dyn AppClient>>>>,
}

impl std::fmt::Debug for AppDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppDirectory")
            .field("apps", &self.names())
            .finish()
    }
}

impl AppDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The app called `name`, if one runs here.
    pub fn get(&self, name: &str) -> Option<Arc<dyn AppClient>> {
        self.read().get(name).cloned()
    }

    /// Names of the registered apps, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Whether any app is registered (a caller may say "no apps in this process" instead of
    /// "no app named x").
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Looks `name` up and sends it `request`, refusing a body above the app's limit and a
    /// not-ready app before any work.
    pub async fn call(
        &self,
        name: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, AppError> {
        let app = self
            .get(name)
            .ok_or_else(|| AppError::NotFound(name.to_owned()))?;
        let limit = app.max_request_body();
        if request.body().len() > limit {
            return Err(AppError::RequestTooLarge {
                size: request.body().len(),
                limit,
            });
        }
        if let AppState::NotReady(reason) = app.state() {
            return Err(AppError::NotReady {
                app: name.to_owned(),
                reason,
            });
        }
        app.call(request).await
    }

    /// Registers `app` under its name, replacing the previous one of that name (a reload).
    pub fn insert(&self, app: Arc<dyn AppClient>) {
        let name = app.name().to_owned();
        self.write().insert(name, app);
    }

    /// Unregisters `name`; callers holding its client keep it until they drop it.
    pub fn remove(&self, name: &str) -> Option<Arc<dyn AppClient>> {
        self.write().remove(name)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<dyn AppClient>>> {
        self.apps.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<dyn AppClient>>> {
        self.apps.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo {
        ready: bool,
    }

    impl AppClient for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn execution(&self) -> &'static str {
            "pooled"
        }
        fn state(&self) -> AppState {
            if self.ready {
                AppState::Ready
            } else {
                AppState::NotReady("restarting after exit code 1".into())
            }
        }
        fn max_request_body(&self) -> usize {
            4
        }
        fn call(&self, request: http::Request<Bytes>) -> AppFuture<'_> {
            Box::pin(async move { Ok(http::Response::new(request.into_body())) })
        }
    }

    fn req(body: &'static [u8]) -> http::Request<Bytes> {
        http::Request::post("/process")
            .body(Bytes::from_static(body))
            .unwrap()
    }

    #[tokio::test]
    async fn call_finds_by_name_and_enforces_limit_and_readiness() {
        let dir = AppDirectory::new();
        let e = dir.call("echo", req(b"x")).await.unwrap_err();
        assert_eq!((e.code(), e.status().as_u16()), ("APP_NOT_FOUND", 404));

        dir.insert(Arc::new(Echo { ready: true }));
        assert_eq!(dir.names(), ["echo"]);
        let r = dir.call("echo", req(b"abcd")).await.unwrap();
        assert_eq!(r.body().as_ref(), b"abcd");
        let e = dir.call("echo", req(b"abcde")).await.unwrap_err();
        assert_eq!(
            (e.code(), e.status().as_u16()),
            ("APP_REQUEST_TOO_LARGE", 413)
        );

        dir.insert(Arc::new(Echo { ready: false }));
        let e = dir.call("echo", req(b"a")).await.unwrap_err();
        assert_eq!(e.code(), "APP_NOT_READY");
        assert!(e.to_string().contains("restarting"), "{e}");

        assert!(dir.remove("echo").is_some());
        assert!(dir.is_empty());
    }
}
