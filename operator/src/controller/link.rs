//! The `LinkTarget` reconciler: the shared [`resource`] reconciler with link
//! target validation.

use std::sync::Arc;

use fiso_config::crd::LinkTarget;
use tokio_util::sync::CancellationToken;

use super::resource::{self, FisoResource};
use super::Context;
use crate::configmap::SourceKind;
use crate::metrics::Kind;

impl FisoResource for LinkTarget {
    const SOURCE: SourceKind = SourceKind::Link;
    const METRIC: Kind = Kind::LinkTarget;
}

/// Reconciles every LinkTarget until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    resource::run::<LinkTarget>(ctx, shutdown).await
}
