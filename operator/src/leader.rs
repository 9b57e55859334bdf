//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one runs the controllers (every replica serves the webhook).
//!
//! The algorithm is client-go's: a candidate takes the Lease when it is unheld, or when its
//! record has not changed for `leaseDurationSeconds` *as observed on the candidate's own
//! monotonic clock* (so clock skew between nodes does not matter); every write is a `replace`
//! carrying the `resourceVersion` that was read, so two candidates cannot both win. The leader
//! renews every `renew_interval`; if it cannot renew for `renew_deadline` (shorter than the
//! lease duration), or finds the Lease taken, it stops its controllers and [`run_as_leader`]
//! returns [`Error::LeadershipLost`].
//!
//! Strategy on loss: the binary exits non-zero and Kubernetes restarts the container, which
//! rejoins as a candidate. Restarting is the one way to be sure no reconcile of the old term is
//! still running, and it is what controller-runtime does.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Default Lease name.
pub const DEFAULT_LEASE_NAME: &str = "fiso-operator-leader";

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's `holderIdentity`: unique per process.
    pub identity: String,
    /// How long a Lease stays valid without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The leader gives up if it could not renew for this long; less than `lease_duration`, so
    /// it stops before anyone else may start.
    pub renew_deadline: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How often a candidate tries to acquire.
    pub retry_interval: Duration,
}

impl LeaseSettings {
    /// client-go's defaults scaled down: 15 s lease, renew every 5 s, give up after 10 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: DEFAULT_LEASE_NAME.to_owned(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// `<pod name>-<random>`: the pod name tells humans which replica leads; the suffix keeps a
/// restarted container from mistaking its predecessor's Lease for its own.
pub fn identity(pod_name: Option<&str>) -> String {
    let base = pod_name
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "fiso-operator".to_owned());
    let suffix: String = (0..6)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect();
    format!("{base}-{suffix}")
}

/// One candidate's view of the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last Lease resourceVersion seen and when it was first seen (monotonic).
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One round: acquire the Lease if possible, renew it if held. `Ok(true)`: this replica
    /// holds the Lease now. `Ok(false)`: someone else does (or won a race just now).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let me = self.settings.identity.clone();
        let duration_secs = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(15);
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(e.into()),
            };
        };

        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed_at = match &self.observed {
            Some((v, at)) if *v == version => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((version, at));
                at
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if !held_by_me && holder.is_some() {
            let their_duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.settings.lease_duration);
            if observed_at.elapsed() < their_duration {
                return Ok(false);
            }
        }

        let mut next = lease;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if held_by_me {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or_default() + i32::from(!held_by_me),
            ),
            ..spec
        });
        // The resourceVersion read above rides along: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observed = written
                    .metadata
                    .resource_version
                    .map(|v| (v, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the Lease up (if still held) so a standby takes over without waiting for expiry.
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Waits for the Lease, then runs `work` (given a token cancelled when leadership ends) while
/// renewing it. Returns `Ok(())` after `shutdown` (the Lease is released), or
/// [`Error::LeadershipLost`] once `work` has been stopped because the Lease was lost.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    settings: LeaseSettings,
    metrics: Metrics,
    shutdown: CancellationToken,
    work: F,
) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let mut elector = LeaderElector::new(client, settings.clone());
    tracing::info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for leadership");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, code = %e.code(), "cannot acquire the leader lease")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(settings.retry_interval) => {}
        }
    }
    tracing::info!(identity = %settings.identity, "became leader; starting controllers");
    metrics.set_leader(true);

    let term = shutdown.child_token();
    let mut task = tokio::spawn(work(term.clone()));
    let mut renewed = Instant::now();
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            done = &mut task => {
                // The controllers stopped on their own (e.g. the CRDs are gone): give up the
                // Lease and report why.
                break done.unwrap_or_else(|e| Err(Error::LeadershipLost {
                    lease: settings.name.clone(),
                    reason: format!("controllers panicked: {e}"),
                }));
            }
            () = tokio::time::sleep(settings.renew_interval) => {
                match elector.try_acquire_or_renew().await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break Err(lost(&settings, "another replica holds it")),
                    Err(e) if renewed.elapsed() >= settings.renew_deadline => {
                        break Err(lost(&settings, &format!("not renewed for {:?}: {e}", renewed.elapsed())));
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease; retrying"),
                }
            }
        }
    };

    term.cancel();
    if !task.is_finished() {
        // In-flight reconciles finish; a stuck one must not keep a deposed leader writing.
        match tokio::time::timeout(settings.renew_deadline, &mut task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "controllers failed while stopping"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("controllers did not stop in time; aborting them");
                task.abort();
            }
        }
    }
    metrics.set_leader(false);
    match &outcome {
        Ok(()) | Err(Error::Kube(_) | Error::CrdMissing { .. }) => {
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "cannot release the leader lease");
            }
        }
        Err(e) => tracing::error!(error = %e, "leadership lost; controllers stopped"),
    }
    outcome
}

fn lost(settings: &LeaseSettings, reason: &str) -> Error {
    Error::LeadershipLost {
        lease: settings.name.clone(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_unique_per_process_and_names_the_pod() {
        let a = identity(Some("fiso-operator-7d9f-abcde"));
        let b = identity(Some("fiso-operator-7d9f-abcde"));
        assert!(a.starts_with("fiso-operator-7d9f-abcde-"), "{a}");
        assert_eq!(a.len(), "fiso-operator-7d9f-abcde-".len() + 6);
        assert_ne!(a, b);
    }

    #[test]
    fn settings_stop_before_anyone_else_may_start() {
        let s = LeaseSettings::new("fiso-system", "me");
        assert!(s.renew_interval < s.renew_deadline);
        assert!(s.renew_deadline < s.lease_duration);
        assert_eq!(s.name, DEFAULT_LEASE_NAME);
    }
}
