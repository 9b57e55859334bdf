//! Small reusable checks shared by flow and link validation.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cel_check;
use crate::common::TlsConfig;
use crate::diagnostic::Diagnostic;
use crate::flow::{WasmConfig, WasmRuntime};
use crate::kafka::{KafkaCluster, KafkaConfig};

/// Names that end up as Kubernetes object names and URL segments.
pub(crate) fn dns_label(path: &str, what: &str, name: &str) -> Option<Diagnostic> {
    (!is_dns_label(name)).then(|| {
        Diagnostic::error(path, format!("{what} `{name}` is not a valid name"))
            .hint("use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (it becomes a Kubernetes object name)")
    })
}

/// An RFC 1123 label, as Kubernetes names and namespaces are: 1-63 lowercase letters, digits
/// and '-', starting and ending with a letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `:8081`, `0.0.0.0:8081`, `127.0.0.1:3500`, `[::1]:9090`, `localhost:8081`.
pub(crate) fn listen_addr(path: &str, addr: &str) -> Option<Diagnostic> {
    normalize_listen_addr(addr).is_none().then(|| {
        Diagnostic::error(path, format!("`{addr}` is not a listen address")).hint(
            "write `:PORT` (all interfaces) or `HOST:PORT`, e.g. \":8081\" or \"127.0.0.1:3500\"",
        )
    })
}

/// Canonical form used to decide whether two flows share a server: `0.0.0.0:8081` for `:8081`.
pub fn normalize_listen_addr(addr: &str) -> Option<String> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else if let Some(rest) = addr.strip_prefix("localhost:") {
        format!("127.0.0.1:{rest}")
    } else {
        addr.to_owned()
    };
    full.parse::<SocketAddr>().ok().map(|a| a.to_string())
}

/// `host:port` with a numeric port.
pub(crate) fn host_port(path: &str, value: &str, example: &str) -> Option<Diagnostic> {
    let ok = value
        .rsplit_once(':')
        .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        .unwrap_or(false);
    (!ok).then(|| {
        Diagnostic::error(path, format!("`{value}` is not `host:port`"))
            .hint(format!("e.g. \"{example}\""))
    })
}

pub(crate) fn cel(path: &str, expr: &str) -> Option<Diagnostic> {
    cel_check::check(expr).err().map(|p| {
        let d = Diagnostic::error(path, p.message);
        match p.hint {
            Some(h) => d.hint(h),
            None => d,
        }
    })
}

pub(crate) fn tls(path: &str, tls: &TlsConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let any_file = tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some();
    if tls.disabled && (tls.enabled || any_file || tls.skip_verify) {
        out.push(
            Diagnostic::error(
                format!("{path}.disabled"),
                "`disabled: true` turns TLS off, but other TLS settings are set",
            )
            .hint("remove `disabled: true` to use TLS, or remove the other TLS settings"),
        );
        return out;
    }
    if !tls.enabled && (any_file || tls.skip_verify) {
        out.push(
            Diagnostic::error(
                path,
                "TLS files or skipVerify are set but `enabled` is false",
            )
            .hint("add `enabled: true` or remove the TLS settings"),
        );
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        out.push(
            Diagnostic::error(path, "client TLS needs both `certFile` and `keyFile`")
                .hint("set both, or neither"),
        );
    }
    if tls.skip_verify {
        out.push(Diagnostic::warning(
            format!("{path}.skipVerify"),
            "certificate verification is disabled; use only in development",
        ));
    }
    out
}

pub(crate) fn kafka_clusters(path: &str, kafka: &KafkaConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, cluster) in &kafka.clusters {
        out.extend(kafka_cluster(&format!("{path}.clusters.{name}"), cluster));
    }
    out
}

pub(crate) fn kafka_cluster(path: &str, cluster: &KafkaCluster) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if cluster.brokers.is_empty() {
        out.push(
            Diagnostic::error(format!("{path}.brokers"), "no brokers listed")
                .hint("list at least one bootstrap broker, e.g. - kafka.infra.svc:9092"),
        );
    }
    for (i, b) in cluster.brokers.iter().enumerate() {
        out.extend(host_port(
            &format!("{path}.brokers[{i}]"),
            b,
            "kafka.infra.svc:9092",
        ));
    }
    if let Some(auth) = &cluster.auth {
        let sources = [
            auth.password.is_some(),
            auth.password_env.is_some(),
            auth.password_file.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources != 1 {
            out.push(
                Diagnostic::error(
                    format!("{path}.auth"),
                    format!("exactly one password source is needed, found {sources}"),
                )
                .hint("set one of `passwordEnv`, `passwordFile` or `password`"),
            );
        }
        if auth.password.is_some() {
            out.push(
                Diagnostic::warning(
                    format!("{path}.auth.password"),
                    "the password is written in the config",
                )
                .hint("prefer `passwordEnv` or `passwordFile` (a mounted Secret)"),
            );
        }
    }
    if let Some(t) = &cluster.tls {
        out.extend(tls(&format!("{path}.tls"), t));
    }
    out
}

/// A cluster reference must name a defined cluster.
pub(crate) fn cluster_ref(
    path: &str,
    name: &str,
    kafka: Option<&KafkaConfig>,
) -> Option<Diagnostic> {
    let defined: Vec<&str> = kafka
        .map(|k| k.clusters.keys().map(String::as_str).collect())
        .unwrap_or_default();
    (!defined.contains(&name)).then(|| {
        let hint = if defined.is_empty() {
            format!("define it under `kafka.clusters.{name}` with its `brokers`")
        } else {
            format!("defined clusters: {}", defined.join(", "))
        };
        Diagnostic::error(path, format!("Kafka cluster `{name}` is not defined")).hint(hint)
    })
}

pub(crate) fn intervals(
    path: &str,
    initial: Option<Duration>,
    max: Option<Duration>,
    default_initial: Duration,
    default_max: Duration,
) -> Option<Diagnostic> {
    let i = initial.unwrap_or(default_initial);
    let m = max.unwrap_or(default_max);
    if i.is_zero() {
        return Some(
            Diagnostic::error(
                format!("{path}.initialInterval"),
                "must be greater than zero",
            )
            .hint("e.g. \"200ms\""),
        );
    }
    (m < i).then(|| {
        Diagnostic::error(
            format!("{path}.maxInterval"),
            format!(
                "maxInterval ({}) is shorter than initialInterval ({})",
                crate::common::format_duration(m),
                crate::common::format_duration(i)
            ),
        )
        .hint("raise maxInterval or lower initialInterval")
    })
}

pub(crate) fn nonzero_duration(path: &str, d: Option<Duration>) -> Option<Diagnostic> {
    d.filter(|d| d.is_zero())
        .map(|_| Diagnostic::error(path, "must be greater than zero").hint("e.g. \"30s\""))
}

/// Longest accepted connection deadline (`readHeaderTimeout`, `idleTimeout`, `bodyTimeout`):
/// beyond it a deadline no longer protects the process from idle connections.
pub const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// The connection deadlines of a server (Link, Flow HTTP source), under `prefix`.
pub(crate) fn connection_timeouts(
    prefix: &str,
    read_header: Option<Duration>,
    idle: Option<Duration>,
    body: Option<Duration>,
) -> Vec<Diagnostic> {
    [
        ("readHeaderTimeout", read_header),
        ("idleTimeout", idle),
        ("bodyTimeout", body),
    ]
    .into_iter()
    .filter_map(|(name, d)| {
        let path = format!("{prefix}{name}");
        let d = d?;
        if d.is_zero() {
            return nonzero_duration(&path, Some(d));
        }
        (d > MAX_CONNECTION_TIMEOUT).then(|| {
            Diagnostic::error(&path, "must be at most 1h").hint(
                "a longer deadline lets idle connections pile up until file descriptors run out",
            )
        })
    })
    .collect()
}

pub(crate) fn http_url(path: &str, value: &str) -> Option<Diagnostic> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => None,
        Ok(u) => Some(
            Diagnostic::error(
                path,
                format!("`{value}` is not an http(s) URL (scheme `{}`)", u.scheme()),
            )
            .hint("e.g. http://order-service:8080/events"),
        ),
        Err(e) => Some(
            Diagnostic::error(path, format!("`{value}` is not a URL: {e}"))
                .hint("e.g. http://order-service:8080/events"),
        ),
    }
}

/// A WASM module's settings (flow and link interceptors); `path` is its `config`.
pub(crate) fn wasm_module(path: &str, w: &WasmConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if w.module.trim().is_empty() {
        out.push(Diagnostic::error(
            format!("{path}.module"),
            "module path is empty",
        ));
    }
    if w.runtime == WasmRuntime::Wazero {
        out.push(
            Diagnostic::warning(format!("{path}.runtime"), WasmRuntime::WAZERO_WARNING)
                .hint("write `runtime: wasmtime` (the default) to silence this warning"),
        );
    }
    out.extend(nonzero_duration(&format!("{path}.timeout"), w.timeout));
    if w.memory_limit.is_some_and(|m| m.bytes() < 64 * 1024) {
        out.push(
            Diagnostic::error(
                format!("{path}.memoryLimit"),
                "must be at least one WASM page (64KiB)",
            )
            .hint("e.g. \"64MiB\""),
        );
    }
    for (i, p) in w.preopens.iter().enumerate() {
        if !p.guest_path.starts_with('/') {
            out.push(Diagnostic::error(
                format!("{path}.preopens[{i}].guestPath"),
                "guest path must be absolute",
            ));
        }
    }
    out
}
