//! The `FlowDefinition` reconciler: the shared [`resource`] reconciler with
//! flow validation.

use std::sync::Arc;

use fiso_config::crd::{FlowDefinition, ResourceStatus};
use fiso_config::Diagnostic;
use tokio_util::sync::CancellationToken;

use super::resource::{self, FisoResource};
use super::Context;
use crate::configmap::SourceKind;
use crate::metrics::Kind;
use crate::validation;

impl FisoResource for FlowDefinition {
    const SOURCE: SourceKind = SourceKind::Flow;
    const METRIC: Kind = Kind::FlowDefinition;

    fn check(&self) -> Vec<Diagnostic> {
        validation::check_flow(self)
    }

    fn status(&self) -> Option<&ResourceStatus> {
        self.status.as_ref()
    }
}

/// Reconciles every FlowDefinition until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    resource::run::<FlowDefinition>(ctx, shutdown).await
}
