//! The router model's shared HTTP servers: one server per listen address, routing by path to
//! whichever flow instance currently owns the path. Attaching replaces a route atomically, so a
//! reloaded flow takes over without a request being refused.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;

use fiso_runtime::addr::{parse_listen_addr, AddrError};
use fiso_runtime::outline;
use fiso_runtime::server::{PerCoreServer, ServerTimeouts};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::sources::http::{serve_request, HttpSource, Route, RouteTable, Routes, SourceServer};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error(
        "cannot listen on {addr}: {source}{}",
        fiso_runtime::addr::bind_hint(source)
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("path {path} on {addr} is already served by flow `{owner}`")]
    PathTaken {
        addr: String,
        path: String,
        owner: String,
    },
}

struct Server {
    routes: Routes,
    /// Taken by each new connection; the flows on one address agree on them (validated).
    timeouts: watch::Sender<ServerTimeouts>,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// All HTTP source servers of the process, by normalised listen address: `:8080` and
/// `0.0.0.0:8080` (or `localhost:8080` and `127.0.0.1:8080`) are one server, as `fiso validate`
/// treats them.
#[derive(Default)]
pub struct ServerRegistry {
    servers: Mutex<HashMap<SocketAddr, Server>>,
    /// Servers whose last route went away and that are still answering requests in flight;
    /// [`ServerRegistry::shutdown`] waits for them too.
    draining: Mutex<Vec<JoinHandle<()>>>,
}

/// Keeps a route attached; dropping it detaches the route unless a newer instance took it over.
pub struct RouteGuard {
    registry: Weak<ServerRegistry>,
    key: SocketAddr,
    path: String,
    flow: Arc<Pipeline>,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.detach(&self.key, &self.path, &self.flow);
        }
    }
}

impl ServerRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(ServerRegistry::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Server>> {
        // A panic while holding the lock leaves the map itself consistent.
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `path` on `listen_addr` to `flow`, starting the server if it is the first route.
    /// A route owned by an older instance of the same flow, or by a flow being removed, is
    /// replaced in place.
    pub fn attach(
        self: &Arc<Self>,
        route: &HttpSource,
        flow: Arc<Pipeline>,
    ) -> Result<RouteGuard, RouterError> {
        let (listen_addr, path) = (route.listen_addr.as_str(), route.path.as_str());
        let key = parse_listen_addr(listen_addr)?;
        let mut servers = self.lock();
        let server = match servers.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let server = start_server(listen_addr, key)?;
                tracing::info!(addr = %server.local_addr, listen_addr, "http source listening");
                e.insert(server)
            }
        };
        let current = server.routes.load();
        if let Some(owner) = current.get(path) {
            if owner.flow.name != flow.name && !owner.flow.is_retiring() {
                return Err(RouterError::PathTaken {
                    addr: listen_addr.to_owned(),
                    path: path.to_owned(),
                    owner: owner.flow.name.clone(),
                });
            }
        }
        server.timeouts.send_replace(route.timeouts);
        let mut table: RouteTable = (**current).clone();
        table.insert(
            path.to_owned(),
            Route {
                flow: Arc::clone(&flow),
                max_body: route.max_body,
            },
        );
        server.routes.store(Arc::new(table));
        Ok(RouteGuard {
            registry: Arc::downgrade(self),
            key,
            path: path.to_owned(),
            flow,
        })
    }

    fn detach(&self, key: &SocketAddr, path: &str, flow: &Arc<Pipeline>) {
        let mut servers = self.lock();
        let Some(server) = servers.get(key) else {
            return;
        };
        let current = server.routes.load();
        if !current
            .get(path)
            .is_some_and(|owner| Arc::ptr_eq(&owner.flow, flow))
        {
            return;
        }
        let mut table: RouteTable = (**current).clone();
        table.remove(path);
        let empty = table.is_empty();
        server.routes.store(Arc::new(table));
        if empty {
            if let Some(server) = servers.remove(key) {
                tracing::info!(addr = %server.local_addr, "http source stopped: no flows left on it");
                server.cancel.cancel();
                let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
                draining.retain(|task| !task.is_finished());
                draining.push(server.task);
            }
        }
    }

    /// The address a listen address is actually bound to (resolves port 0).
    pub fn local_addr(&self, listen_addr: &str) -> Option<SocketAddr> {
        let key = parse_listen_addr(listen_addr).ok()?;
        self.lock().get(&key).map(|s| s.local_addr)
    }

    /// Stops accepting on every server and waits until requests in flight are answered,
    /// including on servers already stopped because their last flow went away.
    pub async fn shutdown(&self) {
        let servers: Vec<Server> = self.lock().drain().map(|(_, s)| s).collect();
        for s in &servers {
            s.cancel.cancel();
        }
        let draining =
            std::mem::take(&mut *self.draining.lock().unwrap_or_else(|p| p.into_inner()));
        for task in servers.into_iter().map(|s| s.task).chain(draining) {
            let _ = task.await;
        }
    }
}

fn start_server(listen_addr: &str, addr: SocketAddr) -> Result<Server, RouterError> {
    let routes: Routes = Arc::new(ArcSwap::from_pointee(RouteTable::new()));
    let cancel = CancellationToken::new();
    let shared = tokio::runtime::Handle::current();
    // Paths are the route table's: no router, and one `Arc` (the core's own) cloned per request.
    let app = || {
        let server = Arc::new(SourceServer {
            routes: Arc::clone(&routes),
            shared: shared.clone(),
        });
        tower::service_fn(move |req| {
            let server = Arc::clone(&server);
            // Boxed once here: the event's future is KiBs, and the layers between this service
            // and hyper's connection (tower's oneshot, the deadline bookkeeping, hyper's
            // dispatch slot) would each copy it whole.
            outline::pinned(
                || async move { Ok::<_, Infallible>(serve_request(&server, req).await) },
            )
        })
    };
    let (timeouts, timeouts_rx) = watch::channel(ServerTimeouts::default());
    let serving = PerCoreServer::start(addr, "fiso-http", app, timeouts_rx, cancel.clone())
        .map_err(|source| RouterError::Bind {
            addr: listen_addr.to_owned(),
            source,
        })?;
    let local_addr = serving.local_addr();
    Ok(Server {
        routes,
        timeouts,
        local_addr,
        cancel,
        task: tokio::spawn(serving.stopped()),
    })
}

#[cfg(test)]
mod tests {
    use fiso_runtime::MetricsRegistry;

    use super::*;
    use crate::metrics::FlowMetrics;
    use crate::pipeline::Parts;

    fn flow(name: &str, listen_addr: &str, path: &str) -> Arc<Pipeline> {
        let yaml = format!(
            "name: {name}\nsource:\n  type: http\n  config:\n    listenAddr: \"{listen_addr}\"\n    path: {path}\nsink:\n  type: http\n  config:\n    url: http://127.0.0.1:9/in\n"
        );
        let config = serde_yaml_ng::from_str(&yaml).expect("valid flow YAML");
        let metrics = FlowMetrics::register(&MetricsRegistry::new()).expect("metrics");
        let parts = Parts {
            version: "v1",
            metrics,
            dir: None,
            kafka_source: None,
            apps: &Default::default(),
        };
        Pipeline::build(&config, parts).expect("flow builds")
    }

    /// The route of `path` on `listen_addr`.
    fn route(listen_addr: &str, path: &str) -> HttpSource {
        HttpSource {
            listen_addr: listen_addr.to_owned(),
            path: path.to_owned(),
            timeouts: ServerTimeouts::default(),
            max_body: 1024,
        }
    }

    #[tokio::test]
    async fn equivalent_listen_addresses_share_one_server() {
        let registry = ServerRegistry::new();
        let a = flow("a", "localhost:0", "/a");
        let _a = registry.attach(&route("localhost:0", "/a"), a).unwrap();
        let b = flow("b", "127.0.0.1:0", "/b");
        let _b = registry.attach(&route("127.0.0.1:0", "/b"), b).unwrap();
        assert_eq!(registry.lock().len(), 1);
        assert_eq!(
            registry.local_addr("localhost:0"),
            registry.local_addr("127.0.0.1:0")
        );
        let c = flow("c", "127.0.0.1:0", "/a");
        assert!(matches!(
            registry.attach(&route("127.0.0.1:0", "/a"), c),
            Err(RouterError::PathTaken { owner, .. }) if owner == "a"
        ));
        registry.shutdown().await;
    }

    #[tokio::test]
    async fn a_retiring_flow_hands_its_path_over() {
        let registry = ServerRegistry::new();
        let old = flow("old", "127.0.0.1:0", "/orders");
        let old_guard = registry
            .attach(&route("127.0.0.1:0", "/orders"), Arc::clone(&old))
            .unwrap();
        old.retire();
        let new = flow("new", "127.0.0.1:0", "/orders");
        let _new_guard = registry
            .attach(&route("127.0.0.1:0", "/orders"), Arc::clone(&new))
            .unwrap();
        // The old flow going away leaves the route with its successor.
        drop(old_guard);
        let owner = registry.lock().values().next().unwrap().routes.load_full();
        assert!(Arc::ptr_eq(&owner["/orders"].flow, &new));
        registry.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_waits_for_servers_stopped_earlier() {
        let registry = ServerRegistry::new();
        let guard = registry
            .attach(&route("127.0.0.1:0", "/a"), flow("a", "127.0.0.1:0", "/a"))
            .unwrap();
        // The last route going away stops the server, which keeps draining.
        drop(guard);
        assert!(registry.lock().is_empty());
        assert_eq!(registry.draining.lock().unwrap().len(), 1);
        registry.shutdown().await;
        assert!(registry.draining.lock().unwrap().is_empty());
    }
}
