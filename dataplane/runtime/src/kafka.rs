//! librdkafka client settings for one `kafka.clusters` entry: brokers, SASL, TLS; and
//! librdkafka errors as one line ([`error_text`]).
//!
//! The SASL password is resolved here (inline, from an environment variable or from a file) and
//! only ever goes into the [`ClientConfig`]; errors name where it was looked for, never the
//! value. Callers add their own producer/consumer settings on top.

pub mod error_text;

use std::path::Path;
use std::sync::Arc;

use fiso_config::common::TlsConfig;
use fiso_config::flow::RequiredAcks;
use fiso_config::kafka::{KafkaAuth, KafkaCluster};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::blocking_drop::BlockingDrop;

/// Why a cluster's settings cannot become a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("kafka cluster has no brokers")]
    NoBrokers,
    #[error(
        "SASL user {username:?}: no password (set one of password, passwordEnv, passwordFile)"
    )]
    NoPassword { username: String },
    #[error("SASL user {username:?}: more than one of password, passwordEnv, passwordFile is set")]
    AmbiguousPassword { username: String },
    #[error("SASL password: environment variable {name} is not set or not valid UTF-8")]
    PasswordEnv { name: String },
    #[error("SASL password: reading {path}: {source}")]
    PasswordFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: keyFile is set without certFile (or certFile without keyFile)")]
    HalfClientCert,
}

/// A producer shared by its clones and destroyed on the blocking pool when the last one goes
/// (see [`BlockingDrop`](crate::blocking_drop::BlockingDrop)): a reload retires producers
/// while records are flowing.
#[derive(Clone)]
pub struct Producer(Arc<BlockingDrop<FutureProducer>>);

impl Producer {
    pub fn new(producer: FutureProducer) -> Self {
        Producer(Arc::new(BlockingDrop::new(producer)))
    }
}

impl std::ops::Deref for Producer {
    type Target = FutureProducer;

    fn deref(&self) -> &FutureProducer {
        &self.0
    }
}

/// A producer's configuration for `cluster`: `acks` (`all` also makes the producer idempotent,
/// so a retried send never duplicates) and how long a record may wait for its acknowledgement.
pub fn producer_config(
    cluster: &KafkaCluster,
    acks: RequiredAcks,
    message_timeout: std::time::Duration,
) -> Result<ClientConfig, KafkaConfigError> {
    let mut config = client_config(cluster)?;
    let idempotent = acks == RequiredAcks::All;
    config
        .set("acks", acks.as_str())
        .set(
            "enable.idempotence",
            if idempotent { "true" } else { "false" },
        )
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        );
    Ok(config)
}

/// The client configuration of `cluster`: `bootstrap.servers`, `security.protocol` and the SASL /
/// TLS settings it implies.
pub fn client_config(cluster: &KafkaCluster) -> Result<ClientConfig, KafkaConfigError> {
    let brokers: Vec<&str> = cluster
        .brokers
        .iter()
        .map(|b| b.trim())
        .filter(|b| !b.is_empty())
        .collect();
    if brokers.is_empty() {
        return Err(KafkaConfigError::NoBrokers);
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers.join(","));

    let tls = cluster.tls.as_ref().filter(|t| t.enabled);
    let protocol = match (cluster.auth.is_some(), tls.is_some()) {
        (false, false) => "PLAINTEXT",
        (false, true) => "SSL",
        (true, false) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    };
    config.set("security.protocol", protocol);

    if let Some(auth) = &cluster.auth {
        let password = resolve_password(auth)?;
        config
            .set("sasl.mechanism", auth.mechanism.as_str())
            .set("sasl.username", &auth.username)
            .set("sasl.password", password);
    }
    if let Some(tls) = tls {
        apply_tls(&mut config, tls)?;
    }
    Ok(config)
}

fn apply_tls(config: &mut ClientConfig, tls: &TlsConfig) -> Result<(), KafkaConfigError> {
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(KafkaConfigError::HalfClientCert);
    }
    if let Some(ca) = &tls.ca_file {
        config.set("ssl.ca.location", ca);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        config
            .set("ssl.certificate.location", cert)
            .set("ssl.key.location", key);
    }
    if tls.skip_verify {
        config
            .set("enable.ssl.certificate.verification", "false")
            .set("ssl.endpoint.identification.algorithm", "none");
    }
    Ok(())
}

/// The SASL password from exactly one of `password`, `passwordEnv`, `passwordFile` (a file's
/// trailing newline is dropped).
fn resolve_password(auth: &KafkaAuth) -> Result<String, KafkaConfigError> {
    let sources = [
        auth.password.is_some(),
        auth.password_env.is_some(),
        auth.password_file.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => {
            return Err(KafkaConfigError::NoPassword {
                username: auth.username.clone(),
            })
        }
        1 => {}
        _ => {
            return Err(KafkaConfigError::AmbiguousPassword {
                username: auth.username.clone(),
            })
        }
    }
    if let Some(p) = &auth.password {
        return Ok(p.clone());
    }
    if let Some(name) = &auth.password_env {
        return std::env::var(name)
            .map_err(|_| KafkaConfigError::PasswordEnv { name: name.clone() });
    }
    let path = auth.password_file.as_deref().unwrap_or_default();
    let text = std::fs::read_to_string(Path::new(path)).map_err(|source| {
        KafkaConfigError::PasswordFile {
            path: path.to_string(),
            source,
        }
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fiso_config::kafka::SaslMechanism;

    fn cluster(brokers: &[&str]) -> KafkaCluster {
        KafkaCluster {
            brokers: brokers.iter().map(|b| b.to_string()).collect(),
            auth: None,
            tls: None,
        }
    }

    fn auth(mechanism: SaslMechanism) -> KafkaAuth {
        KafkaAuth {
            mechanism,
            username: "alice".into(),
            password: None,
            password_env: None,
            password_file: None,
        }
    }

    fn get<'a>(c: &'a ClientConfig, key: &str) -> Option<&'a str> {
        c.get(key)
    }

    #[test]
    fn plaintext_brokers() {
        let c = client_config(&cluster(&["a:9092", " b:9093 "])).unwrap();
        assert_eq!(get(&c, "bootstrap.servers"), Some("a:9092,b:9093"));
        assert_eq!(get(&c, "security.protocol"), Some("PLAINTEXT"));
        assert_eq!(get(&c, "sasl.mechanism"), None);
        assert_eq!(get(&c, "ssl.ca.location"), None);
    }

    #[test]
    fn no_brokers_is_an_error() {
        assert!(matches!(
            client_config(&cluster(&[])),
            Err(KafkaConfigError::NoBrokers)
        ));
        assert!(matches!(
            client_config(&cluster(&[" "])),
            Err(KafkaConfigError::NoBrokers)
        ));
    }

    #[test]
    fn sasl_inline_password() {
        let mut k = cluster(&["a:9092"]);
        k.auth = Some(KafkaAuth {
            password: Some("s3cret".into()),
            ..auth(SaslMechanism::Plain)
        });
        let c = client_config(&k).unwrap();
        assert_eq!(get(&c, "security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(get(&c, "sasl.mechanism"), Some("PLAIN"));
        assert_eq!(get(&c, "sasl.username"), Some("alice"));
        assert_eq!(get(&c, "sasl.password"), Some("s3cret"));
    }

    #[test]
    fn sasl_scram_password_from_env() {
        let var = "FISO_TEST_KAFKA_CLIENT_PASSWORD_ENV";
        // Only this test reads or writes this variable.
        std::env::set_var(var, "from-env");
        let mut k = cluster(&["a:9092"]);
        k.auth = Some(KafkaAuth {
            password_env: Some(var.into()),
            ..auth(SaslMechanism::ScramSha256)
        });
        let c = client_config(&k).unwrap();
        assert_eq!(get(&c, "sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(get(&c, "sasl.password"), Some("from-env"));

        k.auth.as_mut().unwrap().password_env = Some("FISO_TEST_KAFKA_CLIENT_UNSET".into());
        let err = client_config(&k).unwrap_err();
        assert!(matches!(err, KafkaConfigError::PasswordEnv { .. }), "{err}");
    }

    #[test]
    fn sasl_password_from_file_and_errors_hide_it() {
        let dir = std::env::temp_dir().join(format!("fiso-kafka-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut k = cluster(&["a:9092"]);
        k.auth = Some(KafkaAuth {
            password_file: Some(file.display().to_string()),
            ..auth(SaslMechanism::ScramSha512)
        });
        let c = client_config(&k).unwrap();
        assert_eq!(get(&c, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&c, "sasl.password"), Some("from-file"));
        std::fs::remove_dir_all(&dir).unwrap();

        let err = client_config(&k).unwrap_err();
        assert!(
            matches!(err, KafkaConfigError::PasswordFile { .. }),
            "{err}"
        );

        // Missing and ambiguous sources; the inline value never shows up in the message.
        k.auth = Some(auth(SaslMechanism::Plain));
        assert!(matches!(
            client_config(&k),
            Err(KafkaConfigError::NoPassword { .. })
        ));
        k.auth = Some(KafkaAuth {
            password: Some("hunter2".into()),
            password_env: Some("X".into()),
            ..auth(SaslMechanism::Plain)
        });
        let err = client_config(&k).unwrap_err();
        assert!(matches!(err, KafkaConfigError::AmbiguousPassword { .. }));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn tls_files_and_skip_verify() {
        let mut k = cluster(&["a:9093"]);
        k.tls = Some(TlsConfig {
            enabled: true,
            ca_file: Some("/ca.pem".into()),
            cert_file: Some("/c.pem".into()),
            key_file: Some("/k.pem".into()),
            skip_verify: true,
            ..TlsConfig::default()
        });
        let c = client_config(&k).unwrap();
        assert_eq!(get(&c, "security.protocol"), Some("SSL"));
        assert_eq!(get(&c, "ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(get(&c, "ssl.certificate.location"), Some("/c.pem"));
        assert_eq!(get(&c, "ssl.key.location"), Some("/k.pem"));
        assert_eq!(
            get(&c, "enable.ssl.certificate.verification"),
            Some("false")
        );

        k.auth = Some(KafkaAuth {
            password: Some("p".into()),
            ..auth(SaslMechanism::Plain)
        });
        let c = client_config(&k).unwrap();
        assert_eq!(get(&c, "security.protocol"), Some("SASL_SSL"));

        k.tls.as_mut().unwrap().key_file = None;
        assert!(matches!(
            client_config(&k),
            Err(KafkaConfigError::HalfClientCert)
        ));

        // TLS present but not enabled: plain connection, no TLS keys.
        k.tls = Some(TlsConfig {
            enabled: false,
            ..TlsConfig::default()
        });
        let c = client_config(&k).unwrap();
        assert_eq!(get(&c, "security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(get(&c, "enable.ssl.certificate.verification"), None);
    }
}
