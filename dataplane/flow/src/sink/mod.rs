//! Sinks: where a flow delivers its CloudEvents.

pub mod http;

use fiso_config::flow::SinkSpec;

use crate::retry::RetryPolicy;

/// A built sink of any type.
#[derive(Debug, Clone)]
pub enum Sink {
    Http(http::HttpSink),
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Http(#[from] http::SinkBuildError),
    /// A sink type this build cannot deliver to. Fails the flow loudly instead of dropping events.
    #[error("`sink.type: {0}` is not available in this build of fiso (supported: http)")]
    Unavailable(&'static str),
}

impl Sink {
    pub fn build(spec: &SinkSpec, policy: RetryPolicy) -> Result<Sink, SinkError> {
        match spec {
            SinkSpec::Http(cfg) => Ok(Sink::Http(http::HttpSink::new(cfg, policy)?)),
            other => Err(SinkError::Unavailable(other.kind())),
        }
    }
}
