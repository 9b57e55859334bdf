//! The `WasmApp` reconciler: the shared [`resource`] reconciler with app validation.

use std::sync::Arc;

use fiso_config::crd::{ResourceStatus, WasmApp};
use fiso_config::Diagnostic;
use tokio_util::sync::CancellationToken;

use super::resource::{self, FisoResource};
use super::Context;
use crate::configmap::SourceKind;
use crate::metrics::Kind;
use crate::validation;

impl FisoResource for WasmApp {
    const SOURCE: SourceKind = SourceKind::App;
    const METRIC: Kind = Kind::WasmApp;

    fn check(&self) -> Vec<Diagnostic> {
        validation::check_app(self)
    }

    fn status(&self) -> Option<&ResourceStatus> {
        self.status.as_ref()
    }
}

/// Reconciles every WasmApp until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    resource::run::<WasmApp>(ctx, shutdown).await
}
