//! `fiso-config`: the one schema Fiso reads, whether it comes from a local YAML file
//! (`fiso/flows/*.yaml`, `fiso/link/config.yaml`) or from a Kubernetes custom resource.
//!
//! * [`flow`] and [`link`] are the serde + schemars types of a flow file and the link config;
//!   [`apps`] those of the Wasmer/WASIX apps files and the all-in-one file; [`traces`] their
//!   `tracing:` section.
//! * [`crd`] derives the `FlowDefinition` / `LinkTarget` kinds (`fiso.io/v1alpha1`) from those
//!   same types, so a custom resource the API server admits is a config the data plane can run.
//! * [`parse`] turns YAML text into those types with file / line / column on every error.
//! * [`validate`] runs the semantic checks and reports **all** problems at once.
//!
//! No I/O and no async runtime live here: callers hand in text and get values or diagnostics.

pub mod apps;
pub mod cel_check;
pub mod common;
pub mod crd;
pub mod diagnostic;
pub mod flow;
pub mod kafka;
pub mod link;
pub mod location;
pub mod manifests;
pub mod parse;
pub mod reference;
mod schema;
pub mod traces;
pub mod validate;

pub use apps::{AioConfig, AppsConfig};
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use flow::FlowConfig;
pub use link::LinkConfig;
pub use traces::TracingConfig;
