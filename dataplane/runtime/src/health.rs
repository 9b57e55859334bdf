//! The metrics port: `/healthz`, `/readyz`, `/metrics` and `/config`.
//!
//! Liveness only says the process still serves HTTP: restarting the pod would not fix a flow
//! whose sink is down, so component trouble shows in readiness (and metrics) instead. Readiness
//! is the conjunction of named components that supervisors update, so one failing flow takes
//! the pod out of Service endpoints and `/readyz` names it while the other flows keep running.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::addr::{parse_listen_addr, AddrError};
use crate::metrics::{self, MetricsRegistry};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("cannot listen on {addr}: {source}{}", crate::addr::bind_hint(source))]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    Ready,
    NotReady { reason: String },
}

/// Named components (`flow/order-events`, `link`, ...) and whether each is ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<RwLock<ReadinessInner>>,
}

#[derive(Debug, Default)]
struct ReadinessInner {
    started: bool,
    components: BTreeMap<String, ComponentState>,
    warnings: BTreeMap<String, String>,
}

/// The `/readyz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// `ready` or `unready`.
    pub status: &'static str,
    pub started: bool,
    pub components: BTreeMap<String, ComponentReport>,
    /// Problems that leave the process serving (e.g. an invalid config file whose last good
    /// version still runs): reported, but not a reason to take the pod out of service.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub warnings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentReport {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Until this is called `/readyz` is 503, so a pod whose config is still loading (and whose
    /// components are therefore not registered yet) is not mistaken for ready with none.
    pub fn mark_started(&self) {
        self.write().started = true;
    }

    pub fn set_ready(&self, name: impl Into<String>) {
        self.write()
            .components
            .insert(name.into(), ComponentState::Ready);
    }

    pub fn set_not_ready(&self, name: impl Into<String>, reason: impl Into<String>) {
        self.write().components.insert(
            name.into(),
            ComponentState::NotReady {
                reason: reason.into(),
            },
        );
    }

    /// Reports a problem under `name` on `/readyz` without making the process unready.
    pub fn set_warning(&self, name: impl Into<String>, text: impl Into<String>) {
        self.write().warnings.insert(name.into(), text.into());
    }

    pub fn clear_warning(&self, name: &str) {
        self.write().warnings.remove(name);
    }

    /// Drops the warnings under `prefix` whose remaining name `keep` rejects.
    pub fn retain_warnings_prefixed(&self, prefix: &str, keep: impl Fn(&str) -> bool) {
        self.write()
            .warnings
            .retain(|name, _| name.strip_prefix(prefix).is_none_or(&keep));
    }

    /// Drops the components under `prefix` whose remaining name `keep` rejects.
    pub fn retain_prefixed(&self, prefix: &str, keep: impl Fn(&str) -> bool) {
        self.write()
            .components
            .retain(|name, _| name.strip_prefix(prefix).is_none_or(&keep));
    }

    /// For components that no longer exist, e.g. a flow whose file was deleted.
    pub fn remove(&self, name: &str) {
        self.write().components.remove(name);
    }

    pub fn state(&self, name: &str) -> Option<ComponentState> {
        self.read().components.get(name).cloned()
    }

    pub fn is_ready(&self) -> bool {
        let inner = self.read();
        inner.started
            && inner
                .components
                .values()
                .all(|c| *c == ComponentState::Ready)
    }

    pub fn report(&self) -> ReadinessReport {
        let inner = self.read();
        let components: BTreeMap<_, _> = inner
            .components
            .iter()
            .map(|(name, state)| {
                let report = match state {
                    ComponentState::Ready => ComponentReport {
                        ready: true,
                        reason: None,
                    },
                    ComponentState::NotReady { reason } => ComponentReport {
                        ready: false,
                        reason: Some(reason.clone()),
                    },
                };
                (name.clone(), report)
            })
            .collect();
        let ready = inner.started && components.values().all(|c| c.ready);
        ReadinessReport {
            status: if ready { "ready" } else { "unready" },
            started: inner.started,
            components,
            warnings: inner.warnings.clone(),
        }
    }

    // Poisoning would only mean a panic between two map operations; the map stays consistent.
    fn read(&self) -> RwLockReadGuard<'_, ReadinessInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ReadinessInner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The JSON document served at `/config`: what config is loaded, so an operator can tell
/// that a reload took effect. Each data-plane part owns a top-level section (`flow`, `link`),
/// typically [`crate::watch::version_document`] of its last good snapshot.
#[derive(Debug, Clone)]
pub struct ConfigInfo {
    tx: Arc<watch::Sender<Value>>,
}

impl Default for ConfigInfo {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(Value::Object(Default::default()))),
        }
    }
}

impl ConfigInfo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole document.
    pub fn set(&self, document: Value) {
        self.tx.send_replace(document);
    }

    /// Replaces one top-level section, leaving the others.
    pub fn set_section(&self, key: &str, section: Value) {
        self.tx.send_modify(|doc| {
            if !doc.is_object() {
                *doc = Value::Object(Default::default());
            }
            if let Value::Object(map) = doc {
                map.insert(key.to_owned(), section);
            }
        });
    }

    pub fn get(&self) -> Value {
        self.tx.borrow().clone()
    }

    /// Notified on every change, e.g. for `fiso dev` to print what was reloaded.
    pub fn subscribe(&self) -> watch::Receiver<Value> {
        self.tx.subscribe()
    }
}

/// Everything the metrics port serves.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    pub readiness: Readiness,
    pub metrics: MetricsRegistry,
    pub config: ConfigInfo,
}

impl HealthState {
    pub fn new(metrics: MetricsRegistry, readiness: Readiness) -> Self {
        Self {
            readiness,
            metrics,
            config: ConfigInfo::default(),
        }
    }

    /// Serves `config` on `/config` (shared with the data plane that updates it).
    pub fn with_config(mut self, config: ConfigInfo) -> Self {
        self.config = config;
        self
    }
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let report = state.readiness.report();
    let code = if report.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, json(&report)).into_response()
}

async fn metrics(State(state): State<HealthState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn config(State(state): State<HealthState>) -> Response {
    json(&state.config.get()).into_response()
}

fn json<T: Serialize>(body: &T) -> impl IntoResponse {
    // Serializing maps with string keys and plain values cannot fail.
    let text = serde_json::to_string_pretty(body).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text + "\n")
}

/// A running metrics/health server.
#[derive(Debug)]
pub struct BoundServer {
    /// The address actually bound (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    /// Resolves once `shutdown` is cancelled and open requests have finished.
    pub handle: JoinHandle<io::Result<()>>,
}

/// Binds `addr` (`:9090`, `127.0.0.1:0`, ...) and serves [`router`] until `shutdown` is
/// cancelled. Cancel it after the data plane has drained so the last scrape sees final counts.
pub async fn serve(
    addr: &str,
    state: HealthState,
    shutdown: CancellationToken,
) -> Result<BoundServer, ServeError> {
    let addr = parse_listen_addr(addr)?;
    let bind_error = |source| ServeError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    // The same deadlines as the data plane's servers: idle connections to this port cannot
    // hold the file descriptors that probes and reloads need.
    let server = crate::server::serve(
        listener,
        router(state),
        crate::server::ServerTimeouts::default().fixed(),
        shutdown,
    );
    let handle = tokio::spawn(async move {
        server.await;
        Ok(())
    });
    Ok(BoundServer { local_addr, handle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_taken_port_is_said_to_be_taken() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let registry = crate::MetricsRegistry::new();
        let Err(e) = serve(
            &addr,
            HealthState::new(registry, Readiness::default()),
            CancellationToken::new(),
        )
        .await
        else {
            panic!("{addr} is taken, yet served");
        };
        let text = crate::error_text::chain(&e);
        assert!(
            text.starts_with(&format!("cannot listen on {addr}: ")),
            "{text}"
        );
        assert!(text.contains("the port is taken"), "{text}");
        assert_eq!(text.matches("in use").count(), 1, "{text}");
    }

    #[test]
    fn ready_needs_startup_and_every_component() {
        let r = Readiness::new();
        assert!(!r.is_ready(), "not started");
        r.mark_started();
        assert!(r.is_ready(), "started with no components");
        r.set_ready("link");
        r.set_not_ready("flow/orders", "sink unreachable");
        assert!(!r.is_ready());
        assert_eq!(
            serde_json::to_value(r.report()).unwrap(),
            json!({
                "status": "unready",
                "started": true,
                "components": {
                    "flow/orders": {"ready": false, "reason": "sink unreachable"},
                    "link": {"ready": true},
                }
            })
        );
        r.remove("flow/orders");
        assert!(r.is_ready());
        assert_eq!(r.state("link"), Some(ComponentState::Ready));
    }

    #[test]
    fn config_sections_are_independent() {
        let info = ConfigInfo::new();
        let mut rx = info.subscribe();
        info.set_section("flow", json!({"files": {"a.yaml": "1"}}));
        info.set_section("link", json!({"files": {}}));
        info.set_section("flow", json!({"files": {"a.yaml": "2"}}));
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            json!({"flow": {"files": {"a.yaml": "2"}}, "link": {"files": {}}})
        );
    }
}
