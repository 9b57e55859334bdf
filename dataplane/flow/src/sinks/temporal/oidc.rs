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
    use std::sync::{Arc, Mutex as StdMutex};

    use axum::http::HeaderMap;
    use axum::response::IntoResponse;

    use super::*;

    const SECRET: &str = "s3cret/+&";

    /// One request the scripted endpoint saw: Basic credentials, form body.
    #[derive(Debug, Clone)]
    struct Seen {
        basic: Option<String>,
        form: String,
    }

    /// A token endpoint on 127.0.0.1:0 that answers `answer(request number, seen)`.
    async fn endpoint(
        answer: impl Fn(usize, &Seen) -> (u16, String) + Send + Sync + 'static,
    ) -> (String, Arc<StdMutex<Vec<Seen>>>) {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let log = seen.clone();
        let answer = Arc::new(answer);
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (log, answer) = (log.clone(), answer.clone());
                async move {
                    let s = Seen {
                        basic: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        form: body,
                    };
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(s.clone());
                        log.len()
                    };
                    let (status, body) = answer(n, &s);
                    (
                        StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body,
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn source(url: &str, var: &str) -> TokenSource {
        std::env::set_var(var, SECRET);
        TokenSource::new(&OidcClientCredentials {
            token_url: url.to_owned(),
            client_id: "fiso client".into(),
            client_secret_env: Some(var.into()),
            client_secret_file: None,
            scopes: vec!["a".into(), "b".into()],
        })
        .unwrap()
    }

    const OK: &str = r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#;

    #[tokio::test]
    async fn basic_first_cached_then_reused() {
        let (url, seen) = endpoint(|_, _| (200, OK.into())).await;
        let s = source(&url, "FISO_TEST_OIDC_BASIC");
        assert_eq!(s.token().await.unwrap(), "tok-1");
        assert_eq!(s.token().await.unwrap(), "tok-1");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "one fetch: {seen:?}");
        // RFC 6749 2.3.1: id and secret form-encoded, then Basic.
        let expected =
            base64::engine::general_purpose::STANDARD.encode("fiso+client:s3cret%2F%2B%26");
        assert_eq!(
            seen[0].basic.as_deref(),
            Some(format!("Basic {expected}").as_str())
        );
        assert_eq!(seen[0].form, "grant_type=client_credentials&scope=a+b");
    }

    #[tokio::test]
    async fn a_refused_basic_login_falls_back_to_the_form_and_remembers_it() {
        let (url, seen) = endpoint(|_, s| {
            if s.basic.is_some() {
                (401, r#"{"error":"invalid_client"}"#.into())
            } else {
                (200, r#"{"access_token":"tok-2"}"#.into())
            }
        })
        .await;
        let s = source(&url, "FISO_TEST_OIDC_FORM");
        assert_eq!(s.token().await.unwrap(), "tok-2");
        s.invalidate("tok-2").await;
        assert_eq!(s.token().await.unwrap(), "tok-2");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[1].basic.is_none() && seen[2].basic.is_none());
        assert!(
            seen[1].form.contains("client_id=fiso+client"),
            "{:?}",
            seen[1]
        );
        assert!(
            seen[1].form.contains("client_secret=s3cret%2F%2B%26"),
            "{:?}",
            seen[1]
        );
    }

    #[tokio::test]
    async fn endpoint_errors_are_clear_and_never_hold_the_secret() {
        let (url, _) = endpoint(|_, _| {
            (
                400,
                format!(
                    r#"{{"error":"invalid_client","error_description":"secret {SECRET} is wrong"}}"#
                ),
            )
        })
        .await;
        let e = source(&url, "FISO_TEST_OIDC_400")
            .token()
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains(SECRET), "{text}");
        assert_eq!(
            text,
            format!("token endpoint {url} answered 400 Bad Request: invalid_client: secret <redacted> is wrong")
        );
        assert!(!e.is_transient());

        let (url, _) = endpoint(|_, _| (503, "busy".into())).await;
        let e = source(&url, "FISO_TEST_OIDC_503")
            .token()
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("token endpoint {url} answered 503 Service Unavailable")
        );
        assert!(e.is_transient());

        let (url, _) = endpoint(|_, _| (200, "<html>login</html>".into())).await;
        let e = source(&url, "FISO_TEST_OIDC_HTML")
            .token()
            .await
            .unwrap_err();
        assert!(e.to_string().ends_with("not a JSON token answer"), "{e}");
        assert!(!e.is_transient());

        let (url, _) = endpoint(|_, _| (200, r#"{"token_type":"Bearer"}"#.into())).await;
        let e = source(&url, "FISO_TEST_OIDC_NOTOKEN")
            .token()
            .await
            .unwrap_err();
        assert!(e.to_string().ends_with("no `access_token`"), "{e}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = source(&format!("http://{closed}/token"), "FISO_TEST_OIDC_DOWN")
            .token()
            .await
            .unwrap_err();
        assert!(matches!(e, TokenError::Unreachable { .. }), "{e}");
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn the_answer_is_read_up_to_its_bound() {
        // A valid answer of exactly MAX_RESPONSE_BYTES, then one byte more.
        let sized = |n: usize| {
            let head = r#"{"access_token":"tok-big","pad":""#;
            let tail = r#""}"#;
            format!("{head}{}{tail}", "x".repeat(n - head.len() - tail.len()))
        };
        let (url, _) = endpoint(move |_, _| (200, sized(MAX_RESPONSE_BYTES))).await;
        assert_eq!(
            source(&url, "FISO_TEST_OIDC_AT").token().await.unwrap(),
            "tok-big"
        );
        let (url, _) = endpoint(move |_, _| (200, sized(MAX_RESPONSE_BYTES + 1))).await;
        let e = source(&url, "FISO_TEST_OIDC_OVER")
            .token()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn a_missing_or_empty_secret_fails_the_build() {
        let cfg = |env: Option<&str>, file: Option<&str>| OidcClientCredentials {
            token_url: "https://idp/token".into(),
            client_id: "c".into(),
            client_secret_env: env.map(Into::into),
            client_secret_file: file.map(Into::into),
            scopes: vec![],
        };
        let err = |c| TokenSource::new(&c).unwrap_err().to_string();
        assert_eq!(
            err(cfg(Some("FISO_TEST_OIDC_UNSET_VAR"), None)),
            "sink.config.auth: oidc: `clientSecretEnv`: $FISO_TEST_OIDC_UNSET_VAR is not set"
        );
        assert!(err(cfg(None, Some("/nonexistent/secret")))
            .contains("`clientSecretFile`: /nonexistent/secret"));
        assert!(err(cfg(None, None)).contains("exactly one"));
        std::env::set_var("FISO_TEST_OIDC_EMPTY", " \n");
        assert!(err(cfg(Some("FISO_TEST_OIDC_EMPTY"), None)).contains("empty"));
    }

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
