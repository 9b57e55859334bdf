//! `execution: pooled` and `perRequest`: one run of the module per request, the request on
//! stdin and the response on stdout in the [`framing`](crate::framing) documents.
//!
//! The module is compiled once (at start and on reload). A `pooled` app runs at most
//! `poolSize` requests at once and keeps up to `poolSize` instances instantiated ahead
//! ([`warm`](crate::warm)); a `perRequest` app instantiates the module for each request and runs
//! at most `poolSize` if set, else [`PER_REQUEST_MAX`]. A request waits for a slot within its
//! `timeout`. Each run has the
//! app's `timeout` (the watchdog stops the guest at the deadline), its `memoryMB`, a stdout
//! bounded to the response limit, and its stderr logged as the app's log lines.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fiso_runtime::apps::{AppClient, AppError, AppFuture, AppState, MAX_BODY};
use tokio::sync::Semaphore;

use crate::engine::{Exit, Guest, RunHandle};
use crate::framing::{self, FramingError};
use crate::metrics::AppMetrics;
use crate::warm::{Ready, WarmPool};

/// Concurrent runs of a `perRequest` app without `poolSize`.
pub(crate) const PER_REQUEST_MAX: usize = 64;

/// A run's stdout: the largest response body, base64-encoded, and the document around it.
pub(crate) const STDOUT_LIMIT: u64 = (MAX_BODY / 3 * 4 + framing::OVERHEAD) as u64;

pub(crate) struct PooledApp {
    pub(crate) name: String,
    pub(crate) execution: &'static str,
    pub(crate) guest: Arc<Guest>,
    pub(crate) timeout: Duration,
    pub(crate) slots: Arc<Semaphore>,
    /// `pooled` only.
    pub(crate) warm: Option<Arc<WarmPool>>,
    pub(crate) metrics: AppMetrics,
}

impl PooledApp {
    async fn serve(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, AppError> {
        let deadline = Instant::now() + self.timeout;
        let timeout = || AppError::Timeout {
            app: self.name.clone(),
            timeout: self.timeout,
        };
        let permit = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned())
            .await
            .map_err(|_| timeout())?
            .expect("the slot semaphore is never closed");
        let stdin = framing::encode_request(&request);
        drop(request);
        let guest = self.guest.clone();
        let watchdog = crate::engine::shared()
            .map_err(|message| AppError::Failed {
                app: self.name.clone(),
                message,
            })?
            .watchdog;
        let pool = self.warm.clone();
        let warm = pool.as_ref().and_then(WarmPool::take);
        self.metrics.run(&self.name, warm.is_some());
        // If the caller gives up, the guest still ends at its deadline and frees its slot then.
        let (exit, stdout, memory) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let run = match &warm {
                Some(ready) => ready.instance.run().clone(),
                None => Arc::new(RunHandle::default()),
            };
            let _watch = watchdog.watch(deadline, run.clone());
            let ready = match warm {
                Some(ready) => Ok(ready),
                None => Ready::instantiate(&guest, run.clone(), STDOUT_LIMIT).inspect(|_| {
                    if let Some(pool) = &pool {
                        pool.recovered();
                    }
                }),
            };
            match ready {
                Ok(ready) => {
                    let stdout = ready.stdout.clone();
                    let exit = ready.start(&stdin);
                    (exit, stdout.take(), run.memory.load(Ordering::Relaxed))
                }
                Err(exit) => (exit, Vec::new(), run.memory.load(Ordering::Relaxed)),
            }
        })
        .await
        .map_err(|e| AppError::Failed {
            app: self.name.clone(),
            message: format!("the wasmer host failed: {e}"),
        })?;
        self.metrics.set_memory(&self.name, memory);
        let failed = |message: String| AppError::Failed {
            app: self.name.clone(),
            message,
        };
        match exit {
            Exit::Code(0) => framing::decode_response(&stdout, MAX_BODY).map_err(|e| match e {
                FramingError::TooLarge(limit) => AppError::ResponseTooLarge {
                    app: self.name.clone(),
                    limit,
                },
                e => failed(e.to_string()),
            }),
            Exit::Timeout => Err(timeout()),
            Exit::OutputTooLarge => Err(AppError::ResponseTooLarge {
                app: self.name.clone(),
                limit: MAX_BODY,
            }),
            exit => Err(failed(exit.to_string())),
        }
    }
}

impl AppClient for PooledApp {
    fn name(&self) -> &str {
        &self.name
    }
    fn execution(&self) -> &'static str {
        self.execution
    }
    fn state(&self) -> AppState {
        AppState::Ready
    }
    fn call(&self, request: http::Request<Bytes>) -> AppFuture<'_> {
        Box::pin(async move {
            let result = self.serve(request).await;
            let status = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => {
                    tracing::warn!(app = %self.name, code = e.code(), "app request failed: {e}");
                    e.code().to_owned()
                }
            };
            self.metrics.request(&self.name, &status);
            result
        })
    }
}
