//! The operator's one error type. Each variant has a stable code ([`Error::code`]) that is the
//! `error` label of `fiso_operator_reconcile_errors_total` and the `code` field of logs, so a
//! dashboard can tell an RBAC problem (`KUBE_FORBIDDEN`) from a flaky API server (`KUBE_API`).

use std::fmt;

/// Everything a reconcile, the renderer, leader election or start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed (network, 5xx, RBAC, conflict, ...).
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// A custom resource the operator needs is not served (CRDs not installed or not the
    /// version this build expects).
    #[error("the {kind} API ({api_version}) is not available: {source}; are the Fiso CRDs installed (`kubectl apply -f crds/`)?")]
    CrdMissing {
        kind: &'static str,
        api_version: &'static str,
        #[source]
        source: Box<kube::Error>,
    },

    /// A namespaced custom resource arrived without a namespace (never expected from a real
    /// API server; kept as an error rather than a panic).
    #[error("{kind} `{name}` has no namespace")]
    MissingNamespace { kind: &'static str, name: String },

    /// Rendering a selection's files failed to serialise (a bug, reported rather than panicking).
    #[error("cannot render `{what}`: {message}")]
    Render { what: String, message: String },

    /// Another replica took the leader lease, or it could not be renewed in time.
    #[error("lost the leader election lease `{lease}`: {reason}")]
    LeadershipLost { lease: String, reason: String },

    /// Invalid operator settings (environment variables).
    #[error("invalid setting {name}: {message}")]
    Config { name: &'static str, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
    /// Stable, upper-case code (metric label value, log field).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Kube(e) => match e.as_ref() {
                kube::Error::Api(s) if s.is_forbidden() => ErrorCode::KubeForbidden,
                kube::Error::Api(s) if s.is_conflict() => ErrorCode::KubeConflict,
                kube::Error::Api(s) if s.is_not_found() => ErrorCode::KubeNotFound,
                kube::Error::Api(s) if s.is_invalid() => ErrorCode::KubeInvalid,
                _ => ErrorCode::KubeApi,
            },
            Error::CrdMissing { .. } => ErrorCode::CrdMissing,
            Error::MissingNamespace { .. } => ErrorCode::MissingNamespace,
            Error::Render { .. } => ErrorCode::RenderFailed,
            Error::LeadershipLost { .. } => ErrorCode::LeadershipLost,
            Error::Config { .. } => ErrorCode::InvalidConfig,
        }
    }
}

/// The codes of [`Error`]; listed so metrics can expose every series from start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    KubeApi,
    KubeForbidden,
    KubeConflict,
    KubeNotFound,
    KubeInvalid,
    CrdMissing,
    MissingNamespace,
    RenderFailed,
    LeadershipLost,
    InvalidConfig,
}

impl ErrorCode {
    /// The codes a reconcile can fail with (the `error` label values of reconcile metrics).
    pub const RECONCILE: [ErrorCode; 7] = [
        ErrorCode::KubeApi,
        ErrorCode::KubeForbidden,
        ErrorCode::KubeConflict,
        ErrorCode::KubeNotFound,
        ErrorCode::KubeInvalid,
        ErrorCode::MissingNamespace,
        ErrorCode::RenderFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::KubeApi => "KUBE_API",
            ErrorCode::KubeForbidden => "KUBE_FORBIDDEN",
            ErrorCode::KubeConflict => "KUBE_CONFLICT",
            ErrorCode::KubeNotFound => "KUBE_NOT_FOUND",
            ErrorCode::KubeInvalid => "KUBE_INVALID",
            ErrorCode::CrdMissing => "CRD_MISSING",
            ErrorCode::MissingNamespace => "MISSING_NAMESPACE",
            ErrorCode::RenderFailed => "RENDER_FAILED",
            ErrorCode::LeadershipLost => "LEADERSHIP_LOST",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> Error {
        Error::from(kube::Error::Api(
            Status::failure("boom", reason).with_code(code).boxed(),
        ))
    }

    #[test]
    fn api_errors_map_to_specific_codes() {
        assert_eq!(api(403, "Forbidden").code(), ErrorCode::KubeForbidden);
        assert_eq!(api(409, "Conflict").code(), ErrorCode::KubeConflict);
        assert_eq!(api(404, "NotFound").code(), ErrorCode::KubeNotFound);
        assert_eq!(api(422, "Invalid").code(), ErrorCode::KubeInvalid);
        assert_eq!(api(500, "InternalError").code(), ErrorCode::KubeApi);
        assert_eq!(ErrorCode::KubeForbidden.to_string(), "KUBE_FORBIDDEN");
    }
}
