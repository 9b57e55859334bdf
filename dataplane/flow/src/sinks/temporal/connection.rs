//! The Temporal sink's connection: made lazily on first use and shared by every delivery, so
//! an unreachable Temporal does not stop the flow from starting; [`Connector::keep_connected`]
//! connects in the background and reports the flow unready until it is up.

use std::time::Duration;

use fiso_runtime::backoff::Restart;
use fiso_runtime::Readiness;
use temporalio_client::errors::ClientConnectError;
use temporalio_client::{Connection, ConnectionOptions, RetryOptions, TlsOptions, Url};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::classify::ConnectError;
use super::oidc::{TokenError, TokenSource};

/// Time allowed for establishing the TCP / TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff of [`Connector::keep_connected`].
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Where and how to connect, and the connection once made.
pub(super) struct Connector {
    pub(super) host_port: String,
    pub(super) target: Url,
    pub(super) namespace: String,
    pub(super) identity: String,
    pub(super) tls: Option<TlsOptions>,
    /// Never logged nor put in errors.
    pub(super) api_key: Option<String>,
    /// `auth.oidc`: the bearer token's source (instead of `api_key`).
    pub(super) oidc: Option<TokenSource>,
    pub(super) connection: OnceCell<Connection>,
}

impl Connector {
    /// The bearer token of `auth.oidc` (fetched or cached), if the sink uses it.
    pub(super) async fn token(&self) -> Result<Option<String>, TokenError> {
        match &self.oidc {
            Some(source) => source.token().await.map(Some),
            None => Ok(None),
        }
    }

    /// The shared connection, made on first use; a failed attempt is retried by the next caller.
    /// With `auth.oidc` the connect call carries the current token.
    pub(super) async fn connection(&self) -> Result<Connection, ConnectError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        let token = self.token().await.map_err(ConnectError::Token)?;
        self.connect(token).await.map_err(ConnectError::Connect)
    }

    async fn connect(&self, token: Option<String>) -> Result<Connection, ClientConnectError> {
        self.connection
            .get_or_try_init(|| async {
                let options = ConnectionOptions::new(self.target.clone())
                    .identity(self.identity.clone())
                    .maybe_tls_options(self.tls.clone())
                    .maybe_api_key(token.or_else(|| self.api_key.clone()))
                    .connect_timeout(CONNECT_TIMEOUT)
                    // The flow's retry policy decides; connect fails fast.
                    .retry_options(RetryOptions::builder().max_retries(1).build())
                    .build();
                let connection = Connection::connect(options).await?;
                tracing::info!(host_port = %self.host_port, namespace = %self.namespace, "connected to Temporal");
                Ok(connection)
            })
            .await
            .cloned()
    }

    /// Connects in the background, retrying with backoff, and reports readiness component
    /// `component` not ready (with the reason) until the connection is up, then ready. Ends
    /// when connected or when `cancel` fires (a reload or stop of the flow).
    pub(super) async fn keep_connected(
        &self,
        readiness: Readiness,
        component: String,
        cancel: CancellationToken,
    ) {
        let mut restart = Restart::new(RECONNECT_INITIAL, RECONNECT_MAX);
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.connection() => r,
            };
            if cancel.is_cancelled() {
                return;
            }
            match result {
                Ok(_) => {
                    readiness.set_ready(component);
                    return;
                }
                Err(e) => {
                    let reason = match &e {
                        ConnectError::Token(e) => {
                            format!("no access token for Temporal at {}: {e}", self.host_port)
                        }
                        ConnectError::Connect(_) => {
                            format!("Temporal at {} is not reachable: {e}", self.host_port)
                        }
                    };
                    tracing::warn!(component = %component, retry_in = ?restart.delay(), "{reason}");
                    readiness.set_not_ready(component.clone(), reason);
                }
            }
            if !restart.sleep(&cancel).await {
                return;
            }
        }
    }
}
