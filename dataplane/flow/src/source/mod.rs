//! Sources: where a flow's events come from.

pub mod grpc;
mod grpc_incoming;
pub mod http;
