//! Sources: where a flow's events come from.

pub mod grpc;
pub mod http;
