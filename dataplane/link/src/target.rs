//! One target's service: its layers around its upstream, built from its config.

use std::sync::Arc;

use fiso_config::kafka::KafkaConfig;
use fiso_config::link::{Protocol, TargetConfig};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::allow::{AllowLayer, AllowedPaths};
use crate::auth::{AuthError, Credentials, VaultSettings};
use crate::breaker::BreakerLayer;
use crate::inject::AuthLayer;
use crate::kafka::{KafkaPublisher, KafkaTargetError};
use crate::metrics::LinkMetrics;
use crate::ratelimit::RateLimitLayer;
use crate::response::{Request, Response};
use crate::retry::{RetryLayer, RetryPolicy};
use crate::upstream::{HttpUpstream, UpstreamBuildError, DEFAULT_TIMEOUT};

pub type TargetService = BoxCloneSyncService<Request, Response, std::convert::Infallible>;

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
    #[error("target `{0}`: interceptors are not available in this build of fiso; remove `interceptors:` from the target")]
    InterceptorsUnavailable(String),
}

/// A built target: its config (to tell whether a reload changed it) and its service.
#[derive(Clone)]
pub struct Target {
    pub name: Arc<str>,
    pub config: TargetConfig,
    pub allowed: AllowedPaths,
    pub service: TargetService,
}

impl Target {
    pub fn mode(&self) -> &'static str {
        match self.config.protocol {
            Protocol::Kafka => "kafka",
            _ => "http",
        }
    }

    /// Builds `cfg` (named `name`); credentials are read now, so a missing secret fails the
    /// target here rather than its first request.
    pub async fn build(
        name: &str,
        cfg: &TargetConfig,
        kafka: Option<&KafkaConfig>,
        vault: &VaultSettings,
        metrics: &LinkMetrics,
    ) -> Result<Target, TargetError> {
        let target = || name.to_owned();
        if !cfg.interceptors.is_empty() {
            return Err(TargetError::InterceptorsUnavailable(target()));
        }
        let allowed =
            AllowedPaths::new(&cfg.allowed_paths).map_err(|source| TargetError::AllowedPaths {
                target: target(),
                source,
            })?;
        let refresh_metrics = metrics.clone();
        let refresh_target = name.to_owned();
        let credentials = match &cfg.auth {
            Some(auth) => Credentials::start(
                name,
                auth,
                vault,
                Arc::new(move |status| refresh_metrics.auth_refresh(&refresh_target, status)),
            )
            .await
            .map_err(|source| TargetError::Auth {
                target: target(),
                source,
            })?,
            None => None,
        };
        let upstream: TargetService = match cfg.protocol {
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
                BoxCloneSyncService::new(publisher)
            }
            Protocol::Http | Protocol::Https => {
                let http = HttpUpstream::new(cfg).map_err(|source| TargetError::Upstream {
                    target: target(),
                    source,
                })?;
                BoxCloneSyncService::new(http)
            }
        };
        // Kafka publishes are acknowledged or not: retrying an unacknowledged POST is what
        // the producer itself would do.
        let retry_any_method = cfg.retry_non_idempotent || cfg.protocol == Protocol::Kafka;
        let breaker = cfg
            .circuit_breaker
            .as_ref()
            .filter(|b| b.enabled)
            .map(|b| BreakerLayer::new(name, b, metrics.clone()));
        let service = ServiceBuilder::new()
            .layer(AllowLayer::new(allowed.clone()))
            .option_layer(
                cfg.rate_limit
                    .as_ref()
                    .map(|r| RateLimitLayer::new(name, r, metrics.clone())),
            )
            .option_layer(breaker)
            .layer(RetryLayer::new(
                name,
                RetryPolicy::new(cfg.retry.as_ref(), retry_any_method),
                metrics.clone(),
            ))
            .option_layer(credentials.map(AuthLayer::new))
            .service(upstream);
        Ok(Target {
            name: name.into(),
            config: cfg.clone(),
            allowed,
            service: BoxCloneSyncService::new(MapInfallible(service)),
        })
    }
}

/// `option_layer` wraps services in `Either`, whose error type is a boxed error even when both
/// sides are infallible; this restores `Infallible`.
#[derive(Clone)]
struct MapInfallible<S>(S);

impl<S> tower::Service<Request> for MapInfallible<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Error: std::fmt::Display,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        match self.0.poll_ready(cx) {
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Ok(())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            Ok(fut.await.unwrap_or_else(|e| {
                crate::response::error(
                    crate::response::ErrorCode::UpstreamUnreachable,
                    e.to_string(),
                )
            }))
        })
    }
}
