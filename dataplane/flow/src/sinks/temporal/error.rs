//! What can go wrong with a Temporal sink: building it, and delivering one event.

/// Errors building a Temporal sink from config (no connection is made at build time).
#[derive(Debug, thiserror::Error)]
pub enum TemporalBuildError {
    #[error("sink.config.hostPort: `{0}` is not a valid host:port")]
    HostPort(String),
    #[error("sink.config.workflowIdExpr: {0}")]
    WorkflowId(String),
    #[error("sink.config.params[{index}].expr: {message}")]
    Param { index: usize, message: String },
    #[error("sink.config.tls.{field}: {message}")]
    Tls {
        field: &'static str,
        message: String,
    },
    #[error("sink.config.auth: {0}")]
    Auth(String),
}

/// Where an event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalDelivery {
    pub workflow_id: String,
    pub run_id: String,
    /// False when the workflow already existed (a redelivered event, or a signal to a running
    /// workflow).
    pub started: bool,
}

/// What kind of failure ended a delivery; decides the HTTP source's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalFailure {
    /// Temporal could not be reached, or asked to back off (`UNAVAILABLE`, connection errors,
    /// `RESOURCE_EXHAUSTED`).
    Unavailable,
    /// A call ran out of time (`DEADLINE_EXCEEDED`).
    Timeout,
    /// Temporal refused the call (`NOT_FOUND` namespace, `INVALID_ARGUMENT`, ...): not retried.
    Rejected,
    /// The request could not be built (the event does not serialize as JSON, ...).
    Request,
}

/// Temporal did not take the event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Temporal {operation} of workflow `{workflow_id}` failed after {attempts} attempt(s): {message}")]
pub struct TemporalDeliveryError {
    pub operation: &'static str,
    pub workflow_id: String,
    pub attempts: u32,
    pub kind: TemporalFailure,
    pub message: String,
}
