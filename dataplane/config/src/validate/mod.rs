//! Semantic validation: everything deserialisation can't see. Every check runs and **all**
//! findings are returned, each with its field path and a fix hint.
//!
//! * [`flow`] checks one flow, [`link`] the link config and its targets, [`apps`] apps files,
//!   [`traces`] a `tracing:` section,
//! * [`project`] loads a whole project (many flow files + a link file) and adds the checks that
//!   span files (duplicate names, HTTP path collisions on a shared `listenAddr`).

pub mod apps;
pub mod flow;
pub mod link;
pub mod project;
mod rules;
pub mod traces;

pub use apps::{check_apps, validate_app, validate_apps, LoadedApps};
pub use flow::validate_flow;
pub use link::{validate_link, validate_target};
pub use project::{check_project, LoadedFlow, LoadedLink, Project, SourceFile};
pub use rules::{is_dns_label, normalize_listen_addr};
pub use traces::validate_tracing;

/// Where a config comes from: a local file or a Kubernetes custom resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `fiso/flows/*.yaml`, `fiso/link/config.yaml`: names are required, secrets are files/env.
    File,
    /// `FlowDefinition` / `LinkTarget` spec: `name` comes from metadata, secrets may be
    /// Kubernetes Secret references, Kafka link targets carry their cluster inline.
    Resource,
}
