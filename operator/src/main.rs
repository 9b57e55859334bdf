//! `fiso-operator`: the controllers (FlowDefinition / LinkTarget status, per-selection
//! ConfigMaps) and the sidecar-injection webhook, configured by environment variables (see
//! [`fiso_operator::config`] and [`fiso_operator::webhook::WebhookConfig`]).
//!
//! Exit status: 0 after SIGTERM / SIGINT; 1 when start-up fails (e.g. a forced native sidecar
//! mode on an API server older than 1.29: readiness never turns green), the controllers fail
//! (e.g. the CRDs are not installed) or leadership is lost — Kubernetes restarts the container,
//! which comes back as a candidate.

use std::process::ExitCode;

use anyhow::Context as _;
use fiso_operator::config::{Mode, OperatorConfig};
use fiso_operator::controller::Settings;
use fiso_operator::leader::{self, LeaseSettings};
use fiso_operator::webhook::{self, WebhookConfig, WebhookMetrics};
use fiso_operator::{run_controllers, Metrics};
use fiso_runtime::health::{self, HealthState};
use fiso_runtime::logging::LogSettings;
use fiso_runtime::{shutdown, MetricsRegistry, Readiness};
use kube::runtime::events::Reporter;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fiso-operator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Until logging is set up (its settings may be what is wrong), errors go to stderr.
    let logs = match LogSettings::from_env().and_then(LogSettings::init) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fiso-operator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run());
    if let Err(e) = &result {
        tracing::error!(
            error = fiso_runtime::error_text::chain(e.as_ref()),
            "fiso-operator stopped"
        );
    }
    drop(logs);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run() -> anyhow::Result<()> {
    let config = OperatorConfig::from_env()?;
    let mut webhook_config = WebhookConfig::from_env()?;

    let registry = MetricsRegistry::new();
    let metrics = Metrics::register(&registry)?;
    webhook_config.metrics = WebhookMetrics::register(&registry)?;
    let readiness = Readiness::new();
    let state = HealthState::new(registry, readiness.clone());
    let stop = shutdown::shutdown_signal();

    tracing::info!(
        mode = ?config.mode,
        leader_election = config.leader_election,
        namespace = %config.namespace,
        image = %webhook_config.image,
        sidecar_mode = webhook_config.sidecar_mode.as_str(),
        "fiso-operator starting"
    );
    let servers = CancellationToken::new();
    let health = health::serve(&config.health_addr, state.clone(), servers.child_token())
        .await
        .context("FISO_HEALTH_ADDR")?;
    tracing::info!(addr = %health.local_addr, "health listening (/healthz, /readyz)");
    let metrics_server = if config.metrics_addr == config.health_addr {
        None
    } else {
        let s = health::serve(&config.metrics_addr, state, servers.child_token())
            .await
            .context("FISO_METRICS_ADDR")?;
        tracing::info!(addr = %s.local_addr, "metrics listening (/metrics)");
        Some(s)
    };

    // The controllers cannot work without the API; the webhook can (it then mounts no
    // Secrets, cannot manage its own certificate and needs a forced FISO_SIDECAR_MODE, having
    // no server version to follow), so webhook-only mode tolerates that.
    let client = match kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) if config.mode == Mode::WebhookOnly => {
            tracing::warn!(error = %e, "no Kubernetes API access; the webhook runs without it");
            None
        }
        Err(e) => return Err(e).context("cannot configure the Kubernetes client"),
    };

    let webhook_stop = stop.child_token();
    let webhook = webhook::run(webhook_config, client.clone(), webhook_stop.clone())
        .await
        .context("cannot start the webhook")?;
    tracing::info!(addr = %webhook.local_addr, "webhook listening (POST /mutate)");
    readiness.mark_started();

    let controllers = async {
        match (config.mode, client) {
            (Mode::Controller, Some(client)) => {
                let settings = Settings {
                    reporter: Reporter {
                        controller: fiso_operator::controller::REPORTING_CONTROLLER.to_owned(),
                        instance: config.pod_name.clone(),
                    },
                    metrics: metrics.clone(),
                    ..Settings::default()
                };
                if config.leader_election {
                    let lease = LeaseSettings {
                        name: config.lease_name.clone(),
                        ..LeaseSettings::new(
                            config.namespace.clone(),
                            leader::identity(config.pod_name.as_deref()),
                        )
                    };
                    let stop = stop.clone();
                    leader::run_as_leader(client.clone(), lease, metrics, stop, move |term| {
                        run_controllers(client, settings, term)
                    })
                    .await
                } else {
                    metrics.set_leader(true);
                    run_controllers(client, settings, stop.clone()).await
                }
            }
            _ => {
                stop.cancelled().await;
                Ok(())
            }
        }
    };
    tokio::pin!(controllers);
    let mut webhook_task = webhook.handle;

    // Whichever part ends first ends the process: the other is stopped and awaited, then the
    // servers (last, so the final scrape and probes see the shutdown).
    let result = tokio::select! {
        done = &mut controllers => {
            webhook_stop.cancel();
            log_webhook_end(webhook_task.await);
            done.map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))
        }
        done = &mut webhook_task => {
            let unexpected = !stop.is_cancelled();
            stop.cancel();
            if let Err(e) = controllers.await {
                tracing::warn!(error = %e, "controllers stopped with an error");
            }
            match done {
                Ok(Ok(())) if !unexpected => Ok(()),
                Ok(Ok(())) => Err(anyhow::anyhow!("the webhook server stopped")),
                Ok(Err(e)) => Err(anyhow::anyhow!("webhook: {e} [{}]", e.code())),
                Err(e) => Err(anyhow::anyhow!("webhook task failed: {e}")),
            }
        }
    };
    servers.cancel();
    let _ = health.handle.await;
    if let Some(s) = metrics_server {
        let _ = s.handle.await;
    }
    result
}

fn log_webhook_end(done: Result<Result<(), webhook::WebhookError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, code = e.code(), "webhook stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "webhook task failed"),
    }
}
