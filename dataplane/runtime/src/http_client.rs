//! The pooled HTTP clients of the data plane's hot paths: the Link's HTTP(S) upstream and the
//! Flow HTTP sink.
//!
//! Both send every request to one origin, so they use an [`OriginClient`]: for a plain
//! `http://` origin, a pool ([`plain_pool`]) of HTTP/1.1 connections each driven by the request
//! on it ([`h1`]), for `https://` hyper-util's legacy client — hyper's general pool, the one
//! reqwest wraps — used directly. Other callers (the OTLP exporter, the Temporal sink's token
//! requests) use that general client, [`HttpClient`]. Either way a request costs no URL
//! parsing or extra service layers: callers build their [`http::Uri`] once (or from prebuilt
//! parts) and send an [`http::Request`].
//!
//! TLS is rustls with the ring provider; the trust anchors are the system roots (as
//! `rustls-native-certs` finds them, unparsable ones skipped) plus an optional PEM bundle
//! (`caFile`). HTTP/1.1 and HTTP/2 are offered by ALPN; plain `http://` speaks HTTP/1.1.
//! Connections set `TCP_NODELAY` (without it a small request waits ~40 ms for the peer's
//! delayed ACK) and TCP keepalive, and an idle pooled connection is closed after 90 s.
//! The clients never follow redirects: a 3xx is handed back like any other answer.

mod h1;
mod plain_pool;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The client: cheap to clone (the pool and TLS settings are shared).
pub type HttpClient<B> = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, B>;

pub use h1::{ExchangeError, MAX_HEAD, MAX_HEADERS};
pub use plain_pool::{PoolBody, ResponseBody};

/// Why one request failed: connect, TLS, or the exchange itself. The causes are its
/// [`source`](std::error::Error::source)s, for [`failure_in_words`] and [`is_timeout`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No connection to the origin (resolving, connecting).
    #[error("cannot connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or its answer's head read.
    #[error("the HTTP exchange failed")]
    Exchange(#[source] ExchangeError),
    /// hyper-util's client failed (TLS origins).
    #[error("the HTTP client failed")]
    Client(#[source] hyper_util::client::legacy::Error),
}

/// The client of one origin (scheme, host and port): see the module's text. Cheap to clone
/// (the pool and TLS settings are shared).
pub struct OriginClient<B> {
    route: Route<B>,
    /// The origin as it was given: the scheme and authority of a request's absolute URI.
    origin: http::Uri,
}

enum Route<B> {
    Plain(Arc<plain_pool::PlainPool>),
    /// Boxed: hyper-util's client is a few hundred bytes, the pool one pointer.
    Tls(Box<HttpClient<B>>),
}

impl<B> Clone for OriginClient<B> {
    fn clone(&self) -> Self {
        let route = match &self.route {
            Route::Plain(pool) => Route::Plain(Arc::clone(pool)),
            Route::Tls(client) => Route::Tls(Box::new((**client).clone())),
        };
        OriginClient {
            route,
            origin: self.origin.clone(),
        }
    }
}

impl<B> std::fmt::Debug for OriginClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.route {
            Route::Plain(_) => "OriginClient(http)",
            Route::Tls(_) => "OriginClient(https)",
        })
    }
}

impl<B> OriginClient<B> {
    /// The URI of a request to `target` on this origin, in the form its route sends: the
    /// request line as it is over plain HTTP (origin form), absolute for hyper-util's client.
    /// Built once per request by the caller, so the client takes it as it comes.
    pub fn uri(&self, target: http::uri::PathAndQuery) -> Result<http::Uri, http::Error> {
        if let Route::Plain(_) = self.route {
            return Ok(http::Uri::from(target));
        }
        let mut parts = self.origin.clone().into_parts();
        parts.path_and_query = Some(target);
        Ok(http::Uri::from_parts(parts)?)
    }
}

impl<B: PoolBody + Unpin> OriginClient<B> {
    /// Sends `request` to the client's origin and returns the answer once its head arrived.
    /// The request's URI is best made by [`OriginClient::uri`]; an absolute one must name the
    /// client's origin (over plain HTTP only its path and query are used).
    pub async fn request(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<ResponseBody>, RequestError> {
        match &self.route {
            Route::Plain(pool) => pool.request(request).await,
            Route::Tls(client) => client
                .request(request)
                .await
                .map(|answer| answer.map(ResponseBody::unpooled))
                .map_err(RequestError::Client),
        }
    }
}

/// How long an unused pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive of every connection (probes every 15 s, 3 unanswered close it).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// The `caFile` could not be read (the I/O error's own words).
    #[error("{0}")]
    CaRead(#[source] std::io::Error),
    /// A PEM block of the `caFile` is not a certificate rustls can decode.
    #[error("invalid certificate encoding")]
    CaInvalid,
    /// The `caFile` holds no PEM certificate at all.
    #[error("no PEM certificate in the file")]
    CaEmpty,
    /// A certificate of the `caFile` is not a usable trust anchor.
    #[error("{0}")]
    CaRejected(#[source] rustls::Error),
    /// The system has no usable root certificate and reported why.
    #[error("system root certificates: {0}")]
    NativeRoots(String),
    /// rustls refused the TLS settings.
    #[error("TLS settings: {0}")]
    Tls(#[source] rustls::Error),
}

impl ClientBuildError {
    /// Whether the `caFile` is what is wrong.
    pub fn is_ca_file(&self) -> bool {
        matches!(
            self,
            ClientBuildError::CaRead(_)
                | ClientBuildError::CaInvalid
                | ClientBuildError::CaEmpty
                | ClientBuildError::CaRejected(_)
        )
    }
}

/// What differs between the clients that are built.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings<'a> {
    /// A PEM bundle trusted on top of the system roots.
    pub ca_file: Option<&'a Path>,
    /// The bound on establishing a TCP connection; none leaves it to the OS.
    pub connect_timeout: Option<Duration>,
}

impl ClientSettings<'_> {
    /// Builds the client of `origin` (its scheme and authority; the rest is ignored) whose
    /// request bodies are `B`.
    pub fn build_for<B>(&self, origin: &http::Uri) -> Result<OriginClient<B>, ClientBuildError>
    where
        B: PoolBody,
    {
        let host = origin
            .authority()
            .and_then(|authority| plain_host_header(origin.scheme(), authority));
        let route = match host {
            // The connector reads the origin's scheme, host and port only.
            Some(host) => Route::Plain(Arc::new(plain_pool::PlainPool::new(
                self.tcp_connector(),
                origin.clone(),
                host,
                POOL_IDLE_TIMEOUT,
            ))),
            None => Route::Tls(Box::new(self.build()?)),
        };
        Ok(OriginClient {
            route,
            origin: origin.clone(),
        })
    }

    /// The TCP connector of every client: see the module's text.
    fn tcp_connector(&self) -> HttpConnector {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_interval(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        tcp.set_connect_timeout(self.connect_timeout);
        tcp
    }

    /// Builds a client of any origin whose request bodies are `B`.
    pub fn build<B>(&self) -> Result<HttpClient<B>, ClientBuildError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut roots = native_roots()?;
        if let Some(path) = self.ca_file {
            for cert in read_pem_bundle(path)? {
                roots.add(cert).map_err(ClientBuildError::CaRejected)?;
            }
        }
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(ClientBuildError::Tls)?
                .with_root_certificates(roots)
                .with_no_client_auth();

        let mut tcp = self.tcp_connector();
        // The TLS connector on top takes `https://`; this one must not refuse it.
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);

        Ok(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build(connector),
        )
    }
}

/// The system's trust anchors. Like browsers and reqwest, a certificate rustls cannot parse is
/// skipped (system stores hold ancient ones); only a store with nothing usable is an error.
///
/// Read once per process: the store is a few hundred certificates parsed from disk, and a
/// reload builds clients while requests are served.
fn native_roots() -> Result<RootCertStore, ClientBuildError> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| load_native_roots().map_err(|e| e.to_string()))
        .clone()
        .map_err(ClientBuildError::NativeRoots)
}

fn load_native_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (valid, invalid) = roots.add_parsable_certificates(found.certs);
    if valid == 0 && invalid > 0 {
        let why = if found.errors.is_empty() {
            "zero valid certificates found in native root store".to_owned()
        } else {
            found
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(why);
    }
    Ok(roots)
}

/// Every certificate of the PEM bundle at `path` (other PEM blocks, such as keys, are skipped).
pub fn read_pem_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientBuildError> {
    let pem = std::fs::read(path).map_err(ClientBuildError::CaRead)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ClientBuildError::CaInvalid)?;
    if certs.is_empty() {
        return Err(ClientBuildError::CaEmpty);
    }
    Ok(certs)
}

/// Whether a failed request timed out somewhere below the caller (the connect timeout, the
/// OS's own `ETIMEDOUT`, or hyper's).
pub fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// The host and port a request to `uri` connects to (the scheme's port when none is written).
pub fn host_and_port(uri: &http::Uri) -> (&str, u16) {
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    (uri.host().unwrap_or("the target"), port)
}

/// The `Host` header of a plain-HTTP request to `authority`, exactly as hyper-util's client
/// writes it (the host, and the port unless 80), built once per pool. `None` over TLS, where
/// ALPN may choose HTTP/2 and the host travels as `:authority`: that is left to hyper-util.
fn plain_host_header(
    scheme: Option<&http::uri::Scheme>,
    authority: &http::uri::Authority,
) -> Option<http::HeaderValue> {
    if scheme != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = authority.host();
    match authority.port_u16() {
        Some(port) if port != 80 => http::HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => http::HeaderValue::from_str(host).ok(),
    }
}

/// What made a request to `host:port` fail, in words a user can act on: the DNS name that was
/// not found, the address that refused the connection, the certificate that is not trusted.
/// Only the host and port are named (a URL's user info and query may hold credentials); the
/// whole chain is [`error_chain`], for debug logs. Falls back to that chain when no cause is
/// recognised.
pub fn failure_in_words(
    error: &(dyn std::error::Error + 'static),
    (host, port): (&str, u16),
) -> String {
    let mut next = Some(error);
    while let Some(e) = next {
        // hyper-util's connector words a resolver failure "dns error" over the resolver's text.
        if e.to_string() == "dns error" {
            let why = e.source().map(ToString::to_string).unwrap_or_default();
            return format!("DNS name `{host}` not found ({why})");
        }
        let io = e.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return format!("connection refused at {host}:{port} (nothing listens there?)");
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_failure_in_words(tls, host);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return format!("{host}:{port} closed the connection before answering");
            }
        }
        if let Some(ExchangeError::Incomplete) = e.downcast_ref::<ExchangeError>() {
            return format!("{host}:{port} closed the connection before answering");
        }
        // An io::Error's `source()` skips the error it wraps (tokio-rustls wraps the handshake's
        // rustls error, the TLS connector wraps that io::Error again): go through it instead.
        next = match io.and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    error_chain(error)
}

fn tls_failure_in_words(error: &rustls::Error, host: &str) -> String {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => format!(
            "the TLS certificate of `{host}` is not trusted (unknown issuer; add its CA with `caFile`)"
        ),
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => format!("the TLS certificate of `{host}` is not valid for that name"),
        rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            format!("the TLS certificate of `{host}` has expired")
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("the TLS certificate of `{host}` is rejected: {other:?}")
        }
        other => format!("the TLS handshake with `{host}` failed: {other}"),
    }
}

/// The items of the comma-separated list header `name` (RFC 9110 §5.6.1), over all its lines
/// in order, each trimmed of spaces (empty items kept: a caller decides what they mean).
pub fn list_items<'a>(
    headers: &'a http::HeaderMap,
    name: http::header::HeaderName,
) -> impl DoubleEndedIterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// `error` and every error below it, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use http_body_util::{BodyExt, Full};

    use super::*;

    fn build_with_ca(path: &Path) -> ClientBuildError {
        ClientSettings {
            ca_file: Some(path),
            ..Default::default()
        }
        .build::<Full<Bytes>>()
        .unwrap_err()
    }

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let e = build_with_ca(Path::new("/nonexistent/ca.pem"));
        assert!(matches!(e, ClientBuildError::CaRead(_)), "{e}");
        assert!(e.to_string().contains("No such file"), "{e}");

        let mut empty = tempfile::NamedTempFile::new().unwrap();
        writeln!(empty, "not a certificate").unwrap();
        let e = build_with_ca(empty.path());
        assert_eq!(e.to_string(), "no PEM certificate in the file");

        let mut broken = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----"
        )
        .unwrap();
        let e = build_with_ca(broken.path());
        assert_eq!(e.to_string(), "invalid certificate encoding");
    }

    #[tokio::test]
    async fn plain_and_tls_origins_take_their_own_route() {
        let client = |uri: &str| {
            ClientSettings::default()
                .build_for::<Full<Bytes>>(&uri.parse().unwrap())
                .unwrap()
        };
        assert_eq!(
            format!("{:?}", client("http://example.com:8080/x")),
            "OriginClient(http)"
        );
        assert_eq!(
            format!("{:?}", client("https://example.com/")),
            "OriginClient(https)"
        );
        // Each route's request URI: the request line over plain HTTP, absolute for hyper-util.
        let target = || http::uri::PathAndQuery::from_static("/a?b=1");
        let plain = client("http://example.com:8080/x").uri(target()).unwrap();
        assert_eq!(plain, "/a?b=1");
        let tls = client("https://example.com:8443/x").uri(target()).unwrap();
        assert_eq!(tls, "https://example.com:8443/a?b=1");
    }

    #[tokio::test]
    async fn plain_http_round_trip_without_following_redirects() {
        use hyper::server::conn::http1;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                let host = req.headers()[http::header::HOST].clone();
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(302)
                        .header(http::header::LOCATION, "/elsewhere")
                        .body(Full::new(Bytes::from(host.as_bytes().to_vec())))
                        .unwrap(),
                )
            });
            http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
                .unwrap();
        });
        let uri: http::Uri = format!("http://{addr}/here?x=1").parse().unwrap();
        let client = ClientSettings::default()
            .build_for::<Full<Bytes>>(&uri)
            .unwrap();
        let answer = client
            .request(http::Request::get(uri).body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(answer.status(), 302);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, addr.to_string().as_bytes(), "Host = the authority");
    }

    /// The error of a GET of `uri` that cannot succeed.
    async fn failed_get(uri: &http::Uri) -> RequestError {
        ClientSettings::default()
            .build_for::<Full<Bytes>>(uri)
            .unwrap()
            .request(
                http::Request::get(uri.clone())
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_connection_reads_as_such_without_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let uri: http::Uri = format!("http://{addr}/p?token=secret").parse().unwrap();
        let e = failed_get(&uri).await;
        let text = error_chain(&e);
        assert!(text.contains("onnection refused"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(
            failure_in_words(&e, host_and_port(&uri)),
            format!("connection refused at {addr} (nothing listens there?)")
        );
        assert!(!is_timeout(&e));
        assert!(is_timeout(&std::io::Error::from(
            std::io::ErrorKind::TimedOut
        )));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_said_in_words() {
        // `.invalid` never resolves (RFC 6761).
        let uri: http::Uri = "http://fiso-test.invalid:8080/p".parse().unwrap();
        let e = failed_get(&uri).await;
        let text = failure_in_words(&e, host_and_port(&uri));
        assert!(
            text.starts_with("DNS name `fiso-test.invalid` not found ("),
            "{text}"
        );
    }

    #[test]
    fn a_plain_http_host_header_is_what_the_client_would_write() {
        let host = |scheme: &http::uri::Scheme, authority: &str| {
            plain_host_header(Some(scheme), &authority.parse().unwrap())
        };
        let http = &http::uri::Scheme::HTTP;
        assert_eq!(host(http, "127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(host(http, "example.com").unwrap(), "example.com");
        assert_eq!(host(http, "example.com:80").unwrap(), "example.com");
        assert_eq!(host(http, "[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(host(&http::uri::Scheme::HTTPS, "example.com:8443"), None);
    }
}
