//! How Temporal's answers count for the flow's retry policy, like the HTTP sink's statuses:
//! `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED` and connection errors are retried,
//! anything else is final; "workflow already started" is success.

use temporalio_client::errors::ClientConnectError;
use temporalio_client::tonic::{Code, Status};
use temporalio_common::protos::temporal::api::errordetails::v1::WorkflowExecutionAlreadyStartedFailure;
use temporalio_common::protos::utilities::decode_status_detail;

use super::error::TemporalFailure;
use super::oidc::TokenError;
use crate::retry::Attempt;

pub(super) type Failure = (TemporalFailure, String);

/// Why there is no connection to make a call on (classified here, made by `connection`).
#[derive(Debug)]
pub(super) enum ConnectError {
    Token(TokenError),
    Connect(ClientConnectError),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Token(e) => write!(f, "{e}"),
            ConnectError::Connect(e) => f.write_str(&connect_message(e)),
        }
    }
}

pub(super) fn classify_connect<T>(e: &ConnectError) -> Attempt<T, Failure> {
    match e {
        ConnectError::Token(e) => classify_token(e),
        ConnectError::Connect(e) => classify_client_connect(e),
    }
}

/// A token endpoint that is down or busy is retried like an unreachable Temporal; a refusal
/// (`invalid_client`, a wrong URL, an unusable answer) is final.
pub(super) fn classify_token<T>(e: &TokenError) -> Attempt<T, Failure> {
    if e.is_transient() {
        Attempt::Retryable((TemporalFailure::Unavailable, e.to_string()), None)
    } else {
        Attempt::Permanent((TemporalFailure::Rejected, e.to_string()))
    }
}

fn classify_client_connect<T>(e: &ClientConnectError) -> Attempt<T, Failure> {
    let failure = (TemporalFailure::Unavailable, connect_message(e));
    match e {
        ClientConnectError::InvalidUri(_)
        | ClientConnectError::InvalidHeaders(_)
        | ClientConnectError::InvalidConfig(_) => {
            Attempt::Permanent((TemporalFailure::Rejected, failure.1))
        }
        ClientConnectError::SystemInfoCallError(s) => classify_status(s),
        _ => Attempt::Retryable(failure, None),
    }
}

pub(super) fn classify_call(
    result: Result<(String, bool), Status>,
) -> Attempt<(String, bool), Failure> {
    match result {
        Ok(r) => Attempt::Success(r),
        // The workflow id is taken by a running execution: this event (or a redelivery of it)
        // already started it.
        Err(s) if s.code() == Code::AlreadyExists => {
            let run_id =
                decode_status_detail::<WorkflowExecutionAlreadyStartedFailure>(s.details())
                    .map(|d| d.run_id)
                    .unwrap_or_default();
            Attempt::Success((run_id, false))
        }
        Err(s) => classify_status(&s),
    }
}

pub(super) fn classify_status<T>(s: &Status) -> Attempt<T, Failure> {
    let message = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        Code::Unavailable | Code::ResourceExhausted => {
            Attempt::Retryable((TemporalFailure::Unavailable, message), None)
        }
        Code::DeadlineExceeded => Attempt::Retryable((TemporalFailure::Timeout, message), None),
        _ => Attempt::Permanent((TemporalFailure::Rejected, message)),
    }
}

/// The connect error with its sources (tonic's transport errors say little on their own).
pub(super) fn connect_message(e: &ClientConnectError) -> String {
    match e {
        ClientConnectError::SystemInfoCallError(s) => format!("{:?}: {}", s.code(), s.message()),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(inner) = source {
                let next = inner.to_string();
                if !text.contains(&next) {
                    text.push_str(": ");
                    text.push_str(&next);
                }
                source = inner.source();
            }
            text
        }
    }
}
