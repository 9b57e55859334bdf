//! Checks of apps files (`fiso/apps/*.yaml`, `fiso wasmer --config`, the all-in-one `wasmer:`).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::apps::{AppConfig, AppsConfig, Execution, MAX_MEMORY_MB, MAX_POOL_SIZE};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::parse::parse_file;
use crate::validate::project::SourceFile;
use crate::validate::rules;

/// An apps file that parsed, with its name.
#[derive(Debug, Clone)]
pub struct LoadedApps {
    pub file: String,
    pub config: AppsConfig,
}

/// Validates one apps file; paths are relative to the document (`apps[0].port`).
pub fn validate_apps(cfg: &AppsConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let range = cfg.default_port_range;
    if range.min == 0 || range.min > range.max {
        out.push(
            Diagnostic::error(
                "defaultPortRange",
                format!("{}-{} is not a port range", range.min, range.max),
            )
            .hint("min and max are inclusive, 1 <= min <= max, e.g. {min: 9000, max: 9999}"),
        );
    }
    if cfg.listen_host != "localhost" && cfg.listen_host.parse::<IpAddr>().is_err() {
        out.push(
            Diagnostic::error(
                "listenHost",
                format!("`{}` is not an IP address", cfg.listen_host),
            )
            .hint("e.g. 127.0.0.1 (default: apps reachable only through Fiso) or 0.0.0.0"),
        );
    }
    out.extend(rules::listen_addr("metricsAddr", &cfg.metrics_addr));
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ports: HashMap<u16, usize> = HashMap::new();
    for (i, app) in cfg.apps.iter().enumerate() {
        let prefix = format!("apps[{i}]");
        if let Some(first) = names.insert(&app.name, i) {
            out.push(
                Diagnostic::error(
                    format!("{prefix}.name"),
                    format!("app name `{}` is already used by apps[{first}]", app.name),
                )
                .hint("app names label metrics and are what flows and link targets name"),
            );
        }
        if app.execution == Execution::LongRunning && app.port != 0 {
            if let Some(first) = ports.insert(app.port, i) {
                out.push(Diagnostic::error(
                    format!("{prefix}.port"),
                    format!("port {} is already used by apps[{first}]", app.port),
                ));
            }
        }
        out.extend(validate_app(app).into_iter().map(|d| d.under(&prefix)));
    }
    out
}

/// Validates one app.
pub fn validate_app(app: &AppConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    out.extend(rules::dns_label("name", "app name", &app.name));
    if app.module_config_map.is_some() {
        out.push(
            Diagnostic::error(
                "moduleConfigMap",
                "only a WasmApp resource takes its module from a ConfigMap",
            )
            .hint("in a file, give the module's path: module: /apps/api.wasm"),
        );
    } else if app.module.trim().is_empty() {
        out.push(
            Diagnostic::error("module", "the app has no module")
                .hint("e.g. module: /apps/api.wasm"),
        );
    }
    if let Some(mb) = app.memory_mb {
        if mb == 0 || mb > MAX_MEMORY_MB {
            out.push(
                Diagnostic::error("memoryMB", format!("{mb} MiB is out of range")).hint(format!(
                    "1 to {MAX_MEMORY_MB} (a wasm32 memory is at most 4 GiB)"
                )),
            );
        }
    }
    out.extend(rules::nonzero_duration("timeout", app.timeout));
    out.extend(rules::nonzero_duration(
        "healthCheckInterval",
        app.health_check_interval,
    ));
    if let Some(path) = &app.health_check {
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push(
                Diagnostic::error("healthCheck", format!("`{path}` is not an HTTP path"))
                    .hint("e.g. healthCheck: /health"),
            );
        }
    }
    if let Some(n) = app.pool_size {
        if n == 0 || n > MAX_POOL_SIZE {
            out.push(
                Diagnostic::error("poolSize", format!("{n} is out of range"))
                    .hint(format!("1 to {MAX_POOL_SIZE}")),
            );
        }
    }
    match app.execution {
        Execution::LongRunning => {
            if app.pool_size.is_some() {
                out.push(Diagnostic::warning(
                    "poolSize",
                    "`poolSize` applies to `execution: pooled`; a long-running app is one instance",
                ));
            }
        }
        Execution::Pooled | Execution::PerRequest => {
            let what = app.execution.as_str();
            for (field, set) in [
                ("port", app.port != 0),
                ("healthCheck", app.health_check.is_some()),
                ("healthCheckInterval", app.health_check_interval.is_some()),
            ] {
                if set {
                    out.push(Diagnostic::warning(
                        field,
                        format!("`{field}` applies to `execution: longRunning`; a {what} app runs per request over stdin/stdout and it is ignored"),
                    ));
                }
            }
            if app.execution == Execution::PerRequest && app.pool_size.is_some() {
                out.push(Diagnostic::warning(
                    "poolSize",
                    "`poolSize` of a perRequest app only bounds concurrent runs; use `execution: pooled` to keep instances prepared",
                ));
            }
        }
    }
    for key in app.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            out.push(Diagnostic::error(
                format!("env.{key}"),
                "an environment variable name must be non-empty without `=`",
            ));
        } else if key == "PORT" || key == "FISO_APP_NAME" {
            out.push(Diagnostic::warning(
                format!("env.{key}"),
                format!("`{key}` is set by Fiso and this value is replaced"),
            ));
        }
    }
    for (i, p) in app.preopens.0.iter().enumerate() {
        if p.host_path.is_empty() {
            out.push(Diagnostic::error(
                format!("preopens[{i}].hostPath"),
                "the host path is empty",
            ));
        }
        if !p.guest_path.starts_with('/') {
            out.push(
                Diagnostic::error(
                    format!("preopens[{i}].guestPath"),
                    format!("`{}` is not an absolute guest path", p.guest_path),
                )
                .hint("e.g. guestPath: /data"),
            );
        }
    }
    out
}

/// Parses and validates apps files together (names are unique across files), each finding
/// located in its file.
pub fn check_apps(files: &[SourceFile]) -> (Vec<LoadedApps>, Diagnostics) {
    let mut loaded = Vec::new();
    let mut diags = Diagnostics::default();
    let mut names: HashMap<String, String> = HashMap::new();
    for f in files {
        let parsed = parse_file::<AppsConfig>(&f.path, &f.text);
        diags.extend(parsed.diagnostics.iter().cloned());
        let Some(config) = &parsed.config else {
            continue;
        };
        let mut found = validate_apps(config);
        for (i, app) in config.apps.iter().enumerate() {
            if let Some(first) = names.insert(app.name.clone(), f.path.clone()) {
                if first != f.path {
                    found.push(Diagnostic::error(
                        format!("apps[{i}].name"),
                        format!("app name `{}` is also used in {first}", app.name),
                    ));
                }
            }
        }
        diags.extend(found.into_iter().filter_map(|d| parsed.locate(d)));
        if parsed.is_clean() {
            loaded.push(LoadedApps {
                file: f.path.clone(),
                config: config.clone(),
            });
        }
    }
    diags.sort();
    diags.bound_per_file();
    (loaded, diags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn check(text: &str) -> Vec<Diagnostic> {
        validate_apps(&parse::<AppsConfig>("a.yaml", text).unwrap())
    }

    #[test]
    fn valid_file_has_no_findings() {
        assert!(check("apps:\n  - {name: api, module: /a.wasm, healthCheck: /health}\n  - {name: fn, module: /f.wasm, execution: pooled, poolSize: 2}\n").is_empty());
    }

    #[test]
    fn bad_values_are_errors_with_paths() {
        let ds = check("defaultPortRange: {min: 10, max: 5}\nlistenHost: nowhere\napps:\n  - {name: Api, module: '', memoryMB: 5000, timeout: 0s, healthCheck: health, poolSize: 0, preopens: [{hostPath: /x, guestPath: y}]}\n  - {name: b, module: /b.wasm, port: 9000}\n  - {name: b, module: /c.wasm, port: 9000}\n");
        let paths: Vec<&str> = ds
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.path.as_str())
            .collect();
        for p in [
            "defaultPortRange",
            "listenHost",
            "apps[0].name",
            "apps[0].module",
            "apps[0].memoryMB",
            "apps[0].timeout",
            "apps[0].healthCheck",
            "apps[0].poolSize",
            "apps[0].preopens[0].guestPath",
            "apps[2].name",
            "apps[2].port",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn long_running_fields_on_a_pooled_app_warn() {
        let ds = check("apps:\n  - {name: f, module: /f.wasm, execution: perRequest, port: 8080, healthCheck: /h, env: {PORT: '1'}}\n");
        assert!(ds.iter().all(|d| !d.is_error()), "{ds:?}");
        let paths: Vec<&str> = ds.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["apps[0].port", "apps[0].healthCheck", "apps[0].env.PORT"]
        );
    }

    #[test]
    fn names_are_unique_across_files() {
        let f = |p: &str| SourceFile {
            path: p.into(),
            text: "apps:\n  - {name: api, module: /a.wasm}\n".into(),
        };
        let (loaded, ds) = check_apps(&[f("one.yaml"), f("two.yaml")]);
        assert_eq!(loaded.len(), 2);
        let e: Vec<_> = ds.errors().collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].file.as_deref(), Some("two.yaml"));
        assert_eq!(e[0].line, Some(2));
    }
}
