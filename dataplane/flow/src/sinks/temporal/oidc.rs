//! `auth.oidc`: the OAuth2 client-credentials grant (RFC 6749 §4.4) that gets the Temporal
//! sink its bearer token.
//!
//! * The request is `POST tokenURL` with the form `grant_type=client_credentials` (and `scope`,
//!   space-separated). The client authenticates like Go's `golang.org/x/oauth2/clientcredentials`
//!   does by default, which is what upstream users' identity providers were set up for: HTTP
//!   Basic first (RFC 6749 §2.3.1, id and secret form-encoded), and if the endpoint refuses
//!   that with a 4xx, `client_id` / `client_secret` in the form; the style that worked is kept.
//! * The token is cached and shared by every delivery; one fetch at a time (callers wait for
//!   it). It is refreshed before it expires, by the smaller of 60 s or a tenth of its lifetime;
//!   a token without `expires_in` is kept until Temporal answers `UNAUTHENTICATED`
//!   ([`TokenSource::invalidate`]).
//! * It goes over the data plane's shared HTTP client (hyper-util over rustls, system roots): no
//!   OAuth2 crate, whose HTTP stack would be a second one for one POST.
//! * Bounds: the whole exchange has [`FETCH_TIMEOUT`]; the answer is read up to
//!   [`MAX_RESPONSE_BYTES`]; an endpoint's `error_description` is cut to
//!   [`MAX_DESCRIPTION_CHARS`].
//! * Errors name the endpoint, the status and the RFC 6749 §5.2 `error` / `error_description`;
//!   they never hold the client secret (also scrubbed from the endpoint's words) nor a token.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use fiso_config::flow::OidcClientCredentials;
use fiso_runtime::http_client::{self, ClientSettings, HttpClient};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::error::TemporalBuildError;

/// Time allowed for one token request, connect to last byte.
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token endpoint answer read; a real one is a few KiB at most (a JWT).
pub(super) const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How much of an endpoint's `error_description` goes into an error.
pub(super) const MAX_DESCRIPTION_CHARS: usize = 200;
/// A token is refreshed this long before it expires, at most.
const REFRESH_MARGIN_MAX: Duration = Duration::from_secs(60);

/// Why no token could be had. Never holds the client secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum TokenError {
    /// No answer: connect, TLS, timeout, or the connection broke.
    #[error("token endpoint {url} is not reachable: {message}")]
    Unreachable { url: String, message: String },
    /// An error status, with the RFC 6749 §5.2 fields when the endpoint sent them.
    #[error("token endpoint {url} answered {status}{}", detail(.error, .description))]
    Status {
        url: String,
        status: StatusCode,
        error: Option<String>,
        description: Option<String>,
    },
    /// A 2xx that is not a usable token answer (not JSON, no `access_token`, too large, ...).
    #[error("token endpoint {url} sent an unusable answer: {message}")]
    Invalid { url: String, message: String },
}

fn detail(error: &Option<String>, description: &Option<String>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(": {e}: {d}"),
        (Some(e), None) => format!(": {e}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    }
}

impl TokenError {
    /// Whether another try could succeed (the endpoint is down or busy), as opposed to a
    /// refusal or a misconfiguration that will not change by itself.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            TokenError::Unreachable { .. } => true,
            TokenError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            TokenError::Invalid { .. } => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStyle {
    /// Not known yet: Basic first, then the form.
    Detect,
    Basic,
    Form,
}

struct Cached {
    token: String,
    /// When to fetch a new one; `None`: until Temporal refuses it.
    refresh_at: Option<Instant>,
}

struct State {
    style: AuthStyle,
    cached: Option<Cached>,
}

/// Fetches, caches and refreshes the access token of one sink.
pub(super) struct TokenSource {
    client: HttpClient<Full<Bytes>>,
    uri: Uri,
    client_id: String,
    /// Never logged nor put in errors.
    secret: String,
    scope: Option<String>,
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.uri)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
}

/// Seconds, as a number or (some providers) a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(f64),
    Text(String),
}

impl ExpiresIn {
    fn seconds(&self) -> Option<u64> {
        match self {
            ExpiresIn::Number(n) if n.is_finite() && *n > 0.0 => Some(*n as u64),
            ExpiresIn::Text(t) => t.trim().parse().ok().filter(|n| *n > 0),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenSource {
    /// Reads the client secret (from its env var or file) and prepares the client; fetches
    /// nothing yet.
    pub(super) fn new(cfg: &OidcClientCredentials) -> Result<Self, TemporalBuildError> {
        let auth = |m: String| TemporalBuildError::Auth(format!("oidc: {m}"));
        let uri: Uri = cfg
            .token_url
            .parse()
            .ok()
            .filter(|u: &Uri| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            })
            .ok_or_else(|| {
                auth(format!(
                    "`tokenURL` `{}` is not an http(s) URL",
                    cfg.token_url
                ))
            })?;
        let secret = match (&cfg.client_secret_env, &cfg.client_secret_file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| auth(format!("`clientSecretEnv`: ${var} is not set")))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| auth(format!("`clientSecretFile`: {path}: {e}")))?,
            _ => {
                return Err(auth(
                    "set exactly one of `clientSecretEnv` or `clientSecretFile`".into(),
                ))
            }
        };
        let secret = secret.trim().to_owned();
        if secret.is_empty() {
            return Err(auth("the client secret is empty".into()));
        }
        let client = ClientSettings {
            ca_file: None,
            connect_timeout: Some(FETCH_TIMEOUT),
        }
        .build()
        .map_err(|e| auth(format!("HTTP client: {e}")))?;
        let scope = (!cfg.scopes.is_empty()).then(|| cfg.scopes.join(" "));
        Ok(TokenSource {
            client,
            uri,
            client_id: cfg.client_id.clone(),
            secret,
            scope,
            state: Mutex::new(State {
                style: AuthStyle::Detect,
                cached: None,
            }),
        })
    }

    /// The current token: the cached one while it is fresh, else a new one.
    pub(super) async fn token(&self) -> Result<String, TokenError> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.cached {
            if c.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(c.token.clone());
            }
        }
        let (token, lifetime) = self.fetch(&mut state.style).await?;
        let refresh_at = lifetime.map(|l| Instant::now() + l - (l / 10).min(REFRESH_MARGIN_MAX));
        tracing::debug!(token_url = %self.uri, expires_in = ?lifetime, "fetched a Temporal access token");
        state.cached = Some(Cached {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }

    /// Temporal refused `token`: forget it so the next [`TokenSource::token`] fetches a new
    /// one (unless another caller already did).
    pub(super) async fn invalidate(&self, token: &str) {
        let mut state = self.state.lock().await;
        if state.cached.as_ref().is_some_and(|c| c.token == token) {
            state.cached = None;
        }
    }

    async fn fetch(&self, style: &mut AuthStyle) -> Result<(String, Option<Duration>), TokenError> {
        let first = if *style == AuthStyle::Form {
            AuthStyle::Form
        } else {
            AuthStyle::Basic
        };
        let result = self.fetch_with(first).await;
        let result = match result {
            Err(TokenError::Status { status, .. })
                if *style == AuthStyle::Detect && status.is_client_error() =>
            {
                let second = self.fetch_with(AuthStyle::Form).await;
                if second.is_ok() {
                    *style = AuthStyle::Form;
                }
                return second;
            }
            other => other,
        };
        if result.is_ok() {
            *style = first;
        }
        result
    }

    async fn fetch_with(&self, style: AuthStyle) -> Result<(String, Option<Duration>), TokenError> {
        let url = self.uri.to_string();
        // The serializer is not `Send`: done with it before any await.
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.scope {
                form.append_pair("scope", scope);
            }
            if style == AuthStyle::Form {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", &self.secret);
            }
            form.finish()
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        if style != AuthStyle::Form {
            let encode = |s: &str| -> String {
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
            };
            let pair = format!("{}:{}", encode(&self.client_id), encode(&self.secret));
            let basic = base64::engine::general_purpose::STANDARD.encode(pair);
            request = request.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        let request =
            request
                .body(Full::new(Bytes::from(form)))
                .map_err(|e| TokenError::Invalid {
                    url: url.clone(),
                    message: format!("request: {e}"),
                })?;
        let unreachable = |message: String| TokenError::Unreachable {
            url: url.clone(),
            message,
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(http_client::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes());
            Ok::<_, TokenError>((status, body))
        };
        let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {FETCH_TIMEOUT:?}")))??;
        let body = match body {
            Ok(b) => b,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(TokenError::Invalid {
                    url,
                    message: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                })
            }
            Err(e) => return Err(unreachable(format!("reading the answer: {e}"))),
        };
        if !status.is_success() {
            let answer: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
            let (error, description) = answer
                .map(|a| (a.error, a.error_description))
                .unwrap_or_default();
            return Err(TokenError::Status {
                url,
                status,
                error: error.map(|e| self.scrub(&e)),
                description: description.map(|d| self.scrub(&d)),
            });
        }
        let invalid = |message: &str| TokenError::Invalid {
            url: url.clone(),
            message: message.to_owned(),
        };
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|_| invalid("not a JSON token answer"))?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no `access_token`"))?;
        if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(invalid("the `access_token` is not a valid header value"));
        }
        let lifetime = answer
            .expires_in
            .and_then(|e| e.seconds())
            .map(Duration::from_secs);
        Ok((token, lifetime))
    }

    /// An endpoint's own words, cut short and without the client secret (some echo the request).
    fn scrub(&self, text: &str) -> String {
        let text: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_DESCRIPTION_CHARS)
            .collect();
        text.replace(&self.secret, "<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_is_a_tenth_of_the_lifetime_at_most_a_minute() {
        let margin = |l: u64| (Duration::from_secs(l) / 10).min(REFRESH_MARGIN_MAX);
        assert_eq!(margin(2), Duration::from_millis(200));
        assert_eq!(margin(300), Duration::from_secs(30));
        assert_eq!(margin(3600), Duration::from_secs(60));
    }

    #[test]
    fn expires_in_as_number_or_string() {
        let parse = |j: &str| {
            serde_json::from_str::<TokenAnswer>(j)
                .unwrap()
                .expires_in
                .and_then(|e| e.seconds())
        };
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":3600}"#),
            Some(3600)
        );
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":"3599"}"#),
            Some(3599)
        );
        assert_eq!(parse(r#"{"access_token":"t"}"#), None);
        assert_eq!(parse(r#"{"access_token":"t","expires_in":0}"#), None);
    }

    #[test]
    fn error_text_names_the_rfc_fields() {
        let e = TokenError::Status {
            url: "http://idp/token".into(),
            status: StatusCode::UNAUTHORIZED,
            error: Some("invalid_client".into()),
            description: Some("bad secret".into()),
        };
        assert_eq!(
            e.to_string(),
            "token endpoint http://idp/token answered 401 Unauthorized: invalid_client: bad secret"
        );
        assert!(!e.is_transient());
        let e = TokenError::Status {
            url: "u".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: None,
            description: None,
        };
        assert!(e.is_transient());
    }
}
