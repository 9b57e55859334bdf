//! The `wasmer-app` interceptor: the event goes to an app of this process as `POST <path>`
//! (default `/process`) with the JSON a WASM interceptor reads on stdin; a 2xx answer's body is
//! taken as that interceptor's stdout — the same merge, the same `{"reject": …}` — so a module
//! that outgrew per-event WASM (it keeps state, opens connections) becomes an app unchanged in
//! its contract.
//!
//! The app is looked up by name per event: it may start, restart or be reloaded after the flow.
//! Every failure (no such app, not ready, its `timeout`, a non-2xx answer, an answer that is not
//! the contract or larger than [`DEFAULT_MAX_OUTPUT`]) is `INTERCEPTOR_FAILED`, or passes the
//! event on with `failOpen`.

use bytes::Bytes;
use fiso_config::flow::AppInterceptorConfig;
use fiso_runtime::apps::AppDirectory;
use fiso_wasm::{FailureKind, InterceptorError, DEFAULT_MAX_OUTPUT};
use serde_json::{Map, Value};

use super::protocol::{self, Answer};

/// Longest part of a non-2xx answer quoted in the error.
const QUOTED_ANSWER: usize = 200;

/// One `wasmer-app` entry of a flow's `interceptors`.
pub struct AppStep {
    app: String,
    path: String,
    label: String,
    fail_open: bool,
    apps: AppDirectory,
}

impl AppStep {
    pub fn new(config: &AppInterceptorConfig, apps: AppDirectory) -> Self {
        AppStep {
            app: config.app.clone(),
            path: config.path().to_owned(),
            label: format!("app/{}", config.app),
            fail_open: config.fail_open,
            apps,
        }
    }

    /// `app/<name>`: what errors, logs and rejections name this step by.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// Sends `event` to the app and checks its answer against the [`protocol`].
    pub async fn run(&self, event: &Map<String, Value>) -> Result<Answer, InterceptorError> {
        let fail = |kind| InterceptorError::new(&self.label, kind);
        let body = serde_json::to_vec(event)
            .map_err(|e| fail(FailureKind::InvalidInput(e.to_string())))?;
        let request = http::Request::post(&self.path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(body))
            .map_err(|e| fail(FailureKind::InvalidInput(e.to_string())))?;
        let response = self
            .apps
            .call(&self.app, request)
            .await
            .map_err(|e| fail(FailureKind::App(format!("{}: {e}", e.code()))))?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let quoted = String::from_utf8_lossy(&body[..body.len().min(QUOTED_ANSWER)]);
            return Err(fail(FailureKind::App(format!(
                "app `{}` answered {status}: {}",
                self.app,
                quoted.trim()
            ))));
        }
        if body.len() as u64 > DEFAULT_MAX_OUTPUT {
            return Err(fail(FailureKind::OutputTooLarge(DEFAULT_MAX_OUTPUT)));
        }
        protocol::decode_output(event, &body).map_err(|m| fail(FailureKind::InvalidOutput(m)))
    }
}
