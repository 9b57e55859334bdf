//! Auth injection: the credential each target adds to its upstream requests.
//!
//! [`Credentials::start`] turns a target's [`AuthConfig`] into a header kept current in the
//! background: `bearer` → `Authorization: Bearer <secret>`, `apikey` → `<header>: <secret>`
//! (header default `X-API-Key`), `basic` → `Authorization: Basic base64(<user:password>)`.
//!
//! Sources:
//! * a file ([`file`]): watched through its parent directory (so kubelet's `..data` symlink swap
//!   and editors' rename-over are seen) and re-read on change, never per request;
//! * an environment variable: read once;
//! * Vault / OpenBao KV v2 ([`vault`]): re-read every `refreshInterval` (default 5m), with the
//!   token renewed, or the Kubernetes-auth login repeated, at ~2/3 of its lease.
//!
//! A failed refresh keeps the last good value. Secret values never appear in logs, errors or
//! metrics: errors name the source (file path, variable name, Vault address and path) only.

mod file;
mod vault;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use fiso_config::link::{AuthConfig, AuthType, DEFAULT_APIKEY_HEADER};
use http::{header::AUTHORIZATION, HeaderName, HeaderValue};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use vault::VaultSettings;

/// Called with `"success"` or `"failure"` for every background refresh (metric
/// `fiso_link_auth_refresh_total{target,status}`).
pub type OnRefresh = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Why a credential could not be set up or refreshed. Messages name the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `type` needs a secret but neither `secretRef` nor `vaultRef` is usable.
    #[error("invalid auth config: {0}")]
    Config(String),
    #[error("reading secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watching secret file {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("environment variable {var} (auth secretRef.envVar) is not set")]
    EnvUnset { var: String },
    #[error("the secret from {from} is empty")]
    Empty { from: String },
    #[error(
        "the secret from {from} is not a valid HTTP header value (control characters other \
         than a trailing newline?)"
    )]
    InvalidValue { from: String },
    #[error("the basic-auth secret from {from} must have the form `user:password`")]
    BasicFormat { from: String },
    /// Vault / OpenBao: address, login, HTTP status, path or field (already worded).
    #[error("Vault: {0}")]
    Vault(String),
}

impl AuthError {
    /// Stable code for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Config(_) => "AUTH_CONFIG_INVALID",
            AuthError::File { .. }
            | AuthError::Watch { .. }
            | AuthError::EnvUnset { .. }
            | AuthError::Vault(_) => "AUTH_SOURCE_UNAVAILABLE",
            AuthError::Empty { .. }
            | AuthError::InvalidValue { .. }
            | AuthError::BasicFormat { .. } => "AUTH_SECRET_INVALID",
        }
    }
}

/// The credential of one target, kept current in the background. Cheap to clone; dropping every
/// clone stops the background refresh.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Cancels the background task when the last clone goes.
    _stop: Option<DropGuard>,
}

/// What the background task updates.
struct Shared {
    target: String,
    format: Format,
    current: ArcSwap<HeaderValue>,
    on_refresh: OnRefresh,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("target", &self.inner.shared.target)
            .field("header", &self.inner.shared.format.name)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Starts the source of `auth` for target `target`: reads it once (an error if it cannot be
    /// read at start, naming the source — file path, env var name, Vault path — never the value),
    /// then keeps it current: a file is watched and re-read on change, an env var is read once,
    /// Vault is re-read every refresh interval with its token / Kubernetes-auth lease renewed
    /// before expiry. A failed refresh keeps the last good value. `on_refresh` is called with
    /// `"success"` or `"failure"` for every background refresh (a changed or unreadable file, a
    /// Vault read, a token renewal or re-login). `Ok(None)` for [`AuthType::None`].
    pub async fn start(
        target: &str,
        auth: &AuthConfig,
        vault: &VaultSettings,
        on_refresh: OnRefresh,
    ) -> Result<Option<Credentials>, AuthError> {
        let Some(format) = Format::new(auth)? else {
            return Ok(None);
        };
        let new_shared = |value: HeaderValue| {
            Arc::new(Shared {
                target: target.to_owned(),
                format: format.clone(),
                current: ArcSwap::from_pointee(value),
                on_refresh: on_refresh.clone(),
            })
        };
        match (&auth.secret_ref, &auth.vault_ref) {
            (Some(_), Some(_)) => Err(AuthError::Config(format!(
                "target {target}: exactly one of `secretRef` or `vaultRef` is needed, found both"
            ))),
            (None, None) => Err(AuthError::Config(format!(
                "target {target}: auth type `{}` needs a `secretRef` or `vaultRef`",
                format.kind_name()
            ))),
            (Some(secret), None) => match (&secret.file_path, &secret.env_var) {
                (Some(path), None) => {
                    let path = PathBuf::from(path);
                    let (watcher, changed) = file::watch(&path)?;
                    let bytes = file::read(&path).await?;
                    let from = file::describe(&path);
                    let shared = new_shared(format.value(&bytes, &from)?);
                    let cancel = CancellationToken::new();
                    let task = file::run(shared.clone(), path, bytes, watcher, changed);
                    let token = cancel.clone();
                    tokio::spawn(async move { token.run_until_cancelled(task).await });
                    Ok(Some(Credentials::new(shared, Some(cancel))))
                }
                (None, Some(var)) => {
                    let from = format!("environment variable {var}");
                    let bytes = read_env(var)?;
                    let shared = new_shared(format.value(&bytes, &from)?);
                    Ok(Some(Credentials::new(shared, None)))
                }
                (Some(_), Some(_)) => Err(AuthError::Config(format!(
                    "target {target}: secretRef needs exactly one of `filePath` or `envVar`, \
                     found both"
                ))),
                (None, None) => Err(AuthError::Config(match (&secret.name, &secret.key) {
                    (Some(name), key) => format!(
                        "target {target}: secretRef to Kubernetes Secret {name}/{} was not \
                         resolved to a mounted file (`filePath`); the operator does that",
                        key.as_deref().unwrap_or("?")
                    ),
                    _ => format!("target {target}: secretRef needs `filePath` or `envVar`"),
                })),
            },
            (None, Some(vault_ref)) => {
                let (session, value) = vault::Vault::start(vault_ref, vault).await?;
                let from = session.describe();
                let shared = new_shared(format.value(value.as_bytes(), &from)?);
                let cancel = CancellationToken::new();
                let interval = vault_ref
                    .refresh_interval
                    .filter(|d| !d.is_zero())
                    .unwrap_or(vault::DEFAULT_REFRESH_INTERVAL);
                let task = vault::run(shared.clone(), session, interval);
                let token = cancel.clone();
                tokio::spawn(async move { token.run_until_cancelled(task).await });
                Ok(Some(Credentials::new(shared, Some(cancel))))
            }
        }
    }

    fn new(shared: Arc<Shared>, cancel: Option<CancellationToken>) -> Self {
        Credentials {
            inner: Arc::new(Inner {
                shared,
                _stop: cancel.map(CancellationToken::drop_guard),
            }),
        }
    }

    /// The header to inject now (value marked sensitive).
    pub fn header(&self) -> (HeaderName, HeaderValue) {
        let shared = &self.inner.shared;
        (
            shared.format.name.clone(),
            HeaderValue::clone(&shared.current.load()),
        )
    }
}

impl Shared {
    /// Applies a background re-read: stores a good value, keeps the last one otherwise, and
    /// reports either way.
    fn refreshed(&self, from: &str, secret: Result<Vec<u8>, AuthError>) {
        match secret.and_then(|s| self.format.value(&s, from)) {
            Ok(value) => {
                let changed = **self.current.load() != value;
                self.current.store(Arc::new(value));
                if changed {
                    tracing::info!(target_name = %self.target, source = from, "auth credential rotated");
                }
                (self.on_refresh)("success");
            }
            Err(e) => {
                self.failed(&e);
            }
        }
    }

    fn failed(&self, e: &AuthError) {
        tracing::warn!(
            target_name = %self.target,
            code = e.code(),
            error = %e,
            "auth refresh failed; keeping the last good credential"
        );
        (self.on_refresh)("failure");
    }
}

fn read_env(var: &str) -> Result<Vec<u8>, AuthError> {
    use std::os::unix::ffi::OsStringExt as _;
    std::env::var_os(var)
        .map(std::ffi::OsString::into_vec)
        .ok_or_else(|| AuthError::EnvUnset {
            var: var.to_owned(),
        })
}

/// How a secret becomes a header.
#[derive(Clone)]
struct Format {
    kind: AuthType,
    name: HeaderName,
}

impl Format {
    fn new(auth: &AuthConfig) -> Result<Option<Self>, AuthError> {
        let name = match auth.type_ {
            AuthType::None => return Ok(None),
            AuthType::Bearer | AuthType::Basic => AUTHORIZATION,
            AuthType::Apikey => {
                let header = auth.header.as_deref().unwrap_or(DEFAULT_APIKEY_HEADER);
                HeaderName::try_from(header).map_err(|_| {
                    AuthError::Config(format!("`{header}` is not a valid HTTP header name"))
                })?
            }
        };
        Ok(Some(Format {
            kind: auth.type_,
            name,
        }))
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            AuthType::Bearer => "bearer",
            AuthType::Apikey => "apikey",
            AuthType::Basic => "basic",
            AuthType::None => "none",
        }
    }

    /// The header value for `secret` (trailing newline removed), marked sensitive.
    fn value(&self, secret: &[u8], from: &str) -> Result<HeaderValue, AuthError> {
        let mut secret = secret;
        while let [rest @ .., b'\n' | b'\r'] = secret {
            secret = rest;
        }
        if secret.is_empty() {
            return Err(AuthError::Empty {
                from: from.to_owned(),
            });
        }
        let bytes = match self.kind {
            AuthType::Bearer => [b"Bearer ".as_slice(), secret].concat(),
            AuthType::Apikey => secret.to_vec(),
            AuthType::Basic => {
                if !secret.contains(&b':') {
                    return Err(AuthError::BasicFormat {
                        from: from.to_owned(),
                    });
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
                format!("Basic {encoded}").into_bytes()
            }
            AuthType::None => unreachable!("no format for auth type none"),
        };
        let mut value = HeaderValue::from_bytes(&bytes).map_err(|_| AuthError::InvalidValue {
            from: from.to_owned(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
