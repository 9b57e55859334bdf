//! Fiso-Link: the localhost egress proxy applications call instead of the outside world
//! (`localhost:3500/link/{target}/{path}`).
//!
//! One tower `Layer` per concern, in this order: route ([`route`], 404 for an unknown target;
//! framing and method checks in [`framing`], hop-by-hop headers stripped)
//! → allowed paths ([`allow`], 403) → rate limit ([`ratelimit`], 429) → circuit breaker
//! ([`breaker`], 503) → retry ([`retry`]) → auth injection ([`auth`]) → upstream: HTTP(S)
//! ([`upstream`]) or a Kafka topic ([`kafka`]).

pub mod allow;
pub mod auth;
pub mod breaker;
pub mod client_fault;
pub mod forward;
pub mod framing;
pub mod inject;
pub mod kafka;
pub mod layer;
pub mod metrics;
pub mod ratelimit;
pub mod response;
pub mod retry;
pub mod route;
pub mod runtime;
pub mod target;
pub mod upstream;

pub use runtime::{LinkError, LinkRuntime, DEFAULT_LINK_CONFIG};
