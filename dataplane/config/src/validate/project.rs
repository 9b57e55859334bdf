//! A whole project: many flow files and one link file, checked together.

use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::flow::{FlowConfig, SourceSpec};
use crate::link::LinkConfig;
use crate::parse::{parse_file, Parsed};
use crate::validate::rules::normalize_listen_addr;
use crate::validate::{validate_flow, validate_link, Origin};

/// A config file's name (as shown to the user) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// A flow that parsed, with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedFlow {
    pub file: String,
    pub config: FlowConfig,
}

impl LoadedFlow {
    /// The flow's name (files always have one once validated).
    pub fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or_default()
    }
}

/// The link config that parsed, with its file.
#[derive(Debug, Clone)]
pub struct LoadedLink {
    pub file: String,
    pub config: LinkConfig,
}

/// Everything that parsed. Use it only when the accompanying diagnostics have no errors.
#[derive(Debug, Clone, Default)]
pub struct Project {
    pub flows: Vec<LoadedFlow>,
    pub link: Option<LoadedLink>,
    /// The apps files ([`check_apps`](super::check_apps)); [`check_project`] leaves it empty.
    pub apps: Vec<super::apps::LoadedApps>,
}

/// Parses and validates every file, returning what parsed cleanly plus **all** findings, each
/// located, sorted by file and line, at most [`MAX_PER_FILE`](crate::diagnostic::MAX_PER_FILE)
/// per file. A file with mistakes is still checked: what it says besides them is validated,
/// and takes part in the checks across files.
pub fn check_project(
    flow_files: &[SourceFile],
    link_file: Option<&SourceFile>,
) -> (Project, Diagnostics) {
    let mut project = Project::default();
    let mut diags = Diagnostics::default();

    let flows: Vec<Parsed<FlowConfig>> = flow_files
        .iter()
        .map(|f| parse_file::<FlowConfig>(&f.path, &f.text))
        .collect();
    for parsed in &flows {
        if let Some(config) = &parsed.config {
            diags.extend(
                validate_flow(config, Origin::File)
                    .into_iter()
                    .filter_map(|d| parsed.locate(d)),
            );
        }
        diags.extend(parsed.diagnostics.iter().cloned());
    }
    // Not a flow with a value these checks read set aside: its stand-in would be compared.
    let comparable: Vec<LoadedFlow> = flows
        .iter()
        .filter(|p| !CROSS_FLOW_FIELDS.iter().any(|f| p.set_aside_near(f)))
        .filter_map(|p| {
            Some(LoadedFlow {
                file: p.file().to_owned(),
                config: p.config.clone()?,
            })
        })
        .collect();
    for d in cross_flow(&comparable) {
        match flows.iter().find(|p| Some(p.file()) == d.file.as_deref()) {
            Some(parsed) => diags.extend(parsed.locate(d)),
            None => diags.push(d),
        }
    }
    project.flows = flows
        .into_iter()
        .filter(Parsed::is_clean)
        .filter_map(|p| {
            Some(LoadedFlow {
                file: p.file().to_owned(),
                config: p.config?,
            })
        })
        .collect();
    if let Some(f) = link_file {
        let parsed = parse_file::<LinkConfig>(&f.path, &f.text);
        if let Some(config) = &parsed.config {
            diags.extend(
                validate_link(config)
                    .into_iter()
                    .filter_map(|d| parsed.locate(d)),
            );
        }
        diags.extend(parsed.diagnostics.iter().cloned());
        if parsed.is_clean() {
            project.link = parsed.config.map(|config| LoadedLink {
                file: f.path.clone(),
                config,
            });
        }
    }
    diags.sort();
    diags.bound_per_file();
    (project, diags)
}

/// The fields [`cross_flow`] compares between flows.
const CROSS_FLOW_FIELDS: [&str; 7] = [
    "name",
    "source.type",
    "source.config.listenAddr",
    "source.config.path",
    "source.config.readHeaderTimeout",
    "source.config.idleTimeout",
    "source.config.bodyTimeout",
];

/// Checks spanning flows: unique names; one path per shared HTTP server; no gRPC/HTTP port clash.
fn cross_flow(flows: &[LoadedFlow]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    // normalised listen address → (kind, path, flow, file)
    let mut servers: HashMap<String, Vec<(&'static str, &str, &str, &str)>> = HashMap::new();
    for f in flows {
        if let Some(name) = f.config.name.as_deref() {
            if let Some(first) = names.insert(name, &f.file) {
                let mut d = Diagnostic::error(
                    "name",
                    format!("flow name `{name}` is also used in {first}"),
                )
                .hint(
                    "flow names must be unique: they name metrics, consumer groups and DLQ topics",
                );
                d.file = Some(f.file.clone());
                out.push(d);
            }
        }
        let (kind, addr, path) = match &f.config.source {
            SourceSpec::Http(c) => ("http", c.listen_addr.as_str(), c.path.as_str()),
            SourceSpec::Grpc(c) => ("grpc", c.listen_addr.as_str(), ""),
            SourceSpec::Kafka(_) => continue,
        };
        let Some(norm) = normalize_listen_addr(addr) else {
            continue;
        };
        // Port 0 asks the system for a fresh port: a gRPC server there shares nothing.
        let ephemeral = norm.ends_with(":0");
        let entry = servers.entry(norm).or_default();
        for (other_kind, other_path, other_flow, other_file) in entry.iter() {
            let clash = match (kind, *other_kind) {
                ("grpc", _) | (_, "grpc") if ephemeral => None,
                ("http", "http") => (path == *other_path).then(|| {
                    format!(
                        "HTTP path `{path}` on `{addr}` is also used by flow `{other_flow}` ({other_file})"
                    )
                }),
                _ => Some(format!(
                    "`{addr}` is also the listen address of {other_kind} flow `{other_flow}` ({other_file}); only HTTP flows can share a server"
                )),
            };
            if let Some(msg) = clash {
                let field = if kind == "http" && *other_kind == "http" {
                    "source.config.path"
                } else {
                    "source.config.listenAddr"
                };
                let mut d = Diagnostic::error(field, format!("flow `{}`: {msg}", f.name())).hint(
                    "give each flow on a shared listenAddr its own path, or use another port",
                );
                d.file = Some(f.file.clone());
                out.push(d);
            }
        }
        entry.push((kind, path, f.name(), &f.file));
    }
    out.extend(shared_server_timeouts(flows));
    out
}

/// HTTP flows on one listen address share one server, so they share its connection deadlines:
/// differing values would make one flow's setting silently apply to the other.
fn shared_server_timeouts(flows: &[LoadedFlow]) -> Vec<Diagnostic> {
    use crate::common::{DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_READ_HEADER_TIMEOUT};
    let mut out = Vec::new();
    let mut first: HashMap<String, (&LoadedFlow, [std::time::Duration; 3])> = HashMap::new();
    for f in flows {
        let SourceSpec::Http(c) = &f.config.source else {
            continue;
        };
        let Some(norm) = normalize_listen_addr(&c.listen_addr) else {
            continue;
        };
        let values = [
            c.read_header_timeout.unwrap_or(DEFAULT_READ_HEADER_TIMEOUT),
            c.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            c.body_timeout.unwrap_or(DEFAULT_BODY_TIMEOUT),
        ];
        let Some((other, theirs)) = first.get(&norm) else {
            first.insert(norm, (f, values));
            continue;
        };
        let names = ["readHeaderTimeout", "idleTimeout", "bodyTimeout"];
        for ((name, mine), theirs) in names.iter().zip(values).zip(theirs) {
            if mine != *theirs {
                let mut d = Diagnostic::error(
                    format!("source.config.{name}"),
                    format!(
                        "flow `{}`: {name} {} differs from the {} of flow `{}` ({}), which shares `{}`",
                        f.name(),
                        humantime::format_duration(mine),
                        humantime::format_duration(*theirs),
                        other.name(),
                        other.file,
                        c.listen_addr,
                    ),
                )
                .hint("flows on one listenAddr share a server: give them the same value");
                d.file = Some(f.file.clone());
                out.push(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_flow(name: &str, addr: &str, path: &str) -> SourceFile {
        SourceFile {
            path: format!("flows/{name}.yaml"),
            text: format!(
                "name: {name}\nsource:\n  type: http\n  config:\n    listenAddr: \"{addr}\"\n    path: {path}\nsink:\n  type: http\n  config:\n    url: http://svc:8080\n"
            ),
        }
    }

    #[test]
    fn flows_sharing_a_server_agree_on_its_deadlines() {
        let with = |name: &str, path: &str, lines: &str| SourceFile {
            path: format!("flows/{name}.yaml"),
            text: http_flow(name, ":8080", path)
                .text
                .replace("    path:", &format!("{lines}    path:")),
        };
        // Unset is the default: 10s is the same as not saying it.
        let (_, d) = check_project(
            &[
                with("a", "/a", "    readHeaderTimeout: 10s\n"),
                with("b", "/b", ""),
            ],
            None,
        );
        assert!(d.is_empty(), "{d}");
        let (_, d) = check_project(
            &[
                with("a", "/a", "    idleTimeout: 5s\n    bodyTimeout: 5s\n"),
                with("b", "/b", "    idleTimeout: 5s\n"),
                http_flow("c", ":9090", "/c"),
            ],
            None,
        );
        let paths: Vec<_> = d
            .errors()
            .map(|e| (e.path.as_str(), e.file.as_deref()))
            .collect();
        assert_eq!(
            paths,
            [("source.config.bodyTimeout", Some("flows/b.yaml"))],
            "{d}"
        );
        assert!(
            d.to_string()
                .contains("bodyTimeout 1m differs from the 5s of flow `a`"),
            "{d}"
        );
    }

    #[test]
    fn shared_port_different_paths_is_fine() {
        let (p, d) = check_project(
            &[
                http_flow("a", ":8080", "/a"),
                http_flow("b", "0.0.0.0:8080", "/b"),
            ],
            None,
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(p.flows.len(), 2);
    }

    #[test]
    fn path_collision_names_both_flows_with_location() {
        let (_, d) = check_project(
            &[http_flow("a", ":8080", "/x"), http_flow("b", ":8080", "/x")],
            None,
        );
        let e: Vec<_> = d.errors().collect();
        assert_eq!(e.len(), 1, "{d}");
        assert_eq!(e[0].file.as_deref(), Some("flows/b.yaml"));
        assert_eq!(e[0].line, Some(6));
        assert!(
            e[0].message.contains("flow `b`") && e[0].message.contains("flow `a`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn parse_and_semantic_errors_across_files_together() {
        let broken = SourceFile {
            path: "flows/x.yaml".into(),
            text: "name: x\nsource: 3\n".into(),
        };
        let link = SourceFile {
            path: "link/config.yaml".into(),
            text: "targets:\n  - name: a\n    retry:\n      jitter: 2\n    host: h\n".into(),
        };
        let (_, d) = check_project(
            &[
                broken,
                http_flow("dup", ":1", "/"),
                http_flow("dup", ":2", "/"),
            ],
            Some(&link),
        );
        let rendered: Vec<String> = d
            .errors()
            .map(|d| {
                format!(
                    "{}:{}:{}",
                    d.file.as_deref().unwrap(),
                    d.line.unwrap_or(0),
                    d.path
                )
            })
            .collect();
        // Sorted by file and line; `x.yaml` also lacks a sink (at its first key).
        assert_eq!(
            rendered,
            vec![
                "flows/dup.yaml:1:name",
                "flows/x.yaml:1:",
                "flows/x.yaml:2:source",
                "link/config.yaml:4:targets[0].retry.jitter"
            ]
        );
    }

    #[test]
    fn a_link_tracing_section_is_checked_where_it_stands() {
        let located = |text: &str| -> Vec<String> {
            let link = SourceFile {
                path: "link/config.yaml".into(),
                text: text.into(),
            };
            let (_, d) = check_project(&[], Some(&link));
            d.errors()
                .map(|d| format!("{}:{}: {}", d.line.unwrap_or(0), d.path, d.message))
                .collect()
        };
        let ok = "tracing:\n  endpoint: http://collector:4318\n  protocol: grpc\n  serviceName: orders\n  resourceAttributes:\n    deployment.environment.name: prod\n  sampler: parentbased_traceidratio\n  samplerArg: 0.25\n  timeout: 5s\n  enabled: true\n";
        assert_eq!(located(ok), Vec::<String>::new());
        let bad = located(
            "tracing:\n  endpoint: collector:4318\n  sampler: traceidratio\n  samplerArg: 2\n",
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].starts_with("2:tracing.endpoint: `collector:4318`"),
            "{bad:?}"
        );
        assert!(
            bad[1].starts_with("4:tracing.samplerArg: 2 is not a ratio"),
            "{bad:?}"
        );
        let bad = located("tracing:\n  protocol: http/json\n");
        assert!(
            bad.len() == 1
                && bad[0].starts_with("2:tracing.protocol")
                && bad[0].contains("http/json"),
            "{bad:?}"
        );
        let bad = located("tracing:\n  sampler: sometimes\n");
        assert!(
            bad.len() == 1
                && bad[0].starts_with("2:tracing.sampler")
                && bad[0].contains("sometimes"),
            "{bad:?}"
        );
        // Headers carry credentials: never a field.
        let bad = located("tracing:\n  headers:\n    authorization: Bearer x\n");
        assert!(bad.len() == 1 && bad[0].contains("headers"), "{bad:?}");
        assert!(!bad[0].contains("Bearer"), "{bad:?}");
    }

    #[test]
    fn a_file_with_type_errors_is_still_checked_within_and_across_files() {
        let broken = SourceFile {
            path: "flows/a.yaml".into(),
            text: "name: dup\nsource:\n  type: http\n  config:\n    listenAddr: \":8080\"\n    path: /x\n    maxBodySize: lots\ntransform:\n  fields:\n    total: data.price *\n    n: {a: 1}\nsink:\n  type: http\n  config:\n    url: not a url\n    retries: 2\n".into(),
        };
        let (project, d) = check_project(
            &[
                broken,
                http_flow("dup", ":8080", "/x"),
                http_flow("c", ":9090", "/c"),
            ],
            None,
        );
        let found: Vec<String> = d
            .iter()
            .map(|d| {
                format!(
                    "{}:{}:{} {}",
                    d.file.as_deref().unwrap(),
                    d.line.unwrap(),
                    d.column.unwrap(),
                    d.path
                )
            })
            .collect();
        pretty_assertions::assert_eq!(
            found,
            [
                "flows/a.yaml:7:18 source.config.maxBodySize",
                "flows/a.yaml:10:12 transform.fields.total",
                "flows/a.yaml:11:8 transform.fields.n",
                "flows/a.yaml:15:10 sink.config.url",
                "flows/a.yaml:16:5 sink.config.retries",
                // Across files: the name and the path on the shared server.
                "flows/dup.yaml:1:7 name",
                "flows/dup.yaml:6:11 source.config.path",
            ]
        );
        // Only files without parse findings are loaded to run.
        let loaded: Vec<_> = project.flows.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(loaded, ["flows/dup.yaml", "flows/c.yaml"]);
    }

    #[test]
    fn a_set_aside_source_is_not_compared_across_files() {
        // `path: [x]` is set aside; the default path `/` must not collide with b's `/`.
        let broken = SourceFile {
            path: "flows/a.yaml".into(),
            text: "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8080\"\n    path: [x]\nsink:\n  type: http\n  config:\n    url: http://svc\n".into(),
        };
        let (_, d) = check_project(&[broken, http_flow("b", ":8080", "/")], None);
        let paths: Vec<_> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["source.config.path"], "{d}");
    }
}
