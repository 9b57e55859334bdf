//! Fiso-Link: the localhost egress proxy applications call instead of the outside world
//! (`localhost:3500/link/{target}/{path}`).
//!
//! This crate will hold one tower `Layer` per concern — route, allowed paths, rate limit,
//! circuit breaker, retry, auth injection — and the upstream client, plus Kafka targets.
//! Its configuration types already live in [`fiso_config::link`]; the runtime arrives with the
//! Link issue. Until then the crate exposes nothing, so no caller can mistake it for a proxy.
