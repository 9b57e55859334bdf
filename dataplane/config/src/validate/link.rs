//! Checks of the link config and its targets.

use std::collections::HashMap;

use globset::GlobBuilder;

use crate::diagnostic::Diagnostic;
use crate::kafka::KafkaConfig;
use crate::link::{
    AuthConfig, AuthType, KeyType, LinkConfig, LinkInterceptorSpec, Protocol, TargetConfig,
    DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, MAX_INTERCEPTOR_MAX_INPUT,
};
use crate::validate::rules;
use crate::validate::{validate_tracing, Origin};

/// Validates a link config file; paths are relative to the document (`targets[0].host`).
pub fn validate_link(cfg: &LinkConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    out.extend(rules::listen_addr("listenAddr", &cfg.listen_addr));
    out.extend(rules::listen_addr("metricsAddr", &cfg.metrics_addr));
    if rules::normalize_listen_addr(&cfg.listen_addr).is_some()
        && rules::normalize_listen_addr(&cfg.listen_addr)
            == rules::normalize_listen_addr(&cfg.metrics_addr)
    {
        out.push(
            Diagnostic::error(
                "metricsAddr",
                "the proxy and the metrics server cannot share an address",
            )
            .hint("e.g. listenAddr \"127.0.0.1:3500\", metricsAddr \":9091\""),
        );
    }
    out.extend(rules::connection_timeouts(
        "",
        cfg.read_header_timeout,
        cfg.idle_timeout,
        cfg.body_timeout,
    ));
    if let Some(k) = &cfg.kafka {
        out.extend(rules::kafka_clusters("kafka", k));
    }
    if let Some(t) = &cfg.tracing {
        out.extend(validate_tracing(t).into_iter().map(|d| d.under("tracing")));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        let prefix = format!("targets[{i}]");
        if let Some(name) = t.name.as_deref() {
            if let Some(first) = seen.insert(name, i) {
                out.push(
                    Diagnostic::error(
                        format!("{prefix}.name"),
                        format!("target name `{name}` is already used by targets[{first}]"),
                    )
                    .hint("target names are the `/link/{target}` path segment and must be unique"),
                );
            }
        }
        out.extend(
            validate_target(t, Origin::File, cfg.kafka.as_ref())
                .into_iter()
                .map(|d| d.under(&prefix)),
        );
    }
    out
}

/// `protocol: app`: the app's name; what only a network upstream has is refused, not ignored.
fn app_target(t: &TargetConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match t.app.as_deref() {
        None | Some("") => out.push(
            Diagnostic::error("app", "an app target needs the app's name")
                .hint("e.g. app: enrich (an app of `apps:` in the same process)"),
        ),
        Some(app) => out.extend(rules::dns_label("app", "app name", app)),
    }
    for (field, set) in [
        ("host", t.host.is_some()),
        ("port", t.port.is_some()),
        ("caFile", t.ca_file.is_some()),
        ("kafka", t.kafka.is_some()),
    ] {
        if set {
            out.push(
                Diagnostic::error(
                    field,
                    format!("`{field}` does not apply to `protocol: app`: requests go to the app in this process"),
                )
                .hint(format!("remove `{field}`")),
            );
        }
    }
    out
}

/// Validates one target; `clusters` are the link-level Kafka clusters (none for a LinkTarget).
pub fn validate_target(
    t: &TargetConfig,
    origin: Origin,
    clusters: Option<&KafkaConfig>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match (&t.name, origin) {
        (Some(name), _) => out.extend(rules::dns_label("name", "target name", name)),
        (None, Origin::File) => out.push(
            Diagnostic::error("name", "the target has no name")
                .hint("add `name: crm`; applications call it as localhost:3500/link/crm/..."),
        ),
        (None, Origin::Resource) => {}
    }
    match t.protocol {
        Protocol::Http | Protocol::Https => {
            match t.host.as_deref() {
                None | Some("") => out.push(
                    Diagnostic::error(
                        "host",
                        format!("a {} target needs a host", t.protocol.as_str()),
                    )
                    .hint("e.g. host: api.example.com"),
                ),
                Some(h) => out.extend(upstream_host(h)),
            }
            if t.kafka.is_some() {
                out.push(
                    Diagnostic::error("kafka", "`kafka` settings apply only to `protocol: kafka`")
                        .hint("remove `kafka:` or set `protocol: kafka`"),
                );
            }
        }
        Protocol::Kafka => out.extend(kafka_target(t, origin, clusters)),
        Protocol::App => out.extend(app_target(t)),
    }
    if t.app.is_some() && t.protocol != Protocol::App {
        out.push(
            Diagnostic::error("app", "`app` applies only to `protocol: app`")
                .hint("remove `app:` or set `protocol: app`"),
        );
    }
    if t.port == Some(0) {
        out.push(Diagnostic::error(
            "port",
            "port 0 is not a valid upstream port",
        ));
    }
    if let Some(bp) = &t.base_path {
        out.extend(base_path(bp));
    }
    out.extend(rules::nonzero_duration("timeout", t.timeout));
    if let Some(auth) = &t.auth {
        out.extend(
            auth_checks(auth, origin)
                .into_iter()
                .map(|d| d.under("auth")),
        );
    }
    if let Some(cb) = &t.circuit_breaker {
        for (field, v) in [
            ("failureThreshold", cb.failure_threshold),
            ("successThreshold", cb.success_threshold),
        ] {
            if v == Some(0) {
                out.push(Diagnostic::error(
                    format!("circuitBreaker.{field}"),
                    "must be at least 1",
                ));
            }
        }
        out.extend(rules::nonzero_duration(
            "circuitBreaker.resetTimeout",
            cb.reset_timeout,
        ));
    }
    if let Some(r) = &t.retry {
        if r.max_attempts == Some(0) {
            out.push(
                Diagnostic::error("retry.maxAttempts", "must be at least 1")
                    .hint("1 means a single attempt without retries"),
            );
        }
        if let Some(j) = r.jitter {
            if !(0.0..=1.0).contains(&j) {
                out.push(
                    Diagnostic::error("retry.jitter", format!("jitter {j} is outside [0, 1]"))
                        .hint("0 disables jitter; 0.2 randomises each delay by ±20%"),
                );
            }
        }
        out.extend(rules::intervals(
            "retry",
            r.initial_interval,
            r.max_interval,
            DEFAULT_RETRY_INITIAL,
            DEFAULT_RETRY_MAX,
        ));
    }
    if let Some(rl) = &t.rate_limit {
        if !(rl.requests_per_second.is_finite() && rl.requests_per_second >= 0.0) {
            out.push(
                Diagnostic::error(
                    "rateLimit.requestsPerSecond",
                    "must be a number of requests per second, at least zero",
                )
                .hint("0 means no limit"),
            );
        }
        if rl.burst == Some(0) {
            out.push(Diagnostic::error("rateLimit.burst", "must be at least 1"));
        }
    }
    for (i, glob) in t.allowed_paths.iter().enumerate() {
        out.extend(allowed_path(&format!("allowedPaths[{i}]"), glob));
    }
    for (i, ic) in t.interceptors.iter().enumerate() {
        out.extend(interceptor(&format!("interceptors[{i}].config"), ic));
    }
    out
}

fn interceptor(path: &str, ic: &LinkInterceptorSpec) -> Vec<Diagnostic> {
    let LinkInterceptorSpec::Wasm(w) = ic;
    let mut out = rules::wasm_module(path, &w.engine());
    if w.max_input_size
        .is_some_and(|m| m.bytes() == 0 || m.bytes() > MAX_INTERCEPTOR_MAX_INPUT)
    {
        out.push(
            Diagnostic::error(
                format!("{path}.maxInputSize"),
                "must be between 1 byte and 64MiB (the body is held in memory)",
            )
            .hint("e.g. \"4MiB\" (the default)"),
        );
    }
    out
}

fn kafka_target(
    t: &TargetConfig,
    origin: Origin,
    clusters: Option<&KafkaConfig>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(k) = &t.kafka else {
        out.push(
            Diagnostic::error(
                "kafka",
                "a kafka target needs `kafka.cluster` and `kafka.topic`",
            )
            .hint("add kafka: {cluster: main, topic: orders}"),
        );
        return out;
    };
    match (&k.cluster_config, origin) {
        (Some(c), _) => out.extend(rules::kafka_cluster("kafka.clusterConfig", c)),
        (None, Origin::File) => {
            out.extend(rules::cluster_ref("kafka.cluster", &k.cluster, clusters))
        }
        (None, Origin::Resource) => out.push(
            Diagnostic::error(
                "kafka.clusterConfig",
                "a LinkTarget has no link-level kafka.clusters",
            )
            .hint("put the brokers under `kafka.clusterConfig` (`fiso export` does this for you)"),
        ),
    }
    if k.topic.trim().is_empty() {
        out.push(Diagnostic::error("kafka.topic", "topic is empty"));
    }
    if t.host.is_some() || t.base_path.is_some() || !t.allowed_paths.is_empty() {
        out.push(Diagnostic::warning(
            "protocol",
            "host, basePath and allowedPaths are ignored by kafka targets",
        ));
    }
    if let Some(key) = &k.key {
        let needs = match key.type_ {
            KeyType::Header | KeyType::Payload => Some(("field", key.field.is_some())),
            KeyType::Static => Some(("value", key.value.is_some())),
            KeyType::Uuid | KeyType::Random => None,
        };
        if let Some((field, present)) = needs {
            if !present {
                out.push(
                    Diagnostic::error(
                        format!("kafka.key.{field}"),
                        format!("key type `{}` needs `{field}`", serde_name(&key.type_)),
                    )
                    .hint(match key.type_ {
                        KeyType::Header => "e.g. field: X-Correlation-ID",
                        KeyType::Payload => "e.g. field: customer_id (dotted paths allowed)",
                        _ => "e.g. value: order-processor-1",
                    }),
                );
            }
        }
    }
    out
}

fn serde_name(t: &KeyType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn auth_checks(auth: &AuthConfig, origin: Origin) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let has_source = auth.secret_ref.is_some() || auth.vault_ref.is_some();
    if auth.type_ == AuthType::None {
        if has_source {
            out.push(Diagnostic::warning(
                "type",
                "auth type is `none`; the secret reference is ignored",
            ));
        }
        return out;
    }
    if auth.secret_ref.is_some() == auth.vault_ref.is_some() {
        out.push(
            Diagnostic::error("", "exactly one of `secretRef` or `vaultRef` is needed")
                .hint("e.g. secretRef: {filePath: /secrets/crm-token}"),
        );
    }
    if auth.header.is_some() && auth.type_ != AuthType::Apikey {
        out.push(Diagnostic::warning(
            "header",
            "`header` is used only by `type: apikey`",
        ));
    }
    if let (AuthType::Apikey, Some(header)) = (auth.type_, &auth.header) {
        out.extend(apikey_header(header));
    }
    if let Some(s) = &auth.secret_ref {
        let k8s = s.name.is_some() || s.key.is_some();
        let count = [s.file_path.is_some(), s.env_var.is_some(), k8s]
            .iter()
            .filter(|b| **b)
            .count();
        if count != 1 {
            out.push(
                Diagnostic::error("secretRef", format!("exactly one secret source is needed, found {count}"))
                    .hint("set `filePath`, `envVar`, or (in a LinkTarget) `name` + `key` of a Kubernetes Secret"),
            );
        }
        if k8s {
            if s.name.is_none() || s.key.is_none() {
                out.push(Diagnostic::error(
                    "secretRef",
                    "a Kubernetes Secret reference needs both `name` and `key`",
                ));
            }
            if origin == Origin::File {
                out.push(
                    Diagnostic::error(
                        "secretRef.name",
                        "Kubernetes Secret references work only in a LinkTarget",
                    )
                    .hint("locally use `filePath` or `envVar`"),
                );
            }
        }
    }
    if let Some(v) = &auth.vault_ref {
        for (field, value) in [("path", &v.path), ("field", &v.field)] {
            if value.trim().is_empty() {
                out.push(Diagnostic::error(
                    format!("vaultRef.{field}"),
                    "must not be empty",
                ));
            }
        }
    }
    out
}

/// The target's `host` exactly as the upstream URL is parsed at run time (the `url` crate, which
/// reqwest uses): a DNS name, an IPv4 address or a bracketed IPv6 address, nothing else.
fn upstream_host(host: &str) -> Option<Diagnostic> {
    let shown = host.escape_debug();
    if host.contains("://") || host.contains('/') {
        return Some(
            Diagnostic::error("host", format!("`{shown}` must be a bare host name"))
                .hint("put the scheme in `protocol`, the port in `port` and the path prefix in `basePath`"),
        );
    }
    let e = url::Host::parse(host).err()?;
    let hint = if host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "whitespace and control characters (CR, LF, tab) never belong in a host"
    } else if host.contains(':') && !host.starts_with('[') {
        "the port goes in `port`; an IPv6 address is written in brackets, e.g. [::1]"
    } else if host.contains('@') {
        "credentials go in `auth`, never in the host"
    } else {
        "a host is a DNS name (api.example.com), an IPv4 address or a bracketed IPv6 address"
    };
    Some(Diagnostic::error("host", format!("`{shown}` is not a valid host: {e}")).hint(hint))
}

/// A `basePath` is sent exactly as written or refused: the URL parser would otherwise
/// resolve dot segments (`/api/../admin` is `/admin`, `%2e%2e` included), turn `\` into `/`,
/// drop tabs and line breaks and start a query at `?`, all silently.
fn base_path(bp: &str) -> Option<Diagnostic> {
    let shown = bp.escape_debug();
    if !bp.starts_with('/') {
        return Some(
            Diagnostic::error("basePath", format!("`{shown}` must start with `/`"))
                .hint(format!("write `/{shown}`")),
        );
    }
    // RFC 3986 §2.3: an unreserved character is never percent-encoded by a URI producer, and
    // an encoded dot segment is one more way to write `..`.
    if bp.to_ascii_lowercase().contains("%2e") {
        return Some(
            Diagnostic::error(
                "basePath",
                format!("`{shown}` holds a percent-encoded dot (`%2e`)"),
            )
            .hint("write a dot as `.`; `.` and `..` segments are not allowed either"),
        );
    }
    if bp
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some(
            Diagnostic::error(
                "basePath",
                format!("`{shown}` has a `.` or `..` segment, which would be resolved away"),
            )
            .hint("write the prefix the upstream should receive, e.g. /api/v2"),
        );
    }
    let sent = match url::Url::parse(&format!("http://host{bp}")) {
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            return Some(
                Diagnostic::error(
                    "basePath",
                    format!("`{shown}` holds `?` or `#`, which would start the query or fragment"),
                )
                .hint("percent-encode them (`%3F`, `%23`) if they belong to the path"),
            )
        }
        Ok(url) => url.path().to_owned(),
        Err(e) => {
            return Some(Diagnostic::error(
                "basePath",
                format!("`{shown}` is not a URL path: {e}"),
            ))
        }
    };
    (sent.trim_end_matches('/') != bp.trim_end_matches('/')).then(|| {
        Diagnostic::error(
            "basePath",
            format!(
                "`{shown}` would not be sent as written: the upstream would receive `{}`",
                sent.escape_debug()
            ),
        )
        .hint("percent-encode spaces, `?`, `#`, `\\` and non-ASCII characters (e.g. `%20`)")
    })
}

/// Headers that describe a connection or the message framing: the proxy strips or rewrites
/// them, so a credential put there could never reach the upstream.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "host",
    "content-length",
];

fn apikey_header(header: &str) -> Option<Diagnostic> {
    let shown = header.escape_debug();
    let Ok(name) = http::HeaderName::from_bytes(header.as_bytes()) else {
        return Some(
            Diagnostic::error(
                "header",
                format!("`{shown}` is not a valid HTTP header name"),
            )
            .hint("e.g. header: X-API-Key"),
        );
    };
    RESERVED_HEADERS.contains(&name.as_str()).then(|| {
        Diagnostic::error(
            "header",
            format!("`{header}` is a hop-by-hop or framing header; a credential there would never reach the upstream"),
        )
        .hint("use the header the upstream documents, e.g. X-API-Key")
    })
}

/// `*` = one segment, `**` = any depth; always absolute.
fn allowed_path(path: &str, glob: &str) -> Option<Diagnostic> {
    if !glob.starts_with('/') {
        return Some(
            Diagnostic::error(path, format!("`{glob}` must start with `/`"))
                .hint(format!("write `/{glob}`")),
        );
    }
    GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .err()
        .map(|e| {
            Diagnostic::error(path, format!("invalid path glob `{glob}`: {}", e.kind()))
                .hint("`*` matches one segment, `**` any depth, e.g. /api/v2/**")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_link;

    fn errors(yaml: &str) -> Vec<String> {
        validate_link(&parse_link("l.yaml", yaml).expect("parses"))
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|d| d.path)
            .collect()
    }

    #[test]
    fn a_rate_of_zero_is_no_limit_and_a_negative_one_is_refused() {
        let target = |rps: &str| {
            format!("targets:\n  - {{name: a, host: h, rateLimit: {{requestsPerSecond: {rps}}}}}\n")
        };
        assert!(errors(&target("0")).is_empty());
        assert_eq!(
            errors(&target("-1")),
            vec!["targets[0].rateLimit.requestsPerSecond"]
        );
    }

    #[test]
    fn link_problems_all_reported() {
        let errs = errors(
            r#"
targets:
  - name: crm
    host: https://api.example.com
    retry: {jitter: 1.5, maxAttempts: 0}
    auth: {type: bearer}
    allowedPaths: ["api/**", "/a/[b"]
  - name: crm
    protocol: kafka
    kafka: {cluster: nope, topic: t, key: {type: payload}}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "targets[0].host",
                "targets[0].auth",
                "targets[0].retry.maxAttempts",
                "targets[0].retry.jitter",
                "targets[0].allowedPaths[0]",
                "targets[0].allowedPaths[1]",
                "targets[1].name",
                "targets[1].kafka.cluster",
                "targets[1].kafka.key.field",
            ]
        );
    }

    /// `(path, message)` of each error of a single http target with `fields` (YAML flow
    /// mapping entries).
    fn target_errors(fields: &str) -> Vec<(String, String)> {
        let yaml = format!("targets:\n  - {{name: t, protocol: http, {fields}}}\n");
        validate_link(&parse_link("l.yaml", &yaml).expect("parses"))
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|d| (d.path, d.message))
            .collect()
    }

    #[test]
    fn app_targets_name_an_app_and_nothing_of_a_network_upstream() {
        let errors = |fields: &str| -> Vec<String> {
            let yaml = format!("targets:\n  - {{name: t, {fields}}}\n");
            validate_link(&parse_link("l.yaml", &yaml).expect("parses"))
                .into_iter()
                .filter(Diagnostic::is_error)
                .map(|d| d.path)
                .collect()
        };
        assert!(errors("protocol: app, app: enrich, basePath: /v1").is_empty());
        assert_eq!(errors("protocol: app"), ["targets[0].app"]);
        assert_eq!(errors("protocol: app, app: Not_A_Name"), ["targets[0].app"]);
        assert_eq!(
            errors("protocol: app, app: enrich, host: x.example.com, port: 80"),
            ["targets[0].host", "targets[0].port"]
        );
        assert_eq!(
            errors("protocol: https, host: x.example.com, app: enrich"),
            ["targets[0].app"]
        );
    }

    #[test]
    fn hosts_that_are_not_hosts_are_refused() {
        for host in [
            r#""api.example.com\r\nX-Injected: 1""#,
            r#""api.example.com\n""#,
            r#""api example.com""#,
            r#""api.example.com:8443""#,
            r#""user:pass@api.example.com""#,
            r#""::1""#,
            r#""api.example.com?x""#,
            r#""api.example.com#x""#,
            r#""[::1""#,
            r#""a\tb""#,
            r#""a%0d%0ab""#,
            r#""https://api.example.com""#,
        ] {
            let errors = target_errors(&format!("host: {host}"));
            assert_eq!(errors.len(), 1, "{host}: {errors:?}");
            assert_eq!(errors[0].0, "targets[0].host", "{host}");
            assert!(
                !errors[0].1.contains('\r') && !errors[0].1.contains('\n'),
                "control characters are shown escaped: {:?}",
                errors[0].1
            );
        }
        for host in [
            "api.example.com",
            "localhost",
            "127.0.0.1",
            "\"[::1]\"",
            "API.Example.COM",
            "xn--bcher-kva.example",
            "svc.ns.svc.cluster.local.",
        ] {
            assert_eq!(target_errors(&format!("host: {host}")), [], "{host}");
        }
    }

    #[test]
    fn base_paths_that_would_be_rewritten_are_refused() {
        for bp in [
            "/api/../admin",
            "/api/..",
            "/api/./v2",
            "/api/%2e%2e/admin",
            "/api/%2E%2E/admin",
            "/api/.%2e/admin",
            "/api/%2e./admin",
            "/api/%2e",
            "/api/v%2E2",
            r#""/api\\..\\admin""#,
            r#""/api/\r\nx""#,
            r#""/api/\tx""#,
            "/api?x=1",
            "\"/api#x\"",
            "\"/a b\"",
            "/caf\u{e9}",
            "api",
        ] {
            let errors = target_errors(&format!("host: h, basePath: {bp}"));
            assert_eq!(errors.len(), 1, "{bp}: {errors:?}");
            assert_eq!(errors[0].0, "targets[0].basePath", "{bp}");
            assert!(
                !errors[0].1.contains('\r') && !errors[0].1.contains('\n'),
                "{:?}",
                errors[0].1
            );
        }
        for bp in [
            "/",
            "/api/v2",
            "/api/v2/",
            "/a%20b",
            "/v1.2/x..y/.well-known",
            "/a;b=c/@x:y",
        ] {
            let errors = target_errors(&format!("host: h, basePath: \"{bp}\""));
            assert_eq!(errors, [], "{bp}");
        }
    }

    #[test]
    fn an_apikey_header_must_be_a_header_that_reaches_the_upstream() {
        let auth = |header: &str| {
            target_errors(&format!(
                "host: h, auth: {{type: apikey, header: \"{header}\", secretRef: {{envVar: K}}}}"
            ))
        };
        for header in [
            "Connection",
            "transfer-encoding",
            "TE",
            "Host",
            "Proxy-Authorization",
            "X API Key",
            "X-Key:",
        ] {
            let errors = auth(header);
            assert_eq!(errors.len(), 1, "{header}: {errors:?}");
            assert_eq!(errors[0].0, "targets[0].auth.header");
        }
        assert_eq!(auth("X-API-Key"), []);
        assert_eq!(auth("Authorization"), []);
    }

    #[test]
    fn connection_deadlines_are_positive_and_bounded() {
        assert!(errors("readHeaderTimeout: 2s\nidleTimeout: 75s\nbodyTimeout: 1h").is_empty());
        assert_eq!(
            errors("readHeaderTimeout: 0s\nidleTimeout: 2h\nbodyTimeout: 0ms"),
            vec!["readHeaderTimeout", "idleTimeout", "bodyTimeout"]
        );
    }

    #[test]
    fn defaults_are_valid() {
        assert!(errors("targets: []").is_empty());
        let cfg = parse_link("l", "{}").unwrap();
        assert_eq!(cfg.listen_addr, "127.0.0.1:3500");
    }
}
