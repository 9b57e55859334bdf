//! One target's handler chain, built from its config: one layer per concern in front of its
//! upstream. [`Target::build`] is the one place that says in which order a request meets them
//! (top to bottom, one layer per line); the route layer ([`crate::route`]) above it has already
//! picked the target, checked framing and method, normalised the path ([`crate::path`], 403)
//! and stripped hop-by-hop headers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fiso_config::kafka::KafkaConfig;
use fiso_config::link::{Protocol, TargetConfig};
use fiso_runtime::apps::AppDirectory;

use crate::allow::{Allow, AllowedPaths};
use crate::app::AppUpstream;
use crate::auth::{AuthError, Credentials, VaultSettings};
use crate::breaker::CircuitBreaker;
use crate::inject::InjectAuth;
use crate::intercept::Intercept;
use crate::kafka::{KafkaPublisher, KafkaTargetError};
use crate::layer::{chain, concern, leaf, Next};
use crate::metrics::{LinkMetrics, RequestSeries};
use crate::ratelimit::RateLimiter;
use crate::retry::{Retry, RetryPolicy};
use crate::upstream::{HttpUpstream, UpstreamBuildError, DEFAULT_TIMEOUT};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{target}`: allowedPaths: {source}")]
    AllowedPaths {
        target: String,
        source: globset::Error,
    },
    #[error("target `{target}`: auth: {source}")]
    Auth { target: String, source: AuthError },
    #[error("target `{target}`: {source}")]
    Upstream {
        target: String,
        source: UpstreamBuildError,
    },
    #[error("target `{target}`: {source}")]
    Kafka {
        target: String,
        source: KafkaTargetError,
    },
    #[error("target `{target}`: a kafka target needs a `kafka:` section")]
    NoKafkaSection { target: String },
    #[error("target `{target}`: an app target needs `app:` (the name of an app of this process)")]
    NoApp { target: String },
    #[error("target `{target}`: {source}")]
    Interceptor {
        target: String,
        source: fiso_wasm::InterceptorBuildError,
    },
}

/// A built target: its config (to tell whether a reload changed it) and its service.
pub struct Target {
    pub name: Arc<str>,
    pub config: TargetConfig,
    pub service: Next,
    /// Its request metrics.
    pub requests: RequestSeries,
    /// Its WASM interceptors, to tell whether a module file changed.
    interceptors: Option<Intercept>,
}

impl Target {
    /// The same target, with a name and request series of its own, for one core: what a
    /// request clones or updates is then never a cache line another core's requests change.
    pub fn for_core(&self) -> Target {
        let name: Arc<str> = Arc::from(&*self.name);
        Target {
            requests: self.requests.copy_for(&name),
            name,
            config: self.config.clone(),
            service: Arc::clone(&self.service),
            interceptors: self.interceptors.clone(),
        }
    }

    /// Whether an interceptor module file changed since the target was built (blocking: reads
    /// and hashes the files).
    pub fn modules_changed(&self) -> bool {
        self.interceptors
            .as_ref()
            .is_some_and(Intercept::modules_changed)
    }

    /// Builds `cfg` (named `name`); credentials are read and interceptor modules compiled now,
    /// so a missing secret or module fails the target here rather than its first request.
    /// Relative module paths resolve against `base_dir` (the link config's directory).
    pub async fn build(
        name: &str,
        cfg: &TargetConfig,
        kafka: Option<&KafkaConfig>,
        vault: &VaultSettings,
        metrics: &LinkMetrics,
        base_dir: Option<&Path>,
        apps: &AppDirectory,
    ) -> Result<Target, TargetError> {
        let target = || name.to_owned();
        let allowed =
            AllowedPaths::new(&cfg.allowed_paths).map_err(|source| TargetError::AllowedPaths {
                target: target(),
                source,
            })?;
        let interceptors = if cfg.interceptors.is_empty() {
            None
        } else {
            // Compiling is CPU work of up to seconds: off the async workers.
            let (specs, dir, allowed, metrics) = (
                cfg.interceptors.clone(),
                base_dir.map(PathBuf::from),
                Arc::new(allowed.clone()),
                metrics.clone(),
            );
            let body_timeout = cfg.timeout.unwrap_or(DEFAULT_TIMEOUT);
            let owner = name.to_owned();
            tokio::task::spawn_blocking(move || {
                Intercept::load(
                    &owner,
                    &specs,
                    dir.as_deref(),
                    allowed,
                    body_timeout,
                    metrics,
                )
            })
            .await
            .expect("loading interceptors does not panic")
            .map_err(|source| TargetError::Interceptor {
                target: target(),
                source,
            })?
        };
        let refresh_metrics = metrics.clone();
        let refresh_target: Arc<str> = name.into();
        let credentials = match &cfg.auth {
            Some(auth) => {
                metrics.auth_started(&refresh_target);
                Credentials::start(
                    name,
                    auth,
                    vault,
                    Arc::new(move |status| refresh_metrics.auth_refresh(&refresh_target, status)),
                )
                .await
                .map_err(|source| TargetError::Auth {
                    target: target(),
                    source,
                })?
            }
            None => None,
        };
        let upstream: Next = match cfg.protocol {
            Protocol::Kafka => {
                let k = cfg
                    .kafka
                    .as_ref()
                    .ok_or_else(|| TargetError::NoKafkaSection { target: target() })?;
                let cluster = kafka.and_then(|c| c.clusters.get(&k.cluster));
                let publisher =
                    KafkaPublisher::new(k, cluster, cfg.timeout.unwrap_or(DEFAULT_TIMEOUT))
                        .map_err(|source| TargetError::Kafka {
                            target: target(),
                            source,
                        })?;
                leaf(publisher, KafkaPublisher::publish)
            }
            Protocol::Http | Protocol::Https => {
                let http = HttpUpstream::new(cfg).map_err(|source| TargetError::Upstream {
                    target: target(),
                    source,
                })?;
                leaf(http, HttpUpstream::forward)
            }
            Protocol::App => {
                let app = cfg
                    .app
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| TargetError::NoApp { target: target() })?;
                leaf(
                    AppUpstream::new(cfg, app, apps.clone()),
                    AppUpstream::forward,
                )
            }
        };
        // Kafka publishes are acknowledged or not: retrying an unacknowledged POST is what
        // the producer itself would do.
        let retry_any_method = cfg.retry_non_idempotent || cfg.protocol == Protocol::Kafka;
        let retry = Retry::new(
            name,
            RetryPolicy::new(
                cfg.retry.as_ref(),
                retry_any_method,
                cfg.timeout.unwrap_or(DEFAULT_TIMEOUT),
            ),
            metrics.clone(),
        );
        let rate_limit = cfg
            .rate_limit
            .as_ref()
            .filter(|r| r.limits())
            .map(|r| RateLimiter::new(name, r, metrics.clone()));
        let breaker = cfg
            .circuit_breaker
            .as_ref()
            .filter(|b| b.enabled)
            .map(|b| CircuitBreaker::new(name, b, metrics.clone()));
        let auth = credentials.map(InjectAuth::new);
        // Interceptors sit under the allowed-path check (a module only sees requests the target
        // may receive, and its rewritten path is checked again), above rate limit, breaker and
        // retry: a module runs once per client request, not once per retry attempt, its
        // rejections and failures are not the upstream's and never trip the breaker, and its
        // inbound half sees the answer retry ended with. Above auth injection, so it never
        // sees the credential.
        let service = chain(
            [
                Some(concern(Allow::new(allowed))), // 403
                interceptors.clone().map(concern),  // outbound ↓ / inbound ↑ (WASM)
                rate_limit.map(concern),            // 429 + Retry-After
                breaker.map(concern),               // 503 + Retry-After; sees what retry ends with
                Some(concern(retry)),               // each attempt goes through auth again
                auth.map(concern),
            ],
            upstream,
        );
        let name: Arc<str> = name.into();
        Ok(Target {
            requests: metrics.for_target(&name, mode_of(cfg.protocol)),
            name,
            config: cfg.clone(),
            service,
            interceptors,
        })
    }
}

/// The `mode` label of a target's requests.
fn mode_of(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Kafka => "kafka",
        Protocol::App => "app",
        Protocol::Http | Protocol::Https => "http",
    }
}
