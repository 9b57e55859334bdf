//! The `WasmApp` reconciler: the shared [`resource`] reconciler with app validation.

use std::sync::Arc;

use fiso_config::crd::WasmApp;
use tokio_util::sync::CancellationToken;

use super::resource::{self, FisoResource};
use super::Context;
use crate::configmap::SourceKind;
use crate::metrics::Kind;

impl FisoResource for WasmApp {
    const SOURCE: SourceKind = SourceKind::App;
    const METRIC: Kind = Kind::WasmApp;
}

/// Reconciles every WasmApp until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    resource::run::<WasmApp>(ctx, shutdown).await
}
