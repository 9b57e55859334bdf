//! The `FlowDefinition` reconciler: the shared [`resource`] reconciler with
//! flow validation.

use std::sync::Arc;

use fiso_config::crd::FlowDefinition;
use tokio_util::sync::CancellationToken;

use super::resource::{self, FisoResource};
use super::Context;
use crate::configmap::SourceKind;
use crate::metrics::Kind;

impl FisoResource for FlowDefinition {
    const SOURCE: SourceKind = SourceKind::Flow;
    const METRIC: Kind = Kind::FlowDefinition;
}

/// Reconciles every FlowDefinition until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    resource::run::<FlowDefinition>(ctx, shutdown).await
}
