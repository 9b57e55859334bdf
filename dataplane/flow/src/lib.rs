//! `fiso-flow`: the Fiso-Flow data plane. A flow takes events from a source, transforms them
//! with CEL, wraps them in a CloudEvents v1.0 envelope, passes them through WASM interceptors
//! and delivers them to a sink, dead-lettering what the sink would not take.
//!
//! Layers, each depending only on those below it (checked by `tests/layering.rs`):
//!
//! * [`topology`]: `fiso flow` itself — every flow of a directory ([`topology::runtime`]), hot
//!   reload, the supervisor restarting failed flows, the router sharing HTTP ports.
//! * [`sources`] (HTTP, Kafka, gRPC) and [`sinks`] (HTTP, Kafka, gRPC, Temporal): each knows its
//!   protocol and nothing of the other side. Only `topology` knows sources; only `pipeline`
//!   knows sinks.
//! * [`pipeline`]: one flow handling one event ([`pipeline::Pipeline::handle`]), and the
//!   delivery vocabulary every source and sink shares ([`pipeline::delivery`]).
//! * [`event`] (input parsing, transform, envelope, compiled flow, JSON and Protobuf formats),
//!   [`cel`] (the expression engine), [`kafka`] (clients, DLQ, transactions), [`interceptor`],
//!   [`retry`], [`metrics`] and [`FlowError`] (every failure, each with a stable code).
//!
//! The event layers have no I/O: [`CompiledFlow::process`] is what `fiso transform test` and
//! the pipeline call per event.

pub mod cel;
pub mod error;
pub mod event;
pub mod interceptor;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod retry;
pub mod sinks;
pub mod sources;
pub mod topology;

pub use cel::budget::Budget;
pub use cel::env::EvalError;
pub use cel::expr::CompiledExpr;
pub use cel::scope::Scope;
pub use error::FlowError;
pub use event::cloudevent::{AttributeValue, CloudEvent, Data};
pub use event::compiled::{CompiledFlow, ProcessedEvent};
pub use event::envelope::{literal_fallback, Envelope};
pub use event::input::{EventDefaults, FlowDefaults, InputEvent};
pub use event::json;
pub use event::transform::Transformer;
