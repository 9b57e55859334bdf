//! The router model's shared HTTP servers: one server per listen address, routing by path to
//! whichever flow instance currently owns the path. Attaching replaces a route atomically, so a
//! reloaded flow takes over without a request being refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;
use axum::routing::any;
use fiso_runtime::addr::{parse_listen_addr, AddrError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::instance::FlowInstance;
use crate::source::http::{serve_request, RouteTable, Routes};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("cannot listen on {addr}: {source}")]
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
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// All HTTP source servers of the process.
#[derive(Default)]
pub struct ServerRegistry {
    servers: Mutex<HashMap<String, Server>>,
}

/// Keeps a route attached; dropping it detaches the route unless a newer instance took it over.
pub struct RouteGuard {
    registry: Weak<ServerRegistry>,
    key: String,
    path: String,
    flow: Arc<FlowInstance>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Server>> {
        // A panic while holding the lock leaves the map itself consistent.
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `path` on `listen_addr` to `flow`, starting the server if it is the first route.
    /// A route owned by an older instance of the same flow is replaced in place.
    pub fn attach(
        self: &Arc<Self>,
        listen_addr: &str,
        path: &str,
        flow: Arc<FlowInstance>,
    ) -> Result<RouteGuard, RouterError> {
        let key = listen_addr.to_owned();
        let mut servers = self.lock();
        if !servers.contains_key(&key) {
            let server = start_server(listen_addr)?;
            tracing::info!(addr = %server.local_addr, listen_addr, "http source listening");
            servers.insert(key.clone(), server);
        }
        let server = servers.get(&key).expect("inserted above");
        let current = server.routes.load();
        if let Some(owner) = current.get(path) {
            if owner.name != flow.name {
                return Err(RouterError::PathTaken {
                    addr: key,
                    path: path.to_owned(),
                    owner: owner.name.clone(),
                });
            }
        }
        let mut table: RouteTable = (**current).clone();
        table.insert(path.to_owned(), Arc::clone(&flow));
        server.routes.store(Arc::new(table));
        Ok(RouteGuard {
            registry: Arc::downgrade(self),
            key,
            path: path.to_owned(),
            flow,
        })
    }

    fn detach(&self, key: &str, path: &str, flow: &Arc<FlowInstance>) {
        let mut servers = self.lock();
        let Some(server) = servers.get(key) else {
            return;
        };
        let current = server.routes.load();
        if !current
            .get(path)
            .is_some_and(|owner| Arc::ptr_eq(owner, flow))
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
            }
        }
    }

    /// The address a listen address is actually bound to (resolves port 0).
    pub fn local_addr(&self, listen_addr: &str) -> Option<SocketAddr> {
        self.lock().get(listen_addr).map(|s| s.local_addr)
    }

    /// Stops accepting on every server and waits until requests in flight are answered.
    pub async fn shutdown(&self) {
        let servers: Vec<Server> = self.lock().drain().map(|(_, s)| s).collect();
        for s in &servers {
            s.cancel.cancel();
        }
        for s in servers {
            let _ = s.task.await;
        }
    }
}

fn start_server(listen_addr: &str) -> Result<Server, RouterError> {
    let addr = parse_listen_addr(listen_addr)?;
    let bind_err = |source| RouterError::Bind {
        addr: listen_addr.to_owned(),
        source,
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let local_addr = std_listener.local_addr().map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
    let routes: Routes = Arc::new(ArcSwap::from_pointee(RouteTable::new()));
    let cancel = CancellationToken::new();
    let app = axum::Router::new()
        .fallback(any(serve_request))
        .with_state(Arc::clone(&routes));
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(addr = %local_addr, error = %e, "http source server failed");
        }
    });
    Ok(Server {
        routes,
        local_addr,
        cancel,
        task,
    })
}
