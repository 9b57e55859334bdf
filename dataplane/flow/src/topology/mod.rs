//! How the flows of a process are arranged and kept running: [`runtime`] (`fiso flow`: every
//! flow of a directory, the health server, hot reload), [`reload`] (the directory diffed by
//! content hash), [`supervisor`] (each flow restarted with backoff on failure; it owns the
//! readiness components), [`router`] (HTTP sources as routes on shared servers).

pub mod reload;
pub mod router;
pub mod runtime;
pub mod supervisor;
