//! Self-signed mode: the operator is its own CA. At start-up (and every
//! [`SelfSigned::check_interval`]) it makes sure a Secret holds a valid CA and serving
//! certificate for the Service's names — reusing what another replica or an earlier run stored,
//! renewing [`RENEW_BEFORE`] ahead of expiry — and that every webhook of the
//! `MutatingWebhookConfiguration` trusts that CA (`clientConfig.caBundle`).
//!
//! On renewal the new CA is issued next to the previous one (`ca.crt` holds both), so API
//! servers keep trusting replicas that still serve the old certificate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};
use tokio_rustls::rustls::RootCertStore;
use tokio_util::sync::CancellationToken;

use super::metrics::WebhookMetrics;
use super::tls::{self, CertStore, TlsError};
use super::{SelfSigned, WebhookError};
use crate::selection::MANAGED_BY_LABEL;

/// Lifetime of a serving certificate.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of a CA; it outlives every certificate it signs.
pub const CA_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Renew when a certificate expires within this.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Tolerated clock skew between the operator and API servers.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_COMMON_NAME: &str = "fiso-webhook-ca";
/// Secret keys (the `kubernetes.io/tls` layout plus the CA).
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
const FIELD_MANAGER: &str = "fiso-operator";
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the time is out of range for a certificate")]
    Time,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the certificate is not valid for `{name}`: {reason}")]
    NotValid { name: String, reason: String },
    #[error("`{0}` is not a DNS name or IP address")]
    BadName(String),
    #[error("no DNS names to issue the certificate for")]
    NoNames,
}

/// A CA bundle and a serving certificate with its key, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The issuing CA first, then (after a renewal) the previous CA.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn timestamp(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Time)?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).map_err(|_| CertError::Time)?)
        .map_err(|_| CertError::Time)
}

/// A new CA and a serving certificate for `names` (DNS names or IP addresses), ECDSA P-256.
/// `previous_ca` (a PEM bundle) contributes its first certificate to the new bundle.
pub fn issue(
    names: &[String],
    now: SystemTime,
    previous_ca: Option<&str>,
) -> Result<Issued, CertError> {
    let first = names.first().ok_or(CertError::NoNames)?;
    let not_before = timestamp(now - BACKDATE)?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca.distinguished_name.push(DnType::OrganizationName, "fiso");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = timestamp(now + CA_VALIDITY)?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, first.as_str());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = timestamp(now + CERT_VALIDITY)?;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    let mut ca_pem = ca_cert.pem();
    if let Some(previous) = previous_ca.and_then(first_pem_certificate) {
        ca_pem.push_str(&previous);
    }
    Ok(Issued {
        ca_pem,
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// The first `CERTIFICATE` block of a PEM bundle, re-encoded.
fn first_pem_certificate(bundle: &str) -> Option<String> {
    let der = tls::parse_certs(bundle.as_bytes())
        .ok()?
        .into_iter()
        .next()?;
    Some(pem_encode("CERTIFICATE", der.as_ref()))
}

/// PEM armour (RFC 7468) around DER bytes.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Whether `issued` serves `names` now and still will [`RENEW_BEFORE`] from now: the key
/// matches the certificate, and the certificate chains to the bundle for every name.
pub fn check(issued: &Issued, names: &[String], now: SystemTime) -> Result<(), CertError> {
    let key = tls::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())?;
    let mut roots = RootCertStore::empty();
    for ca in tls::parse_certs(issued.ca_pem.as_bytes())? {
        roots
            .add(ca)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let leaf = key
        .end_entity_cert()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let intermediates = &key.cert[1..];
    for at in [now, now + RENEW_BEFORE] {
        let at =
            UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).map_err(|_| CertError::Time)?);
        for name in names {
            let server_name = ServerName::try_from(name.as_str())
                .map_err(|_| CertError::BadName(name.clone()))?;
            verifier
                .verify_server_cert(leaf, intermediates, &server_name, &[], at)
                .map_err(|e| CertError::NotValid {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
        }
    }
    Ok(())
}

fn from_secret(secret: &Secret) -> Option<Issued> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(Issued {
        ca_pem: text(CA_CRT)?,
        cert_pem: text(TLS_CRT)?,
        key_pem: text(TLS_KEY)?,
    })
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> WebhookError {
    let action = action.into();
    move |source| WebhookError::Kube { action, source }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict() || s.is_already_exists())
}

/// The certificate in the Secret if it is valid for the configured names, else a new one
/// stored there (create, or replace guarded by `resourceVersion`: when replicas race, one wins
/// and the others adopt its certificate).
pub async fn ensure_secret(
    client: &Client,
    config: &SelfSigned,
    now: SystemTime,
) -> Result<Issued, WebhookError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &config.secret_namespace);
    let name = &config.secret_name;
    let place = format!("Secret {}/{name}", config.secret_namespace);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        let existing = api
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading {place}")))?;
        let stored = existing.as_ref().and_then(from_secret);
        match stored
            .as_ref()
            .map(|s| check(s, &config.service_dns_names, now))
        {
            Some(Ok(())) => return Ok(stored.expect("checked above")),
            Some(Err(e)) => {
                tracing::info!(secret = %place, reason = %e, "renewing the webhook certificate")
            }
            None => tracing::info!(secret = %place, "creating the webhook certificate"),
        }
        let issued = issue(
            &config.service_dns_names,
            now,
            stored.as_ref().map(|s| s.ca_pem.as_str()),
        )?;
        let data = [
            (TLS_CRT, &issued.cert_pem),
            (TLS_KEY, &issued.key_pem),
            (CA_CRT, &issued.ca_pem),
        ]
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())));
        let written = match existing {
            Some(mut secret) => {
                // Keep the Secret's type (immutable), labels and any other keys.
                secret.data.get_or_insert_with(BTreeMap::new).extend(data);
                secret.metadata.managed_fields = None;
                api.replace(name, &pp, &secret).await
            }
            None => {
                let mut secret = Secret {
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data.into_iter().collect()),
                    ..Default::default()
                };
                secret.metadata.name = Some(name.clone());
                secret.metadata.namespace = Some(config.secret_namespace.clone());
                secret.metadata.labels = Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.0.to_owned(),
                    MANAGED_BY_LABEL.1.to_owned(),
                )]));
                api.create(&pp, &secret).await
            }
        };
        match written {
            Ok(_) => return Ok(issued),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(kube_error(format!("writing {place}"))(e)),
        }
    }
    Err(WebhookError::Config(format!(
        "{place} kept changing while the webhook certificate was being stored"
    )))
}

/// What [`patch_ca_bundle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaBundleUpdate {
    /// Every webhook already had the bundle.
    Unchanged,
    /// This many webhooks got the bundle.
    Patched(usize),
    /// The `MutatingWebhookConfiguration` does not exist (yet).
    NotFound,
}

/// Sets `webhooks[*].clientConfig.caBundle` of the `MutatingWebhookConfiguration` `name` to
/// `ca_pem` (replace guarded by `resourceVersion`, retried on conflict).
pub async fn patch_ca_bundle(
    client: &Client,
    name: &str,
    ca_pem: &str,
) -> Result<CaBundleUpdate, WebhookError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let place = format!("MutatingWebhookConfiguration {name}");
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for _ in 0..CONFLICT_RETRIES {
        let Some(mut config) = api
            .get_opt(name)
            .await
            .map_err(kube_error(format!("reading {place}")))?
        else {
            return Ok(CaBundleUpdate::NotFound);
        };
        let mut patched = 0;
        for webhook in config.webhooks.iter_mut().flatten() {
            let bundle = &mut webhook.client_config.ca_bundle;
            if bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem.as_bytes()) {
                *bundle = Some(ByteString(ca_pem.as_bytes().to_vec()));
                patched += 1;
            }
        }
        if patched == 0 {
            return Ok(CaBundleUpdate::Unchanged);
        }
        config.metadata.managed_fields = None;
        match api.replace(name, &pp, &config).await {
            Ok(_) => return Ok(CaBundleUpdate::Patched(patched)),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(kube_error(format!("updating {place}"))(e)),
        }
    }
    Err(WebhookError::Config(format!(
        "{place} kept changing while its caBundle was being set"
    )))
}

/// Ensures the Secret, then the `caBundle`; logs what it did. Returns the certificate.
pub async fn reconcile(client: &Client, config: &SelfSigned) -> Result<Issued, WebhookError> {
    let issued = ensure_secret(client, config, SystemTime::now()).await?;
    match patch_ca_bundle(client, &config.webhook_configuration_name, &issued.ca_pem).await {
        Ok(CaBundleUpdate::Patched(n)) => tracing::info!(
            configuration = %config.webhook_configuration_name,
            webhooks = n,
            "webhook caBundle set"
        ),
        Ok(CaBundleUpdate::Unchanged) => {}
        Ok(CaBundleUpdate::NotFound) => tracing::warn!(
            configuration = %config.webhook_configuration_name,
            "MutatingWebhookConfiguration not found; its caBundle is set once it exists"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot set the webhook caBundle; retrying later"),
    }
    Ok(issued)
}

/// Re-runs [`reconcile`] every `check_interval` until `shutdown`, swapping a renewed
/// certificate into `store` after the `caBundle` trusts it.
pub async fn maintain(
    client: Client,
    config: SelfSigned,
    store: Arc<CertStore>,
    mut serving: Issued,
    metrics: WebhookMetrics,
    shutdown: CancellationToken,
) {
    use fiso_runtime::metrics::ReloadResult;

    let mut ticker = tokio::time::interval(config.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let issued = match reconcile(&client, &config).await {
            Ok(issued) => issued,
            Err(e) => {
                tracing::warn!(error = %e, code = e.code(), "webhook certificate check failed; retrying");
                continue;
            }
        };
        if issued == serving {
            continue;
        }
        match tls::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()) {
            Ok(key) => {
                store.replace(key);
                metrics.cert_reload(ReloadResult::Success);
                tracing::info!("webhook serving certificate renewed");
                serving = issued;
            }
            Err(e) => {
                metrics.cert_reload(ReloadResult::Failure);
                tracing::warn!(error = %e, "the stored webhook certificate does not load");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        SelfSigned::service_names("fiso-operator", "fiso-system")
            .into_iter()
            .chain(["127.0.0.1".to_owned()])
            .collect()
    }

    #[test]
    fn issued_certificates_verify_for_every_name() {
        let now = SystemTime::now();
        let issued = issue(&names(), now, None).unwrap();
        check(&issued, &names(), now).unwrap();
        assert_eq!(tls::parse_certs(issued.ca_pem.as_bytes()).unwrap().len(), 1);
        let err = check(&issued, &["other.example".into()], now).unwrap_err();
        assert!(matches!(err, CertError::NotValid { .. }), "{err}");
    }

    #[test]
    fn certificates_are_renewed_ahead_of_expiry() {
        let issued_at = SystemTime::now();
        let issued = issue(&names(), issued_at, None).unwrap();
        let late = issued_at + CERT_VALIDITY - RENEW_BEFORE + Duration::from_secs(86_400);
        assert!(check(&issued, &names(), late).is_err());
        assert!(check(
            &issued,
            &names(),
            issued_at + Duration::from_secs(86_400 * 300)
        )
        .is_ok());
    }

    #[test]
    fn renewal_keeps_trusting_the_previous_ca() {
        let now = SystemTime::now();
        let old = issue(&names(), now, None).unwrap();
        let new = issue(&names(), now, Some(&old.ca_pem)).unwrap();
        let bundle = tls::parse_certs(new.ca_pem.as_bytes()).unwrap();
        assert_eq!(bundle.len(), 2);
        assert_eq!(
            bundle[1],
            tls::parse_certs(old.ca_pem.as_bytes()).unwrap()[0]
        );
        // A replica still serving the old certificate verifies against the new bundle.
        let old_served_with_new_bundle = Issued {
            ca_pem: new.ca_pem.clone(),
            ..old.clone()
        };
        check(&old_served_with_new_bundle, &names(), now).unwrap();
        check(&new, &names(), now).unwrap();
        // Only the newest previous CA is kept.
        let newer = issue(&names(), now, Some(&new.ca_pem)).unwrap();
        assert_eq!(tls::parse_certs(newer.ca_pem.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn mismatched_key_and_garbage_fail_the_check() {
        let now = SystemTime::now();
        let a = issue(&names(), now, None).unwrap();
        let b = issue(&names(), now, None).unwrap();
        let mixed = Issued {
            key_pem: b.key_pem.clone(),
            ..a.clone()
        };
        assert!(check(&mixed, &names(), now).is_err());
        let foreign_ca = Issued {
            ca_pem: b.ca_pem.clone(),
            ..a.clone()
        };
        assert!(check(&foreign_ca, &names(), now).is_err());
        let garbage = Issued {
            ca_pem: "x".into(),
            ..a
        };
        assert!(check(&garbage, &names(), now).is_err());
        assert!(matches!(issue(&[], now, None), Err(CertError::NoNames)));
    }
}
