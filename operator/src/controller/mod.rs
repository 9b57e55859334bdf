//! The controllers: one kube-runtime `Controller` per kind (validation and status) and the
//! renderer (one ConfigMap per selection in use).
//!
//! * [`flow`] / [`link`] / [`app`]: `FlowDefinition` / `LinkTarget` / `WasmApp` reconcilers,
//!   all the generic
//!   [`resource::reconcile`]: decode and validate the spec, read the rendered ConfigMaps, server-side apply the
//!   status, publish events for transitions.
//! * [`renderer`]: watches the pods the webhook labelled and the two kinds; renders (with
//!   [`crate::configmap`]) and server-side applies the ConfigMap of every selection a change
//!   touches; prunes ConfigMaps no pod has used for a while.
//! * [`status`], [`usage`]: the pure parts of the above.
//!
//! The kinds' controllers watch the rendered ConfigMaps too, so a resource's `Rendered`
//! condition follows the ConfigMaps without the two sides sharing memory (and stays right
//! across restarts and leader changes).

pub mod app;
pub mod flow;
pub mod link;
pub mod renderer;
pub mod resource;
pub mod status;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use fiso_config::crd::{FlowDefinition, LinkTarget, WasmApp};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::selection::MANAGED_BY_LABEL;
use crate::undecoded::Undecoded;

/// Field manager of every server-side apply (status, ConfigMaps).
pub const FIELD_MANAGER: &str = "fiso-operator";

/// `reportingController` of the operator's events.
pub const REPORTING_CONTROLLER: &str = "fiso-operator";

/// Timing of the controllers; [`Settings::default`] suits production.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Who publishes events (`instance`: the pod name, so replicas can be told apart).
    pub reporter: Reporter,
    /// Every resource is reconciled at least this often, even without changes: the safety
    /// net for missed watch events.
    pub requeue: Duration,
    /// Delay before retrying a failed reconcile; the renderer doubles it per consecutive
    /// failure of a selection, up to [`Settings::max_retry`].
    pub retry: Duration,
    pub max_retry: Duration,
    /// How often the renderer re-checks every ConfigMap in use (repairing edits and
    /// deletions) and prunes unused ones.
    pub resync: Duration,
    /// A rendered ConfigMap no pod has used for this long is deleted. Generous, so a
    /// Deployment rolling with `Recreate`, or scaled to zero for a while, keeps its ConfigMap.
    pub prune_after: Duration,
    /// Changes within this window are rendered once (a rollout creating many pods, `kubectl
    /// apply` of several resources).
    pub debounce: Duration,
    pub metrics: Metrics,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            reporter: Reporter {
                controller: REPORTING_CONTROLLER.to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
            requeue: Duration::from_secs(300),
            retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(300),
            resync: Duration::from_secs(300),
            prune_after: Duration::from_secs(600),
            debounce: Duration::from_millis(200),
            metrics: Metrics::default(),
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
}

impl Context {
    pub fn new(client: Client, settings: Settings) -> Arc<Self> {
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), settings.reporter.clone()),
            client,
            settings,
        })
    }
}

/// Label selector of the ConfigMaps the operator renders.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1)
}

/// Runs the FlowDefinition, LinkTarget and WasmApp controllers and the renderer until `shutdown`
/// is cancelled; in-flight reconciles finish first. Fails at once if the CRDs are not served.
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<()> {
    ensure_served::<FlowDefinition>(&client).await?;
    ensure_served::<LinkTarget>(&client).await?;
    ensure_served::<WasmApp>(&client).await?;
    let ctx = Context::new(client, settings);
    tracing::info!("controllers starting");
    tokio::join!(
        flow::run(ctx.clone(), shutdown.clone()),
        link::run(ctx.clone(), shutdown.clone()),
        app::run(ctx.clone(), shutdown.clone()),
        renderer::run(ctx, shutdown),
    );
    tracing::info!("controllers stopped");
    Ok(())
}

/// Fails with a clear message when a kind is not served (CRDs not installed).
async fn ensure_served<K: resource::FisoResource>(client: &Client) -> Result<()> {
    Api::<Undecoded<K>>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| Error::CrdMissing {
            kind: K::SOURCE.kind(),
            api_version: fiso_config::crd::API_GROUP_VERSION,
            source: Box::new(e),
        })
}
