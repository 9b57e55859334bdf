//! Fiso-Link: the localhost egress proxy applications call instead of the outside world
//! (`localhost:3500/link/{target}/{path}`).
//!
//! One [`layer::Concern`] per concern ([`layer`] chains them), stacked per target in
//! [`target`], which is the one place their order is written. The route layer ([`route`]) picks
//! the target: 404 for an unknown one, framing and method checks in [`framing`], the path
//! normalised by [`path`]. The concerns: allowed paths ([`allow`]), WASM interceptors
//! ([`intercept`]), rate limit ([`ratelimit`]), circuit breaker ([`breaker`]), retry
//! ([`retry`]), auth injection
//! ([`inject`], credentials from [`auth`]); the upstream is HTTP(S) ([`upstream`]) or a Kafka
//! topic ([`kafka`]). [`runtime`] serves the route table and hot-reloads it.

pub mod allow;
pub mod app;
pub mod auth;
pub mod breaker;
pub mod client_fault;
pub mod forward;
pub mod framing;
pub mod inject;
pub mod intercept;
pub mod kafka;
pub mod layer;
pub mod metrics;
pub mod path;
pub mod ratelimit;
pub mod response;
pub mod retry;
pub mod route;
pub mod runtime;
pub mod target;
pub mod upstream;

pub use runtime::{LinkError, LinkRuntime, DEFAULT_LINK_CONFIG};
