//! What the attempt spans of the gRPC-speaking sinks (gRPC, Temporal) share, per the
//! OpenTelemetry semantic conventions for RPC: the status code as `rpc.grpc.status_code`, and
//! its canonical name as `error.type` when the attempt failed.

/// The canonical name of gRPC status `code` (`UNAVAILABLE`, ...), as `error.type` takes it.
pub(super) fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

/// The status of the call an attempt made.
pub(super) fn record_code(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
}

/// Marks the attempt failed, `error_type` being the status name or what failed before a call.
pub(super) fn failed(span: &tracing::Span, error_type: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_follow_the_grpc_codes() {
        assert_eq!(code_name(tonic::Code::Ok as i32), "OK");
        assert_eq!(code_name(tonic::Code::Unavailable as i32), "UNAVAILABLE");
        assert_eq!(
            code_name(tonic::Code::Unauthenticated as i32),
            "UNAUTHENTICATED"
        );
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded as i32),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(code_name(99), "_OTHER");
    }
}
