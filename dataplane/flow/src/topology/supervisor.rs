//! Failure isolation: every flow runs under its own supervisor task. A flow that fails (its
//! listen address cannot be bound, ...) is reported unready and restarted with exponential
//! backoff while the others keep serving.
//!
//! A changed flow replaces the running instance, except where its source can keep running: a
//! Kafka consumer whose settings did not change keeps its group membership and partitions, and
//! only the pipeline it hands records to is swapped (see [`LivePipeline`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use fiso_runtime::backoff::Restart;
use fiso_runtime::Readiness;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::router::{RouteGuard, RouterError, ServerRegistry};
use crate::metrics::FlowMetrics;
use crate::pipeline::LivePipeline;
use crate::pipeline::Pipeline;
use crate::sources::http::HttpSource;
use crate::sources::{AnySource, SourceStatus, TaskSource};

const RESTART_INITIAL: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);

struct Running {
    flow: Arc<Pipeline>,
    version: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// A task source and the pipeline it reads, which a reload may swap.
    live: Option<(TaskSource, LivePipeline)>,
    /// Stops the watch of this pipeline's sink connection.
    sink_watch: CancellationToken,
}

/// The flows running in this process.
pub struct Supervisor {
    registry: Arc<ServerRegistry>,
    readiness: Readiness,
    metrics: FlowMetrics,
    running: Mutex<HashMap<String, Running>>,
    /// Instances told to stop (replaced or removed) that may still be finishing: a consumer
    /// commits and leaves its group. Shutdown waits for them too, so a process stopped right
    /// after a reload does not leave a member behind that holds up the group's next join.
    retiring: Mutex<Vec<JoinHandle<()>>>,
}

/// The readiness component of a flow (`flow/<name>`): whether its source runs.
pub fn component(flow: &str) -> String {
    format!("flow/{flow}")
}

/// The readiness component of a flow's sink connection (`flow/<name>/sink`): kept apart from
/// the flow's own component, so a sink still connecting does not hold up its source.
pub fn sink_component(flow: &str) -> String {
    format!("{}/sink", component(flow))
}

impl Supervisor {
    pub fn new(
        registry: Arc<ServerRegistry>,
        readiness: Readiness,
        metrics: FlowMetrics,
    ) -> Arc<Self> {
        Arc::new(Supervisor {
            registry,
            readiness,
            metrics,
            running: Mutex::new(HashMap::new()),
            retiring: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn registry(&self) -> &Arc<ServerRegistry> {
        &self.registry
    }

    /// Version (config hash) of each running flow.
    pub fn versions(&self) -> HashMap<String, String> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.version.clone()))
            .collect()
    }

    /// Starts `flow`, replacing a running instance of the same name. The new instance takes
    /// over its routes before the old one is told to stop, so no request finds no flow. A task
    /// source that can keep running ([`TaskSource::keeps_running`]) is not restarted: its
    /// pipeline is swapped, records in hand finish on the old one. A Kafka consumer that cannot
    /// is stopped first (it commits and leaves its group), then its replacement joins.
    pub fn start(&self, flow: Arc<Pipeline>, source: AnySource) {
        if let AnySource::Task(source) = &source {
            if self.swap(&flow, source) {
                return;
            }
        }
        let cancel = CancellationToken::new();
        let (task, live) = match source {
            AnySource::Task(source) => {
                // Until the source says otherwise (a consumer has no partitions yet): `/readyz`
                // must not read a flow it does not know of yet as ready.
                let name = component(&flow.name);
                if self.readiness.state(&name).is_none() {
                    self.readiness.set_not_ready(name, "starting");
                }
                // A consumer's replacement joins the group once the one it replaces has left
                // it: a join racing a leave costs a second rebalance at best, and can leave the
                // group rebalancing for good (tansu).
                let replaced = match &source {
                    TaskSource::Kafka(_) => self.lock().remove(&flow.name).map(|old| {
                        old.cancel.cancel();
                        old.task
                    }),
                    TaskSource::Grpc(_) => None,
                };
                let live: LivePipeline = Arc::new(ArcSwap::new(Arc::clone(&flow)));
                let supervised = supervise_task(
                    Arc::clone(&live),
                    source.clone(),
                    self.readiness.clone(),
                    self.metrics.clone(),
                    cancel.clone(),
                );
                let task = tokio::spawn(async move {
                    if let Some(replaced) = replaced {
                        let _ = replaced.await;
                    }
                    supervised.await;
                });
                (task, Some((source, live)))
            }
            AnySource::Route(route) => {
                let first = self.registry.attach(&route, Arc::clone(&flow));
                let task = tokio::spawn(supervise(
                    Arc::clone(&flow),
                    route,
                    first,
                    Arc::clone(&self.registry),
                    self.readiness.clone(),
                    self.metrics.clone(),
                    cancel.clone(),
                ));
                (task, None)
            }
        };
        let sink_watch = self.watch_sink(&flow, &cancel);
        let previous = self.lock().insert(
            flow.name.clone(),
            Running {
                flow: Arc::clone(&flow),
                version: flow.version.clone(),
                cancel,
                task,
                live,
                sink_watch,
            },
        );
        if let Some(old) = previous {
            self.retire_instance(old);
        }
    }

    /// Tells a replaced or removed instance to stop, and keeps its task for [`Self::shutdown`].
    fn retire_instance(&self, old: Running) {
        old.cancel.cancel();
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|t| !t.is_finished());
        retiring.push(old.task);
    }

    /// Swaps `flow` in under the running instance of its name when that runs `source` and can
    /// keep running; `false` when it must be replaced.
    fn swap(&self, flow: &Arc<Pipeline>, source: &TaskSource) -> bool {
        let mut running = self.lock();
        let Some(r) = running.get_mut(&flow.name) else {
            return false;
        };
        let Some((running_source, live)) = &r.live else {
            return false;
        };
        if !running_source.keeps_running(&r.flow, flow) || !source.keeps_running(&r.flow, flow) {
            return false;
        }
        live.store(Arc::clone(flow));
        r.sink_watch.cancel();
        r.sink_watch = self.watch_sink(flow, &r.cancel);
        r.flow = Arc::clone(flow);
        r.version = flow.version.clone();
        tracing::info!(name = %flow.name, version = %flow.version, "flow swapped under its running source");
        true
    }

    /// A sink that connects in the background (Temporal) reports the flow unready until it
    /// did, without holding up its source. The token returned stops the watch.
    fn watch_sink(&self, flow: &Pipeline, cancel: &CancellationToken) -> CancellationToken {
        let stop = cancel.child_token();
        let sink_component = sink_component(&flow.name);
        match flow.sink_connection_watch(
            self.readiness.clone(),
            sink_component.clone(),
            stop.clone(),
        ) {
            Some(watch) => {
                tokio::spawn(watch);
            }
            None => self.readiness.remove(&sink_component),
        }
        stop
    }

    /// Announces that `name` is about to be stopped, so flows started before that may take
    /// over its paths (a flow renamed in its file keeps serving its path without a gap).
    pub fn retire(&self, name: &str) {
        if let Some(running) = self.lock().get(name) {
            running.flow.retire();
        }
    }

    /// Stops a flow (its file was removed); requests in flight finish.
    pub fn stop(&self, name: &str) {
        let removed = self.lock().remove(name);
        if let Some(old) = removed {
            self.retire_instance(old);
            self.readiness.remove(&component(name));
            self.readiness.remove(&sink_component(name));
            self.metrics.forget(name);
            tracing::info!(name, "flow stopped");
        }
    }

    /// Stops every flow and waits for their servers to answer what is in flight.
    pub async fn shutdown(&self) {
        // Stop accepting first, while every route still leads to its flow: a request that
        // arrives on an open connection during the drain is served, not answered 404.
        self.registry.shutdown().await;
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for r in &all {
            r.cancel.cancel();
        }
        for r in all {
            let _ = r.task.await;
        }
        let retiring =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        for task in retiring {
            let _ = task.await;
        }
        // A restarting flow may have bound its address again during the drain.
        self.registry.shutdown().await;
    }
}

/// An HTTP flow: a route on a shared server, attached again with backoff while that fails
/// (its address cannot be bound, its path is taken).
async fn supervise(
    flow: Arc<Pipeline>,
    route: HttpSource,
    mut attempt: Result<RouteGuard, RouterError>,
    registry: Arc<ServerRegistry>,
    readiness: Readiness,
    metrics: FlowMetrics,
    cancel: CancellationToken,
) {
    let name = flow.name.clone();
    let mut restart = Restart::new(RESTART_INITIAL, RESTART_MAX);
    loop {
        match attempt {
            Ok(guard) => {
                readiness.set_ready(component(&name));
                metrics.set_up(&name, true);
                tracing::info!(name = %name, version = %flow.version, "flow started");
                cancel.cancelled().await;
                drop(guard);
                return;
            }
            Err(e) => {
                tracing::error!(name = %name, error = %e, retry_in = ?restart.delay(), "flow stopped with error");
                readiness.set_not_ready(component(&name), e.to_string());
                metrics.set_up(&name, false);
                if !restart.sleep(&cancel).await {
                    return;
                }
                metrics.restarted(&name);
                attempt = registry.attach(&route, Arc::clone(&flow));
            }
        }
    }
}

/// A Kafka or gRPC flow: its source runs until cancelled; one that stops with an error is
/// reported and restarted with backoff (a consumer resumes from the last committed offset).
async fn supervise_task(
    flow: LivePipeline,
    source: TaskSource,
    readiness: Readiness,
    metrics: FlowMetrics,
    cancel: CancellationToken,
) {
    let name = flow.load().name.clone();
    let mut restart = Restart::new(RESTART_INITIAL, RESTART_MAX);
    loop {
        // Stopped before it started (replaced again while waiting for its predecessor).
        if cancel.is_cancelled() {
            return;
        }
        let status = SourceStatus::new(readiness.clone(), component(&name), {
            let (name, metrics, flow) = (name.clone(), metrics.clone(), Arc::clone(&flow));
            move || {
                metrics.set_up(&name, true);
                tracing::info!(name = %name, version = %flow.load().version, "flow started");
            }
        });
        let e = match source.run(&flow, &cancel, &status).await {
            Ok(()) => return,
            Err(e) => e,
        };
        tracing::error!(name = %name, error = %e, retry_in = ?restart.delay(), "flow stopped with error");
        readiness.set_not_ready(component(&name), e.to_string());
        metrics.set_up(&name, false);
        if !restart.sleep(&cancel).await {
            return;
        }
        metrics.restarted(&name);
    }
}
