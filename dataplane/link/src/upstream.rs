//! The HTTP(S) upstream of a target: a pooled reqwest client (rustls, system roots plus the
//! target's `caFile`, HTTP/1.1 and HTTP/2 by ALPN) addressed by host name, so `Host` and TLS
//! SNI are the configured host. Bodies stream both ways. Redirects are handed to the app, not
//! followed. `timeout` bounds the wait for the response headers of one attempt.
//!
//! Hop-by-hop headers were stripped by the route layer before auth was injected; only the
//! upstream's answer is stripped here. A request that fails because the client's body broke
//! off, or that times out while waiting for the client's body, is the client's fault
//! ([`ClientFault`]), not the target's.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use fiso_config::link::{Protocol, TargetConfig};
use http::header;
use http_body::Body as _;
use tokio::time::error::Elapsed;

use crate::client_fault::{BodyWatch, ClientFault, Watched};
use crate::forward::Forward;
use crate::response::{error, strip_hop_by_hop, ErrorCode, Request, Response};

/// Per-attempt wait for the response headers when the target sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("target has no host")]
    NoHost,
    #[error("caFile {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

#[derive(Clone)]
pub struct HttpUpstream {
    client: reqwest::Client,
    /// `{protocol}://{host}[:port]{basePath}`, without a trailing slash.
    base: Arc<str>,
    base_path_empty: bool,
    timeout: Duration,
}

impl HttpUpstream {
    pub fn new(cfg: &TargetConfig) -> Result<Self, UpstreamBuildError> {
        let host = cfg.host.as_deref().ok_or(UpstreamBuildError::NoHost)?;
        let scheme = match cfg.protocol {
            Protocol::Http => "http",
            _ => "https",
        };
        let port = cfg.port.map(|p| format!(":{p}")).unwrap_or_default();
        let base_path = cfg.base_path.as_deref().unwrap_or("").trim_end_matches('/');
        let base_path = if base_path.is_empty() || base_path.starts_with('/') {
            base_path.to_owned()
        } else {
            format!("/{base_path}")
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(path) = &cfg.ca_file {
            let ca = |message: String| UpstreamBuildError::CaFile {
                path: path.clone(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca("no PEM certificate in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| UpstreamBuildError::Client(e.to_string()))?;
        Ok(HttpUpstream {
            client,
            base: format!("{scheme}://{host}{port}{base_path}").into(),
            base_path_empty: base_path.is_empty(),
            timeout: cfg.timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }

    fn url(&self, forward: &Forward) -> String {
        let path = forward.path.encoded();
        let mut url = if path == "/" && !self.base_path_empty {
            self.base.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        if let Some(q) = &forward.query {
            url.push('?');
            url.push_str(q);
        }
        url
    }
}

/// Whether a failed attempt is the client's doing: its body broke off, or the attempt timed out
/// while waiting for the client's next bytes (the upstream was waiting for the body too).
fn client_fault<T, E>(
    body: &BodyWatch,
    sent: &Result<Result<T, E>, Elapsed>,
) -> Option<ClientFault> {
    match sent {
        Ok(Ok(_)) => None,
        Ok(Err(_)) => body.fault(),
        Err(_) => body
            .fault()
            .or_else(|| body.waiting_on_client().then_some(ClientFault::Stalled)),
    }
}

impl HttpUpstream {
    /// Sends `req` to the target and streams its answer back.
    pub async fn forward(self, req: Request) -> Response {
        let Some(forward) = req.extensions().get::<Forward>().cloned() else {
            return error(ErrorCode::NotFound, "no target for this request");
        };
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        headers.remove(header::HOST);
        let (body, client_body) = if body.size_hint().exact() == Some(0) {
            (reqwest::Body::from(Vec::new()), None)
        } else {
            let (stream, watch) = Watched::new(body.into_data_stream());
            (reqwest::Body::wrap_stream(stream), Some(watch))
        };
        let request = self
            .client
            .request(parts.method, self.url(&forward))
            .headers(headers)
            .body(body);
        let sent = tokio::time::timeout(self.timeout, request.send()).await;
        if let Some(fault) = client_body
            .as_deref()
            .and_then(|body| client_fault(body, &sent))
        {
            return fault.response();
        }
        let upstream = match sent {
            Ok(Ok(r)) => r,
            Err(_) => {
                return error(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "target `{}` did not answer within {}",
                        forward.target,
                        humantime::format_duration(self.timeout)
                    ),
                )
            }
            Ok(Err(e)) if e.is_timeout() => {
                return error(
                    ErrorCode::UpstreamTimeout,
                    format!("target `{}` timed out", forward.target),
                )
            }
            Ok(Err(e)) => {
                // Without the URL: its query string may carry credentials of the app.
                let e = e.without_url();
                let detail = std::error::Error::source(&e)
                    .map(|s| format!("{e}: {s}"))
                    .unwrap_or_else(|| e.to_string());
                return error(
                    ErrorCode::UpstreamUnreachable,
                    format!("cannot reach target `{}`: {detail}", forward.target),
                );
            }
        };
        let mut response = http::Response::builder()
            .status(upstream.status())
            .version(http::Version::HTTP_11)
            .body(())
            .expect("status from a valid response");
        *response.headers_mut() = upstream.headers().clone();
        strip_hop_by_hop(response.headers_mut());
        let (parts, ()) = response.into_parts();
        Response::from_parts(parts, Body::from_stream(upstream.bytes_stream()))
    }
}
