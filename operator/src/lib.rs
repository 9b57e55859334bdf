//! Fiso operator: reconciles `FlowDefinition` and `LinkTarget` (`fiso.io/v1alpha1`), renders
//! one data-plane ConfigMap per pod selection, and serves the sidecar-injection webhook.
//!
//! * [`selection`]: what a pod selects and every name derived from it (shared with the webhook).
//! * [`validation`], [`configmap`]: pure — resource validation with `spec.` paths, and what
//!   the ConfigMap of a selection holds.
//! * [`undecoded`]: the resources as the API server stores them, each spec read on its own, so
//!   one that the typed kind cannot hold is reported instead of failing the watch of its kind.
//! * [`controller`]: the kube-runtime controllers and the renderer, the loop that applies those
//!   ConfigMaps ([`run_controllers`]).
//! * [`leader`]: Lease-based leader election ([`leader::run_as_leader`]).
//! * [`webhook`]: the mutating admission webhook.
//! * [`metrics`], [`error`], [`config`]: metric families, the error type, environment settings.
//!
//! The binary wires these together; end-to-end tests call the same functions against a real
//! API server.

pub mod config;
pub mod configmap;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod selection;
pub mod undecoded;
pub mod validation;
pub mod webhook;

#[cfg(test)]
mod testing;

pub use controller::{run_controllers, Settings};
pub use error::{Error, Result};
pub use metrics::Metrics;
