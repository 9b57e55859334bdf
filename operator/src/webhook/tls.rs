//! TLS for the webhook: rustls with the ring provider, and a certificate that can be replaced
//! while serving — by [`watch_files`] when cert-manager (or anyone) rewrites the files, or by
//! the self-signed mode when it renews.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fiso_runtime::metrics::ReloadResult;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use super::metrics::WebhookMetrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate found in the certificate data")]
    NoCertificate,
    #[error("invalid PEM certificate: {0}")]
    BadCertificate(String),
    #[error("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider of every TLS object here: ring (no aws-lc, no cmake).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// PEM certificates (leaf first) from `pem`.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A certificate chain and its private key (both PEM), checked to belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certs(cert_pem)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey(e.to_string()))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Mismatch(e.to_string()))
}

/// The serving certificate, swappable while connections are being accepted.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// New handshakes use `key`; established connections keep theirs.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// TLS 1.2/1.3, no client certificates, HTTP/1.1 by ALPN, certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate / key file pair and the contents last loaded from it.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    seen: Option<(Vec<u8>, Vec<u8>)>,
}

impl CertFiles {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        CertFiles {
            cert: cert.into(),
            key: key.into(),
            seen: None,
        }
    }

    /// The key pair if the files changed since the last call (the first call always loads).
    /// Changed contents that do not load are an error once; the previous key keeps serving.
    pub async fn load_if_changed(&mut self) -> Result<Option<CertifiedKey>, TlsError> {
        let cert = read(&self.cert).await?;
        let key = read(&self.key).await?;
        if self
            .seen
            .as_ref()
            .is_some_and(|(c, k)| *c == cert && *k == key)
        {
            return Ok(None);
        }
        let loaded = certified_key(&cert, &key);
        self.seen = Some((cert, key));
        loaded.map(Some)
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Re-reads `files` every `interval` until `shutdown`, swapping changed certificates into
/// `store`. Kubelet updates a Secret volume by an atomic symlink swap, so both files change
/// together; a half-written pair fails to load and is retried when the next write lands.
pub async fn watch_files(
    mut files: CertFiles,
    store: Arc<CertStore>,
    interval: Duration,
    metrics: WebhookMetrics,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match files.load_if_changed().await {
            Ok(None) => {}
            Ok(Some(key)) => {
                store.replace(key);
                metrics.cert_reload(ReloadResult::Success);
                tracing::info!(cert = %files.cert.display(), "webhook serving certificate reloaded");
            }
            Err(e) => {
                metrics.cert_reload(ReloadResult::Failure);
                tracing::warn!(error = %e, "webhook certificate files changed but do not load; the previous certificate keeps serving");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs;

    #[test]
    fn loads_a_matching_pair_and_rejects_mismatches() {
        let a = certs::issue(&["a.example".into()], std::time::SystemTime::now(), None).unwrap();
        let b = certs::issue(&["b.example".into()], std::time::SystemTime::now(), None).unwrap();
        certified_key(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        assert!(matches!(
            certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes()),
            Err(TlsError::Mismatch(_))
        ));
        assert!(matches!(
            certified_key(b"", a.key_pem.as_bytes()),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            certified_key(a.cert_pem.as_bytes(), b"nope"),
            Err(TlsError::BadKey(_))
        ));
    }

    #[tokio::test]
    async fn files_reload_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let a = certs::issue(&["a.example".into()], std::time::SystemTime::now(), None).unwrap();
        std::fs::write(&cert, &a.cert_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        let mut files = CertFiles::new(&cert, &key);
        assert!(files.load_if_changed().await.unwrap().is_some());
        assert!(files.load_if_changed().await.unwrap().is_none());

        let b = certs::issue(&["b.example".into()], std::time::SystemTime::now(), None).unwrap();
        std::fs::write(&cert, &b.cert_pem).unwrap();
        assert!(
            files.load_if_changed().await.is_err(),
            "new cert with the old key"
        );
        assert!(
            files.load_if_changed().await.unwrap().is_none(),
            "reported once"
        );
        std::fs::write(&key, &b.key_pem).unwrap();
        assert!(files.load_if_changed().await.unwrap().is_some());
    }
}
