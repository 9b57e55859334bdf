//! A secret in HashiCorp Vault / OpenBao KV v2, over plain HTTP (reqwest).
//!
//! `GET {addr}/v1/{mount}/data/{path}` with `X-Vault-Token`; the value is `.data.data.{field}`.
//! Login: token auth (`VAULT_TOKEN_FILE`, re-read when it changes, else `VAULT_TOKEN`), renewed
//! with `renew-self` at ~2/3 of its TTL when renewable; or Kubernetes auth when `vaultRef.role`
//! is set (`POST /v1/auth/{mount}/login` with the service-account JWT), repeated at ~2/3 of the
//! lease. A 403 on a read triggers one re-login (a rotated token file, a fresh Kubernetes login)
//! before it counts as a failure.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fiso_config::link::VaultRef;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use super::{AuthError, Shared};

pub(super) const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_KV_MOUNT: &str = "secret";
const DEFAULT_K8S_MOUNT: &str = "kubernetes";
const DEFAULT_SA_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay after a failed renewal when the lease end is unknown or near.
const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where Vault is and how to log in.
#[derive(Clone, Default)]
pub struct VaultSettings {
    /// `VAULT_ADDR`, e.g. `https://vault.vault:8200`.
    pub addr: Option<String>,
    /// `VAULT_TOKEN`.
    pub token: Option<String>,
    /// `VAULT_TOKEN_FILE`: a file holding the token; wins over `token`, re-read when it changes.
    pub token_file: Option<PathBuf>,
    /// `VAULT_CACERT`: PEM bundle trusted besides the system roots.
    pub ca_cert: Option<PathBuf>,
    /// `VAULT_K8S_AUTH_MOUNT` (default `kubernetes`).
    pub kubernetes_mount: Option<String>,
    /// `VAULT_K8S_TOKEN_PATH` (default `/var/run/secrets/kubernetes.io/serviceaccount/token`).
    pub service_account_token_path: Option<PathBuf>,
}

impl fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca_cert", &self.ca_cert)
            .field("kubernetes_mount", &self.kubernetes_mount)
            .field(
                "service_account_token_path",
                &self.service_account_token_path,
            )
            .finish()
    }
}

impl VaultSettings {
    /// From `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_TOKEN_FILE`, `VAULT_CACERT`,
    /// `VAULT_K8S_AUTH_MOUNT` and `VAULT_K8S_TOKEN_PATH`; empty variables count as unset.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        VaultSettings {
            addr: var("VAULT_ADDR"),
            token: var("VAULT_TOKEN"),
            token_file: var("VAULT_TOKEN_FILE").map(PathBuf::from),
            ca_cert: var("VAULT_CACERT").map(PathBuf::from),
            kubernetes_mount: var("VAULT_K8S_AUTH_MOUNT"),
            service_account_token_path: var("VAULT_K8S_TOKEN_PATH").map(PathBuf::from),
        }
    }
}

enum Login {
    Token {
        file: Option<PathBuf>,
        env: Option<String>,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt_path: PathBuf,
    },
}

/// A logged-in client for one secret.
pub(super) struct Vault {
    client: reqwest::Client,
    addr: String,
    mount: String,
    path: String,
    field: String,
    login: Login,
    token: String,
    /// When to renew the token / log in again; `None`: never (e.g. a root token).
    renew_at: Option<Instant>,
    /// When the current token expires, if it does.
    expires_at: Option<Instant>,
    /// Token auth: renew-self works.
    renewable: bool,
}

fn vault_err(msg: String) -> AuthError {
    AuthError::Vault(msg)
}

/// `reqwest` errors with their causes (they name the URL, never headers or bodies).
fn http_err(what: &str, e: &reqwest::Error) -> AuthError {
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    vault_err(msg)
}

/// Vault's `{"errors": [...]}`, shortened (they are messages like "permission denied").
fn vault_errors(body: &Value) -> String {
    let errors: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut text = errors.join("; ");
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// 2/3 of a lease from now.
fn two_thirds(secs: u64) -> Instant {
    Instant::now() + Duration::from_millis(secs.saturating_mul(2000) / 3)
}

impl Vault {
    /// Logs in and reads the secret once.
    pub(super) async fn start(
        vault_ref: &VaultRef,
        settings: &VaultSettings,
    ) -> Result<(Vault, String), AuthError> {
        let mount = vault_ref
            .mount
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_KV_MOUNT)
            .trim_matches('/')
            .to_owned();
        let path = vault_ref.path.trim_matches('/').to_owned();
        let Some(addr) = settings.addr.as_deref() else {
            return Err(vault_err(format!(
                "VAULT_ADDR is not set (needed for vaultRef {mount}/{path})"
            )));
        };
        let addr = addr.trim_end_matches('/').to_owned();
        let mut client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(ca) = &settings.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| vault_err(format!("reading VAULT_CACERT {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| vault_err(format!("VAULT_CACERT {}: {e}", ca.display())))?;
            for cert in certs {
                client = client.add_root_certificate(cert);
            }
        }
        let client = client
            .build()
            .map_err(|e| http_err("building the Vault client", &e))?;
        let login = match vault_ref.role.as_deref().filter(|r| !r.is_empty()) {
            Some(role) => Login::Kubernetes {
                mount: settings
                    .kubernetes_mount
                    .as_deref()
                    .unwrap_or(DEFAULT_K8S_MOUNT)
                    .trim_matches('/')
                    .to_owned(),
                role: role.to_owned(),
                jwt_path: settings
                    .service_account_token_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_SA_TOKEN_PATH)),
            },
            None => {
                if settings.token_file.is_none() && settings.token.is_none() {
                    return Err(vault_err(format!(
                        "no Vault token for vaultRef {mount}/{path}: set VAULT_TOKEN or \
                         VAULT_TOKEN_FILE, or vaultRef.role for Kubernetes auth"
                    )));
                }
                Login::Token {
                    file: settings.token_file.clone(),
                    env: settings.token.clone(),
                }
            }
        };
        let mut vault = Vault {
            client,
            addr,
            mount,
            path,
            field: vault_ref.field.clone(),
            login,
            token: String::new(),
            renew_at: None,
            expires_at: None,
            renewable: false,
        };
        vault.login().await?;
        let value = vault.read_once().await?;
        Ok((vault, value))
    }

    /// Names the secret in messages: address, mount, path and field.
    pub(super) fn describe(&self) -> String {
        format!(
            "Vault {} {}/{} field {}",
            self.addr, self.mount, self.path, self.field
        )
    }

    /// The current token from its source (token auth) or a fresh Kubernetes login.
    async fn login(&mut self) -> Result<(), AuthError> {
        match &self.login {
            Login::Token { file, env } => {
                let token = match file {
                    Some(file) => read_token_file(file).await?,
                    None => env.clone().unwrap_or_default(),
                };
                self.token = token;
                self.lookup_self().await;
                Ok(())
            }
            Login::Kubernetes {
                mount,
                role,
                jwt_path,
            } => {
                let jwt = tokio::fs::read_to_string(jwt_path).await.map_err(|e| {
                    vault_err(format!(
                        "reading the service account token {} for Kubernetes auth: {e}",
                        jwt_path.display()
                    ))
                })?;
                let what = format!(
                    "Kubernetes auth login at {}/v1/auth/{mount}/login (role {role})",
                    self.addr
                );
                let response = self
                    .client
                    .post(format!("{}/v1/auth/{mount}/login", self.addr))
                    .json(&serde_json::json!({ "role": role, "jwt": jwt.trim() }))
                    .send()
                    .await
                    .map_err(|e| http_err(&what, &e))?;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    return Err(vault_err(format!(
                        "{what} failed: HTTP {status}{}",
                        vault_errors(&body)
                    )));
                }
                let auth = &body["auth"];
                let Some(token) = auth["client_token"].as_str() else {
                    return Err(vault_err(format!(
                        "{what}: the answer has no auth.client_token"
                    )));
                };
                self.token = token.to_owned();
                self.renewable = false;
                self.set_lease(auth["lease_duration"].as_u64().unwrap_or(0));
                Ok(())
            }
        }
    }

    /// Token auth: learn whether and when to renew. A token that may not look itself up is
    /// used as is (the read then tells whether it works).
    async fn lookup_self(&mut self) {
        self.renewable = false;
        self.renew_at = None;
        self.expires_at = None;
        let response = self
            .client
            .get(format!("{}/v1/auth/token/lookup-self", self.addr))
            .header("X-Vault-Token", &self.token)
            .send()
            .await;
        let body: Value = match response {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            Ok(r) => {
                tracing::debug!(addr = %self.addr, status = %r.status(), "Vault token lookup-self refused; not renewing");
                return;
            }
            Err(e) => {
                tracing::debug!(addr = %self.addr, error = %e, "Vault token lookup-self failed; not renewing");
                return;
            }
        };
        let ttl = body["data"]["ttl"].as_u64().unwrap_or(0);
        self.renewable = body["data"]["renewable"].as_bool().unwrap_or(false);
        if ttl > 0 {
            self.expires_at = Some(Instant::now() + Duration::from_secs(ttl));
            if self.renewable {
                self.renew_at = Some(two_thirds(ttl));
            }
        }
    }

    fn set_lease(&mut self, secs: u64) {
        if secs == 0 {
            self.renew_at = None;
            self.expires_at = None;
        } else {
            self.renew_at = Some(two_thirds(secs));
            self.expires_at = Some(Instant::now() + Duration::from_secs(secs));
        }
    }

    pub(super) fn renew_at(&self) -> Option<Instant> {
        self.renew_at
    }

    /// Keeps the login alive: a changed token file is picked up, a renewable token renewed, a
    /// Kubernetes login repeated. On failure the next attempt is scheduled before expiry.
    pub(super) async fn refresh_login(&mut self) -> Result<(), AuthError> {
        let result = self.try_refresh_login().await;
        if result.is_err() {
            let now = Instant::now();
            // Soon when the lease is (nearly) over or unknown: the credential is useless then.
            let delay = match self.expires_at {
                Some(end) => end
                    .checked_duration_since(now)
                    .map_or(MIN_RETRY, |left| left / 3),
                None => MAX_RETRY,
            }
            .clamp(MIN_RETRY, MAX_RETRY);
            self.renew_at = Some(now + delay);
        }
        result
    }

    async fn try_refresh_login(&mut self) -> Result<(), AuthError> {
        match &self.login {
            Login::Kubernetes { .. } => self.login().await,
            Login::Token { file, .. } => {
                if let Some(file) = file {
                    if read_token_file(file).await? != self.token {
                        tracing::info!(file = %file.display(), "Vault token file changed");
                        return self.login().await;
                    }
                }
                if !self.renewable {
                    self.renew_at = None;
                    return Ok(());
                }
                let what = format!("renewing the Vault token at {}", self.addr);
                let response = self
                    .client
                    .post(format!("{}/v1/auth/token/renew-self", self.addr))
                    .header("X-Vault-Token", &self.token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .map_err(|e| http_err(&what, &e))?;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    return Err(vault_err(format!(
                        "{what} failed: HTTP {status}{}",
                        vault_errors(&body)
                    )));
                }
                let lease = body["auth"]["lease_duration"].as_u64().unwrap_or(0);
                self.renewable = body["auth"]["renewable"].as_bool().unwrap_or(false);
                self.set_lease(lease);
                if !self.renewable {
                    self.renew_at = None;
                }
                tracing::debug!(addr = %self.addr, lease_secs = lease, "Vault token renewed");
                Ok(())
            }
        }
    }

    /// Reads the secret; on a 403 logs in again once (the token may have been rotated or
    /// expired) and retries.
    pub(super) async fn read(&mut self) -> Result<String, AuthError> {
        match self.read_once().await {
            Err(ReadError::Forbidden(first)) => {
                if let Err(login) = self.login().await {
                    return Err(AuthError::Vault(format!(
                        "{}; logging in again failed: {login}",
                        first
                    )));
                }
                self.read_once().await.map_err(AuthError::from)
            }
            other => other.map_err(AuthError::from),
        }
    }

    async fn read_once(&self) -> Result<String, ReadError> {
        let (addr, mount, path, field) = (&self.addr, &self.mount, &self.path, &self.field);
        let url = format!("{addr}/v1/{mount}/data/{path}");
        let what = format!("reading {mount}/{path} from Vault at {addr}");
        let response = self
            .client
            .get(&url)
            .header("X-Vault-Token", &self.token)
            .send()
            .await
            .map_err(|e| http_err(&what, &e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            s if s.is_success() => {}
            StatusCode::FORBIDDEN => {
                return Err(ReadError::Forbidden(vault_err(format!(
                    "{what}: permission denied (HTTP 403): the token has expired or no policy \
                     grants read on {mount}/data/{path}"
                ))));
            }
            StatusCode::NOT_FOUND => {
                return Err(vault_err(format!(
                    "{what}: not found (HTTP 404): no KV v2 secret {path} under mount {mount} \
                     (check vaultRef.mount and vaultRef.path)"
                ))
                .into());
            }
            s => {
                return Err(
                    vault_err(format!("{what} failed: HTTP {s}{}", vault_errors(&body))).into(),
                );
            }
        }
        let data = &body["data"]["data"];
        if !data.is_object() {
            return Err(vault_err(format!(
                "{what}: the secret has no current version (deleted or destroyed?)"
            ))
            .into());
        }
        match &data[field.as_str()] {
            Value::String(s) => Ok(s.clone()),
            Value::Null => {
                let fields: Vec<&str> = data
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                Err(vault_err(format!(
                    "{what}: field {field} not found in {mount}/{path} (fields: {})",
                    fields.join(", ")
                ))
                .into())
            }
            _ => Err(vault_err(format!(
                "{what}: field {field} of {mount}/{path} is not a string"
            ))
            .into()),
        }
    }
}

enum ReadError {
    Forbidden(AuthError),
    Other(AuthError),
}

impl From<AuthError> for ReadError {
    fn from(e: AuthError) -> Self {
        ReadError::Other(e)
    }
}

impl From<ReadError> for AuthError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Forbidden(e) | ReadError::Other(e) => e,
        }
    }
}

async fn read_token_file(file: &Path) -> Result<String, AuthError> {
    let token = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| vault_err(format!("reading VAULT_TOKEN_FILE {}: {e}", file.display())))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(vault_err(format!(
            "VAULT_TOKEN_FILE {} is empty",
            file.display()
        )));
    }
    Ok(token.to_owned())
}

/// Re-reads the secret every `interval` and keeps the login alive until cancelled.
pub(super) async fn run(shared: Arc<Shared>, mut vault: Vault, interval: Duration) {
    let from = vault.describe();
    let mut next_read = Instant::now() + interval;
    loop {
        let wake = vault.renew_at().map_or(next_read, |r| r.min(next_read));
        tokio::time::sleep_until(wake).await;
        if vault.renew_at().is_some_and(|r| r <= Instant::now()) {
            match vault.refresh_login().await {
                Ok(()) => (shared.on_refresh)("success"),
                Err(e) => shared.failed(&e),
            }
        }
        if next_read <= Instant::now() {
            next_read = Instant::now() + interval;
            let value = vault.read().await.map(String::into_bytes);
            shared.refreshed(&from, value);
        }
    }
}
