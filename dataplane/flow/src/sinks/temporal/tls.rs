//! TLS and API-key settings of the Temporal client.

use std::sync::Arc;

use fiso_config::common::TlsConfig;
use temporalio_client::danger::ServerCertVerifier;
use temporalio_client::{ClientTlsOptions, TlsOptions};

use super::error::TemporalBuildError;

pub(super) fn tls_options(t: &TlsConfig) -> Result<TlsOptions, TemporalBuildError> {
    let read = |field: &'static str, path: &str| {
        std::fs::read(path).map_err(|e| TemporalBuildError::Tls {
            field,
            message: format!("{path}: {e}"),
        })
    };
    if t.skip_verify && t.ca_file.is_some() {
        return Err(TemporalBuildError::Tls {
            field: "skipVerify",
            message: "`skipVerify` and `caFile` exclude each other".into(),
        });
    }
    let server_root_ca_cert = t
        .ca_file
        .as_deref()
        .map(|p| read("caFile", p))
        .transpose()?;
    let client_tls_options = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => Some(
            ClientTlsOptions::builder()
                .client_cert(read("certFile", cert)?)
                .client_private_key(read("keyFile", key)?)
                .build(),
        ),
        (None, None) => None,
        _ => {
            return Err(TemporalBuildError::Tls {
                field: "certFile",
                message: "`certFile` and `keyFile` go together".into(),
            })
        }
    };
    let server_cert_verifier = t.skip_verify.then(|| {
        tracing::warn!("Temporal sink: TLS server certificate verification is off (`skipVerify`)");
        Arc::new(skip_verify::AnyServer::new()) as Arc<dyn ServerCertVerifier>
    });
    Ok(TlsOptions::builder()
        .maybe_server_root_ca_cert(server_root_ca_cert)
        .maybe_client_tls_options(client_tls_options)
        .maybe_server_cert_verifier(server_cert_verifier)
        .build())
}

/// `tls.skipVerify`: accept any server certificate (development only); handshake signatures
/// are still checked, so the session is at least bound to the certificate presented.
mod skip_verify {
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::crypto::{
        ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
    };
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    pub struct AnyServer(WebPkiSupportedAlgorithms);

    impl AnyServer {
        pub fn new() -> Self {
            AnyServer(ring::default_provider().signature_verification_algorithms)
        }
    }

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }
}

pub(super) fn api_key(
    auth: &fiso_config::flow::TemporalAuth,
) -> Result<String, TemporalBuildError> {
    let key = match (&auth.api_key_env, &auth.api_key_file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| TemporalBuildError::Auth(format!("`apiKeyEnv`: ${var} is not set")))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| TemporalBuildError::Auth(format!("`apiKeyFile`: {path}: {e}")))?,
        _ => {
            return Err(TemporalBuildError::Auth(
                "set exactly one of `apiKeyEnv` or `apiKeyFile`".into(),
            ))
        }
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(TemporalBuildError::Auth("the API key is empty".into()));
    }
    Ok(key.to_owned())
}
