//! The HTTPS server: `POST /mutate` (and `GET /healthz`) over rustls, HTTP/1.1, graceful
//! shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fiso_runtime::metrics::ReloadResult;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kube::core::admission::AdmissionRequest;
use kube::core::DynamicObject;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::admission::{self, Outcome, Plan};
use super::certs::{self, Issued};
use super::metrics::WebhookMetrics;
use super::mode;
use super::references::{self, References};
use super::tls::{self, CertFiles, CertStore};
use super::{BoundWebhook, SelfSigned, SidecarMode, WebhookConfig, WebhookError};

/// Largest accepted review (a Pod is at most ~1.5 MiB in etcd; a review may carry two).
const MAX_BODY: usize = 6 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight reviews.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct AppState {
    config: WebhookConfig,
    /// `config.sidecar_mode` resolved against the API server.
    mode: SidecarMode,
    client: Option<kube::Client>,
}

/// See [`super::run`].
pub(super) async fn start(
    config: WebhookConfig,
    client: Option<kube::Client>,
    shutdown: CancellationToken,
) -> Result<BoundWebhook, WebhookError> {
    let metrics = config.metrics.clone();
    // A mode this API server cannot run fails start-up (before any side effect), not every pod.
    let (mode, version) = mode::resolve(
        config.sidecar_mode,
        client.as_ref(),
        config.version_deadline,
    )
    .await?;
    // The certificate before binding, so that a bound port always serves a valid one.
    let (key, ca_bundle, source) = load_certificate(&config, client.as_ref()).await?;
    let store = CertStore::new(key);
    metrics.cert_reload(ReloadResult::Success);
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(store.clone())?));
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: config.addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        addr: config.addr,
        source,
    })?;
    tracing::info!(
        addr = %local_addr,
        mode = mode.as_str(),
        requested_mode = config.sidecar_mode.as_str(),
        server = version.as_ref().map_or("unknown", |v| v.git_version.as_str()),
        image = %config.image,
        wasmer_image = %config.wasmer_image,
        self_signed = config.self_signed.is_some(),
        "sidecar-injection webhook listening"
    );
    let certificates = source.keep_current(store, metrics, shutdown.child_token());
    let router = router(Arc::new(AppState {
        config,
        mode,
        client,
    }));
    let handle = tokio::spawn(async move {
        serve(listener, acceptor, router, shutdown).await;
        certificates
            .await
            .map_err(|e| WebhookError::Task(e.to_string()))
    });
    Ok(BoundWebhook {
        local_addr,
        ca_bundle,
        handle,
    })
}

/// Where the serving certificate comes from, and so how it is kept current.
enum CertSource {
    Files(CertFiles, Duration),
    SelfSigned(kube::Client, SelfSigned, Issued),
}

async fn load_certificate(
    config: &WebhookConfig,
    client: Option<&kube::Client>,
) -> Result<(CertifiedKey, Option<String>, CertSource), WebhookError> {
    match &config.self_signed {
        Some(self_signed) => {
            let client = client.ok_or_else(|| {
                WebhookError::Config(
                    "the self-signed certificate mode needs a Kubernetes client".into(),
                )
            })?;
            let issued = certs::reconcile(client, self_signed).await?;
            let key = tls::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())?;
            let ca = issued.ca_pem.clone();
            let source = CertSource::SelfSigned(client.clone(), self_signed.clone(), issued);
            Ok((key, Some(ca), source))
        }
        None => {
            let mut files = CertFiles::new(&config.cert_file, &config.key_file);
            let key = files
                .load_if_changed()
                .await?
                .expect("the first load always yields the key");
            Ok((
                key,
                None,
                CertSource::Files(files, config.cert_reload_interval),
            ))
        }
    }
}

impl CertSource {
    /// Reloads or renews the certificate in `store` until `shutdown`.
    fn keep_current(
        self,
        store: Arc<CertStore>,
        metrics: WebhookMetrics,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        match self {
            CertSource::Files(files, interval) => {
                tokio::spawn(tls::watch_files(files, store, interval, metrics, shutdown))
            }
            CertSource::SelfSigned(client, config, issued) => tokio::spawn(certs::maintain(
                client, config, store, issued, metrics, shutdown,
            )),
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, service, watcher) = (acceptor.clone(), service.clone(), graceful.watcher());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook connections still open after {SHUTDOWN_GRACE:?}; closing");
    }
}

async fn mutate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (response, outcome) = admit(&state, &body).await;
    state.config.metrics.admission(outcome, started.elapsed());
    response
}

async fn admit(state: &AppState, body: &[u8]) -> (Response, Outcome) {
    let req = match admission::parse(body) {
        Ok(req) => req,
        Err(e) => {
            tracing::warn!(error = %e, "invalid admission review");
            let body = format!("{e}\n");
            return (
                (StatusCode::BAD_REQUEST, body).into_response(),
                Outcome::Invalid,
            );
        }
    };
    let secrets = match (admission::plan(&req), &state.client) {
        (Plan::Inject(selection), Some(client)) => {
            match references::resolve(client, &selection).await {
                Ok(secrets) => secrets,
                Err(e) => {
                    let response = admission::denied(&req, format!("fiso: {e}"));
                    log(&req, Outcome::Denied, &response.result.message);
                    return (review_response(response), Outcome::Denied);
                }
            }
        }
        _ => References::default(),
    };
    let (response, outcome) = admission::respond(&req, &state.config, state.mode, &secrets);
    log(&req, outcome, &response.result.message);
    (review_response(response), outcome)
}

fn review_response(response: kube::core::admission::AdmissionResponse) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        admission::to_wire(&response.into_review()),
    )
        .into_response()
}

fn log(req: &AdmissionRequest<DynamicObject>, outcome: Outcome, message: &str) {
    let pod = req
        .object
        .as_ref()
        .and_then(|o| o.metadata.name.clone().or(o.metadata.generate_name.clone()))
        .unwrap_or_else(|| req.name.clone());
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match outcome {
        Outcome::Injected => {
            tracing::info!(%namespace, %pod, uid = %req.uid, "data plane injected")
        }
        Outcome::Skipped => {
            tracing::debug!(%namespace, %pod, uid = %req.uid, "pod admitted unchanged")
        }
        Outcome::Denied | Outcome::Invalid => {
            tracing::warn!(%namespace, %pod, uid = %req.uid, reason = %message, "pod refused")
        }
    }
}
