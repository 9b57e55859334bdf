//! `execution: pooled` and `perRequest`: one run of the module per request, the request on
//! stdin and the response on stdout in the [`framing`](crate::framing) documents.
//!
//! The module is compiled once (at start and on reload). A `pooled` app runs at most
//! `poolSize` requests at once, a `perRequest` app at most `poolSize` if set, else
//! [`PER_REQUEST_MAX`]; a request waits for a slot within its `timeout`. Each run has the
//! app's `timeout` (the watchdog stops the guest at the deadline), its `memoryMB`, a stdout
//! bounded to the response limit, and its stderr logged as the app's log lines.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fiso_runtime::apps::{AppClient, AppError, AppFuture, AppState, MAX_BODY};
use tokio::sync::Semaphore;
use wasmer_wasix::virtual_fs::StaticFile;

use crate::engine::{Capture, Exit, Guest, LogLines, RunHandle, Stdio};
use crate::framing::{self, FramingError};
use crate::metrics::AppMetrics;

/// Concurrent runs of a `perRequest` app without `poolSize`.
pub(crate) const PER_REQUEST_MAX: usize = 64;

pub(crate) struct PooledApp {
    pub(crate) name: String,
    pub(crate) execution: &'static str,
    pub(crate) guest: Arc<Guest>,
    pub(crate) timeout: Duration,
    pub(crate) slots: Arc<Semaphore>,
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
        let stdout_limit = MAX_BODY / 3 * 4 + framing::OVERHEAD;
        // If the caller gives up, the guest still ends at its deadline and frees its slot then.
        let (exit, stdout, memory) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let run = Arc::new(RunHandle::default());
            let _watch = watchdog.watch(deadline, run.clone());
            let stdout = Capture::stdout(stdout_limit as u64, run.clone());
            let stderr = LogLines::new(&guest.app, "stderr");
            let exit = guest.run(
                &run,
                Stdio {
                    stdin: Box::new(StaticFile::new(stdin)),
                    stdout: Box::new(stdout.clone()),
                    stderr: Box::new(stderr.clone()),
                },
            );
            stderr.flush_rest();
            (exit, stdout.take(), run.memory.load(Ordering::Relaxed))
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
