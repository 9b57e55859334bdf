//! `fiso-flow`: the Fiso-Flow data plane.
//!
//! A flow takes events from a source, transforms them with CEL, wraps them in a CloudEvents
//! v1.0 envelope and delivers them to a sink. This crate holds, so far, the part between source
//! and sink — a library with no I/O and no async runtime:
//!
//! * [`InputEvent`]: an incoming event (a structured CloudEvent or a bare JSON payload) and
//!   the attributes its CEL scope exposes ([`event`]).
//! * [`Scope`]: the variables `data`, `id`, `source`, `type`, `subject`, `time` of one event,
//!   evaluated against one process-wide CEL environment ([`scope`]); [`CompiledExpr`]: an
//!   expression compiled once, with Fiso's adaptations of CEL (mixed `int` / `double`
//!   arithmetic, load-time checks) ([`expr`]).
//! * [`Transformer`]: `transform.fields` ([`transform`]); [`Envelope`]: the CloudEvent and its
//!   `cloudevents.*` overrides ([`envelope`]).
//! * [`CompiledFlow`]: both, compiled from a [`FlowConfig`](fiso_config::FlowConfig);
//!   [`CompiledFlow::process`] is what `fiso transform test` and the runtime call per event.
//! * [`cel_value`]: JSON ⇄ CEL conversions; [`json`]: JSON output without exponents.
//! * [`FlowError`]: every failure, each with a stable code (`TRANSFORM_FAILED`, ...).
//!
//! Later work adds the rest of the data plane around it: sources (HTTP, Kafka, gRPC), sinks
//! (HTTP, Kafka, gRPC, Temporal) with retries and the DLQ, WASM interceptors, the router that
//! runs many flows (and shares HTTP ports), the supervisor that restarts failed flows, and hot
//! reload of the config directory.

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
pub use event::compiled::{CompiledFlow, ProcessedEvent};
pub use event::envelope::{literal_fallback, Envelope};
pub use event::input::{EventDefaults, FlowDefaults, InputEvent};
pub use event::json;
pub use event::transform::Transformer;
