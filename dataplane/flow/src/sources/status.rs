//! How a running task source reports on its flow.

use std::sync::Mutex;

use fiso_runtime::Readiness;

/// How a running task source reports on its flow: whether it serves (`/readyz`, component
/// `flow/<name>`), and, the first time it reports anything, that it started (the supervisor's
/// `flow started` line and `fiso_flow_up`).
pub struct SourceStatus {
    readiness: Readiness,
    component: String,
    started: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl SourceStatus {
    pub fn new(
        readiness: Readiness,
        component: String,
        started: impl FnOnce() + Send + 'static,
    ) -> Self {
        SourceStatus {
            readiness,
            component,
            started: Mutex::new(Some(Box::new(started))),
        }
    }

    /// The source serves: the flow is ready.
    pub fn serving(&self) {
        self.start();
        self.readiness.set_ready(&self.component);
    }

    /// The source runs but cannot serve yet (a consumer without its partitions): the flow is
    /// not ready, for `reason`.
    pub fn waiting(&self, reason: impl Into<String>) {
        self.readiness.set_not_ready(&self.component, reason);
        self.start();
    }

    fn start(&self) {
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(started) = started {
            started();
        }
    }
}
