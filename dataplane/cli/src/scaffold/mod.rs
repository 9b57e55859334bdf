//! The project `fiso init` writes: flows, link config, Prometheus config, a sample service and,
//! with `--k8s`, the same flows and targets as Kubernetes manifests.
//!
//! Generation is pure (options → files) so every combination is tested to pass `fiso validate`.

pub(crate) mod k8s;
mod service;
mod templates;

use std::fmt;

use clap::ValueEnum;

/// The broker a Kafka-source project's flow reads from.
pub const KAFKA_BROKERS: &str = "localhost:9092";
/// The topic it reads.
pub const KAFKA_TOPIC: &str = "orders";

/// Where events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    Http,
    Kafka,
}

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    Http,
    Temporal,
}

/// Transform style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransformKind {
    None,
    Fields,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Http => "http",
            SourceKind::Kafka => "kafka",
        })
    }
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkKind::Http => "http",
            SinkKind::Temporal => "temporal",
        })
    }
}

/// Every choice `fiso init` asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub source: SourceKind,
    pub sink: SinkKind,
    pub transform: TransformKind,
    pub cloudevents: bool,
    pub k8s: bool,
}

impl Default for Options {
    /// `fiso init --defaults`: HTTP → HTTP, no transform.
    fn default() -> Self {
        Options {
            source: SourceKind::Http,
            sink: SinkKind::Http,
            transform: TransformKind::None,
            cloudevents: false,
            k8s: false,
        }
    }
}

impl Options {
    /// `example-flow` for the default scaffold, `<source>-<sink>-flow` otherwise (as upstream).
    pub fn flow_name(&self) -> String {
        if self.source == SourceKind::Http && self.sink == SinkKind::Http {
            "example-flow".to_owned()
        } else {
            format!("{}-{}-flow", self.source, self.sink)
        }
    }
}

/// One file of the scaffold, relative to the directory `fiso init` runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub contents: String,
    pub executable: bool,
}

impl File {
    fn new(path: impl Into<String>, contents: impl Into<String>) -> Self {
        File {
            path: path.into(),
            contents: contents.into(),
            executable: false,
        }
    }
}

/// The whole scaffold for `opts`.
pub fn generate(opts: &Options) -> Vec<File> {
    let name = opts.flow_name();
    let mut files = vec![
        File::new(
            format!("fiso/flows/{name}.yaml"),
            templates::flow(opts, &name),
        ),
        File::new("fiso/link/config.yaml", templates::LINK_CONFIG),
        File::new("fiso/prometheus.yml", templates::prometheus()),
        File::new("fiso/sample-event.json", templates::SAMPLE_EVENT),
    ];
    files.extend(service::files(opts));
    if opts.k8s {
        files.extend(k8s::files(opts, &files));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use fiso_config::validate::{check_project, SourceFile};

    fn all_options() -> Vec<Options> {
        let mut out = Vec::new();
        for source in [SourceKind::Http, SourceKind::Kafka] {
            for sink in [SinkKind::Http, SinkKind::Temporal] {
                for transform in [TransformKind::None, TransformKind::Fields] {
                    for cloudevents in [false, true] {
                        for k8s in [false, true] {
                            out.push(Options {
                                source,
                                sink,
                                transform,
                                cloudevents,
                                k8s,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_combination_validates_without_findings() {
        for opts in all_options() {
            let files = generate(&opts);
            let flows: Vec<SourceFile> = files
                .iter()
                .filter(|f| f.path.starts_with("fiso/flows/"))
                .map(|f| SourceFile {
                    path: f.path.clone(),
                    text: f.contents.clone(),
                })
                .collect();
            let link = files
                .iter()
                .find(|f| f.path == "fiso/link/config.yaml")
                .map(|f| SourceFile {
                    path: f.path.clone(),
                    text: f.contents.clone(),
                });
            assert_eq!(flows.len(), 1);
            let (project, diags) = check_project(&flows, link.as_ref());
            assert!(diags.is_empty(), "{opts:?}:\n{diags}");
            assert_eq!(project.flows[0].name(), opts.flow_name());
        }
    }

    #[test]
    fn k8s_manifests_hold_the_same_configs() {
        for opts in all_options().into_iter().filter(|o| o.k8s) {
            let files = generate(&opts);
            let m = files
                .iter()
                .find(|f| f.path == "fiso/k8s/fiso-resources.yaml")
                .expect("manifests");
            let parsed = fiso_config::manifests::from_yaml(&m.contents).expect("manifests parse");
            assert_eq!(parsed.flows.len(), 1);
            assert_eq!(
                parsed.flows[0].metadata.name.as_deref(),
                Some(opts.flow_name().as_str())
            );
            assert!(files.iter().any(|f| f.path == "fiso/k8s/deployment.yaml"));
        }
    }

    /// Prometheus scrapes what `fiso dev` serves by default: flows and link on one endpoint.
    #[test]
    fn prometheus_scrapes_where_fiso_dev_serves_metrics() {
        use clap::CommandFactory;
        let cli = crate::Cli::command();
        let dev = cli.find_subcommand("dev").expect("fiso dev");
        let default = dev
            .get_arguments()
            .find(|a| a.get_id() == "metrics_addr")
            .and_then(|a| a.get_default_values().first())
            .and_then(|v| v.to_str())
            .expect("--metrics-addr has a default")
            .to_owned();
        let port = default.rsplit(':').next().unwrap();
        let file = generate(&Options::default())
            .into_iter()
            .find(|f| f.path == "fiso/prometheus.yml")
            .unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&file.contents).unwrap();
        let jobs = doc["scrape_configs"].as_sequence().unwrap();
        let targets: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j["static_configs"].as_sequence().unwrap())
            .flat_map(|c| c["targets"].as_sequence().unwrap())
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(targets, vec![format!("localhost:{port}")]);
    }

    #[test]
    fn default_scaffold_layout() {
        let paths: Vec<String> = generate(&Options::default())
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                "fiso/flows/example-flow.yaml",
                "fiso/link/config.yaml",
                "fiso/prometheus.yml",
                "fiso/sample-event.json",
                "fiso/user-service/main.py",
                "fiso/user-service/Dockerfile",
                "fiso/user-service/README.md",
            ]
        );
    }
}
