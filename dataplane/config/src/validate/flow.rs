//! Checks of one flow.

use crate::cel_check;
use crate::diagnostic::Diagnostic;
use crate::flow::{
    CelBudget, CommitPolicy, DeliveryOrdering, ErrorHandling, FlowConfig, InterceptorSpec,
    SinkSpec, SourceSpec, TemporalAuth, TemporalMode, DEFAULT_INITIAL_INTERVAL,
    DEFAULT_MAX_INTERVAL, MAX_IN_FLIGHT_PER_PARTITION,
};
use crate::kafka::KafkaConfig;
use crate::validate::rules;
use crate::validate::Origin;

/// Validates one flow; paths are relative to the flow document (`sink.config.url`).
pub fn validate_flow(flow: &FlowConfig, origin: Origin) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match (&flow.name, origin) {
        (Some(name), _) => out.extend(rules::dns_label("name", "flow name", name)),
        (None, Origin::File) => {
            out.push(Diagnostic::error("name", "the flow has no name").hint(
                "add `name: my-flow` (it names metrics, the consumer group and the DLQ topic)",
            ))
        }
        (None, Origin::Resource) => {}
    }
    let kafka = flow.kafka.as_ref();
    if let Some(k) = kafka {
        out.extend(rules::kafka_clusters("kafka", k));
    }
    out.extend(source(&flow.source, kafka));
    if let Some(t) = &flow.transform {
        if t.fields.is_empty() {
            out.push(
                Diagnostic::error(
                    "transform.fields",
                    "a transform needs at least one field (as upstream)",
                )
                .hint("add fields, or remove `transform:` to pass the payload through unchanged"),
            );
        }
        for (key, expr) in &t.fields {
            out.extend(rules::cel(&format!("transform.fields.{key}"), expr));
        }
    }
    if let Some(ce) = &flow.cloudevents {
        for (attr, expr) in ce.entries() {
            out.extend(cloudevent_attribute(attr, expr));
        }
    }
    for (i, ic) in flow.interceptors.iter().enumerate() {
        out.extend(interceptor(&format!("interceptors[{i}].config"), ic));
    }
    out.extend(sink(&flow.sink, kafka));
    out.extend(error_handling(flow, kafka));
    if let Some(budget) = &flow.cel_budget {
        out.extend(cel_budget(budget));
    }
    out
}

/// Each `celBudget` field above zero and under its ceiling: a budget is a bound, not a switch.
fn cel_budget(budget: &CelBudget) -> Vec<Diagnostic> {
    let fields = [
        ("iterations", budget.iterations, CelBudget::MAX_ITERATIONS),
        ("elements", budget.elements, CelBudget::MAX_ELEMENTS),
        ("bytes", budget.bytes.map(|b| b.0), CelBudget::MAX_BYTES),
    ];
    fields
        .into_iter()
        .filter_map(|(field, value, max)| {
            let value = value?;
            let path = format!("celBudget.{field}");
            if value == 0 {
                Some(Diagnostic::error(path, "must be above 0"))
            } else if value > max {
                Some(
                    Diagnostic::error(path, format!("{value} is above the ceiling of {max}"))
                        .hint("split the work over several flows or fields"),
                )
            } else {
                None
            }
        })
        .collect()
}

fn source(src: &SourceSpec, kafka: Option<&KafkaConfig>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match src {
        SourceSpec::Http(c) => {
            out.extend(rules::listen_addr(
                "source.config.listenAddr",
                &c.listen_addr,
            ));
            if !c.path.starts_with('/') {
                out.push(
                    Diagnostic::error(
                        "source.config.path",
                        format!("path `{}` must start with `/`", c.path),
                    )
                    .hint(format!("write `/{}`", c.path)),
                );
            }
            if c.max_body_size.is_some_and(|s| s.bytes() == 0) {
                out.push(Diagnostic::error(
                    "source.config.maxBodySize",
                    "must be greater than zero",
                ));
            }
            out.extend(rules::connection_timeouts(
                "source.config.",
                c.read_header_timeout,
                c.idle_timeout,
                c.body_timeout,
            ));
        }
        SourceSpec::Kafka(c) => {
            out.extend(rules::cluster_ref(
                "source.config.cluster",
                &c.cluster,
                kafka,
            ));
            if c.topic.trim().is_empty() {
                out.push(Diagnostic::error("source.config.topic", "topic is empty"));
            }
            if c.commit_batch_size == Some(0) {
                out.push(Diagnostic::error(
                    "source.config.commitBatchSize",
                    "must be at least 1",
                ));
            }
            match c.max_in_flight_per_partition {
                Some(0) => out.push(Diagnostic::error(
                    "source.config.maxInFlightPerPartition",
                    "must be at least 1",
                )),
                Some(n) if n > MAX_IN_FLIGHT_PER_PARTITION => out.push(Diagnostic::error(
                    "source.config.maxInFlightPerPartition",
                    format!("must be at most {MAX_IN_FLIGHT_PER_PARTITION}"),
                )),
                _ => {}
            }
            out.extend(rules::nonzero_duration(
                "source.config.commitInterval",
                c.commit_interval,
            ));
            for key in c.consumer_properties.keys() {
                if matches!(
                    key.as_str(),
                    "group.id" | "bootstrap.servers" | "enable.auto.commit"
                ) {
                    out.push(
                        Diagnostic::error(
                            format!("source.config.consumerProperties.{key}"),
                            format!("`{key}` is managed by Fiso and cannot be overridden"),
                        )
                        .hint("use `consumerGroup` / `kafka.clusters` instead"),
                    );
                }
            }
        }
        SourceSpec::Grpc(c) => {
            out.extend(rules::listen_addr(
                "source.config.listenAddr",
                &c.listen_addr,
            ));
            if c.max_message_size.is_some_and(|s| s.bytes() == 0) {
                out.push(Diagnostic::error(
                    "source.config.maxMessageSize",
                    "must be greater than zero",
                ));
            }
        }
    }
    out
}

fn cloudevent_attribute(attr: &str, expr: &str) -> Option<Diagnostic> {
    let path = format!("cloudevents.{attr}");
    if let Some(literal) = cel_check::literal_fallback(expr) {
        return Some(
            Diagnostic::warning(
                path,
                format!("`{expr}` is not a CEL expression over the event; it is used as the literal string \"{literal}\""),
            )
            .hint(format!("quote it to make that explicit: {attr}: '\"{literal}\"'")),
        );
    }
    if attr == "type" && matches!(expr.trim(), "\"\"" | "''") {
        return Some(
            Diagnostic::error(path, "the CloudEvent type must not be empty")
                .hint("e.g. type: '\"order.created\"'"),
        );
    }
    if let Some(problem) = rules::cel(&path, expr) {
        return Some(problem);
    }
    let type_name = (attr != "data")
        .then(|| cel_check::evident_non_string(expr))
        .flatten()?;
    Some(
        Diagnostic::warning(
            path,
            format!("`{expr}` gives a {type_name}, not a string; each event gets its string form, as upstream"),
        )
        .hint(format!("say so with string(...): {attr}: 'string({expr})'")),
    )
}

fn interceptor(path: &str, ic: &InterceptorSpec) -> Vec<Diagnostic> {
    match ic {
        InterceptorSpec::Wasm(w) => rules::wasm_module(path, w),
        InterceptorSpec::WasmerApp(a) => {
            let mut out: Vec<Diagnostic> =
                rules::dns_label(&format!("{path}.app"), "app name", &a.app)
                    .into_iter()
                    .collect();
            if !a.path().starts_with('/') || a.path().chars().any(char::is_whitespace) {
                out.push(
                    Diagnostic::error(
                        format!("{path}.path"),
                        format!("`{}` is not an HTTP path", a.path()),
                    )
                    .hint("e.g. path: /process"),
                );
            }
            out
        }
    }
}

fn sink(sink: &SinkSpec, kafka: Option<&KafkaConfig>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match sink {
        SinkSpec::Http(c) => {
            out.extend(rules::http_url("sink.config.url", &c.url));
            let method_ok =
                !c.method.is_empty() && c.method.chars().all(|ch| ch.is_ascii_uppercase());
            if !method_ok {
                out.push(
                    Diagnostic::error(
                        "sink.config.method",
                        format!("`{}` is not an HTTP method", c.method),
                    )
                    .hint("use an upper-case method such as POST or PUT"),
                );
            }
            out.extend(rules::nonzero_duration("sink.config.timeout", c.timeout));
            if c.max_response_body_size.is_some_and(|s| s.bytes() == 0) {
                out.push(Diagnostic::error(
                    "sink.config.maxResponseBodySize",
                    "must be greater than zero",
                ));
            }
        }
        SinkSpec::Grpc(c) => {
            let addr = c
                .address
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            out.extend(rules::host_port(
                "sink.config.address",
                addr,
                "event-service:50051",
            ));
            out.extend(rules::nonzero_duration("sink.config.timeout", c.timeout));
            if let Some(t) = &c.tls {
                out.extend(rules::tls("sink.config.tls", t));
            }
        }
        SinkSpec::Temporal(c) => {
            out.extend(rules::host_port(
                "sink.config.hostPort",
                &c.host_port,
                "temporal:7233",
            ));
            for (field, value) in [
                ("taskQueue", &c.task_queue),
                ("workflowType", &c.workflow_type),
            ] {
                if value.trim().is_empty() {
                    out.push(Diagnostic::error(
                        format!("sink.config.{field}"),
                        "must not be empty",
                    ));
                }
            }
            if c.mode == Some(TemporalMode::Signal)
                && c.signal_name.as_deref().unwrap_or("").is_empty()
            {
                out.push(
                    Diagnostic::error(
                        "sink.config.signalName",
                        "`mode: signal` needs a signal name",
                    )
                    .hint("add `signalName: order-updated`"),
                );
            }
            if let Some(expr) = &c.workflow_id_expr {
                out.extend(workflow_id_template("sink.config.workflowIdExpr", expr));
            }
            for (i, p) in c.params.iter().enumerate() {
                out.extend(rules::cel(
                    &format!("sink.config.params[{i}].expr"),
                    &p.expr,
                ));
            }
            if let Some(t) = &c.tls {
                out.extend(rules::tls("sink.config.tls", t));
            }
            if let Some(a) = &c.auth {
                out.extend(temporal_auth("sink.config.auth", a));
            }
        }
        SinkSpec::Kafka(c) => {
            out.extend(rules::cluster_ref("sink.config.cluster", &c.cluster, kafka));
            if c.topic.trim().is_empty() {
                out.push(Diagnostic::error("sink.config.topic", "topic is empty"));
            }
            if let Some(key) = &c.key {
                out.extend(rules::cel("sink.config.key", key));
            }
        }
    }
    out
}

/// Exactly one credential: an API key (from env or file) or `oidc` (with exactly one secret).
fn temporal_auth(path: &str, a: &TemporalAuth) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let api_key = a.api_key_env.is_some() || a.api_key_file.is_some();
    let Some(o) = &a.oidc else {
        if a.api_key_env.is_some() == a.api_key_file.is_some() {
            out.push(
                Diagnostic::error(path, "set exactly one of `apiKeyEnv` or `apiKeyFile`")
                    .hint("or use `oidc:` for OAuth2 client credentials"),
            );
        }
        return out;
    };
    if api_key {
        out.push(
            Diagnostic::error(
                path,
                "`oidc` and `apiKeyEnv` / `apiKeyFile` exclude each other",
            )
            .hint("keep one way of authenticating"),
        );
    }
    let oidc = format!("{path}.oidc");
    match url::Url::parse(&o.token_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            if u.scheme() == "http" {
                out.push(Diagnostic::warning(
                    format!("{oidc}.tokenURL"),
                    "the client secret and tokens travel in clear text over http",
                ));
            }
        }
        _ => out.push(
            Diagnostic::error(
                format!("{oidc}.tokenURL"),
                format!("`{}` is not an http(s) URL", o.token_url),
            )
            .hint("e.g. https://idp.example.com/oauth2/token"),
        ),
    }
    if o.client_id.trim().is_empty() {
        out.push(Diagnostic::error(
            format!("{oidc}.clientID"),
            "must not be empty",
        ));
    }
    if o.client_secret_env.is_some() == o.client_secret_file.is_some() {
        out.push(
            Diagnostic::error(
                oidc,
                "set exactly one of `clientSecretEnv` or `clientSecretFile`",
            )
            .hint("e.g. clientSecretFile: /var/run/secrets/temporal/client-secret"),
        );
    }
    out
}

/// `order-{{.data.orderId}}`: balanced `{{.path}}` placeholders with dotted identifier paths.
fn workflow_id_template(path: &str, expr: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push(
                Diagnostic::error(path, format!("unclosed `{{{{` in `{expr}`"))
                    .hint("placeholders look like {{.data.orderId}}"),
            );
            return out;
        };
        let inner = after[..end].trim();
        let valid = inner.strip_prefix('.').is_some_and(|p| {
            !p.is_empty()
                && p.split('.').all(|seg| {
                    !seg.is_empty()
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                })
        });
        if !valid {
            out.push(
                Diagnostic::error(
                    path,
                    format!("`{{{{{inner}}}}}` is not a field placeholder"),
                )
                .hint("use {{.id}}, {{.type}} or {{.data.field}}"),
            );
        }
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        out.push(Diagnostic::error(path, format!("stray `}}}}` in `{expr}`")));
    }
    if expr.trim().is_empty() {
        out.push(Diagnostic::error(path, "workflow id template is empty"));
    }
    out
}

fn error_handling(flow: &FlowConfig, kafka: Option<&KafkaConfig>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(eh) = &flow.error_handling else {
        return out;
    };
    let eh: &ErrorHandling = eh;
    out.extend(rules::intervals(
        "errorHandling",
        eh.initial_interval,
        eh.max_interval,
        DEFAULT_INITIAL_INTERVAL,
        DEFAULT_MAX_INTERVAL,
    ));
    if let Some(topic) = &eh.dead_letter_topic {
        if topic.trim().is_empty() {
            out.push(Diagnostic::error(
                "errorHandling.deadLetterTopic",
                "topic is empty",
            ));
        }
    }
    let source_is_kafka = matches!(flow.source, SourceSpec::Kafka(_));
    if let Some(cluster) = &eh.dead_letter_cluster {
        out.extend(rules::cluster_ref(
            "errorHandling.deadLetterCluster",
            cluster,
            kafka,
        ));
    } else if eh.dead_letter_topic.is_some() && !source_is_kafka {
        let count = kafka.map(|k| k.clusters.len()).unwrap_or(0);
        if count != 1 {
            out.push(
                Diagnostic::error(
                    "errorHandling.deadLetterTopic",
                    format!(
                        "a {} source has no Kafka cluster to dead-letter to ({count} clusters defined)",
                        flow.source.kind()
                    ),
                )
                .hint("define one cluster under `kafka.clusters` or set `errorHandling.deadLetterCluster`"),
            );
        }
    }
    let policy = eh.commit_policy.unwrap_or_default();
    if policy != CommitPolicy::SinkOrDlq && !source_is_kafka {
        out.push(
            Diagnostic::error(
                "errorHandling.commitPolicy",
                format!(
                    "commitPolicy applies to Kafka sources; this flow's source is {}",
                    flow.source.kind()
                ),
            )
            .hint("remove `commitPolicy`"),
        );
    }
    if policy == CommitPolicy::KafkaTransaction {
        if let SourceSpec::Kafka(src) = &flow.source {
            if src.ordering.unwrap_or_default() != DeliveryOrdering::Partition {
                out.push(
                    Diagnostic::error(
                        "source.config.ordering",
                        "kafka_transaction commits each record's output together with its \
                         offset, which needs the records of a partition delivered in order",
                    )
                    .hint("remove `ordering` (the default is `partition`)"),
                );
            }
        }
        if !matches!(flow.sink, SinkSpec::Kafka(_)) {
            out.push(
                Diagnostic::error(
                    "errorHandling.commitPolicy",
                    "kafka_transaction needs a Kafka source and a Kafka sink",
                )
                .hint("use `sink_or_dlq` for other sinks"),
            );
        }
        if eh.transactional_id.as_deref().unwrap_or("").is_empty() {
            out.push(
                Diagnostic::error(
                    "errorHandling.transactionalId",
                    "kafka_transaction needs a transactionalId",
                )
                .hint("add `transactionalId: <flow>-tx` (unique per flow instance)"),
            );
        }
    } else if eh.transactional_id.is_some() {
        out.push(Diagnostic::warning(
            "errorHandling.transactionalId",
            "ignored unless commitPolicy is kafka_transaction",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_flow;

    fn findings(yaml: &str) -> Vec<Diagnostic> {
        validate_flow(&parse_flow("f.yaml", yaml).expect("parses"), Origin::File)
    }

    fn paths(ds: &[Diagnostic]) -> Vec<&str> {
        ds.iter()
            .filter(|d| d.is_error())
            .map(|d| d.path.as_str())
            .collect()
    }

    #[test]
    fn cel_budget_fields_are_above_zero_and_at_most_their_ceiling() {
        let flow = |budget: &str| {
            findings(&format!(
                "name: f\nsource:\n  type: http\n  config:\n    listenAddr: \":8080\"\n    \
                 path: /f\nsink:\n  type: http\n  config:\n    url: http://x\n\
                 celBudget:\n{budget}"
            ))
        };
        let at_ceiling = flow(&format!(
            "  iterations: {}\n  elements: {}\n  bytes: {}\n",
            CelBudget::MAX_ITERATIONS,
            CelBudget::MAX_ELEMENTS,
            CelBudget::MAX_BYTES
        ));
        assert_eq!(paths(&at_ceiling), Vec::<&str>::new());
        let beyond = flow(&format!(
            "  iterations: {}\n  elements: 0\n  bytes: {}\n",
            CelBudget::MAX_ITERATIONS + 1,
            CelBudget::MAX_BYTES + 1
        ));
        assert_eq!(
            paths(&beyond),
            [
                "celBudget.iterations",
                "celBudget.elements",
                "celBudget.bytes"
            ]
        );
    }

    #[test]
    fn max_in_flight_per_partition_is_between_one_and_its_ceiling() {
        let flow = |n: u32| {
            findings(&format!(
                "name: f\nkafka:\n  clusters:\n    main:\n      brokers: [\"k:9092\"]\n\
                 source:\n  type: kafka\n  config:\n    cluster: main\n    topic: t\n\
                 \x20   maxInFlightPerPartition: {n}\nsink:\n  type: http\n  config:\n    url: http://x\n"
            ))
        };
        assert_eq!(paths(&flow(1)), Vec::<&str>::new());
        assert_eq!(
            paths(&flow(MAX_IN_FLIGHT_PER_PARTITION)),
            Vec::<&str>::new()
        );
        for n in [0, MAX_IN_FLIGHT_PER_PARTITION + 1] {
            assert_eq!(
                paths(&flow(n)),
                ["source.config.maxInFlightPerPartition"],
                "{n}"
            );
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let ds = findings(
            r#"
name: Bad_Name
source:
  type: kafka
  config:
    cluster: missing
    topic: orders
transform:
  fields:
    total: "data.price *"
    who: "customer"
cloudevents:
  type: '""'
sink:
  type: temporal
  config:
    hostPort: temporal
    taskQueue: q
    workflowType: W
    mode: signal
    workflowIdExpr: "order-{{data.id}}"
errorHandling:
  initialInterval: 5s
  maxInterval: 1s
  commitPolicy: kafka_transaction
"#,
        );
        assert_eq!(
            paths(&ds),
            vec![
                "name",
                "source.config.cluster",
                "transform.fields.total",
                "transform.fields.who",
                "cloudevents.type",
                "sink.config.hostPort",
                "sink.config.signalName",
                "sink.config.workflowIdExpr",
                "errorHandling.maxInterval",
                "errorHandling.commitPolicy",
                "errorHandling.transactionalId",
            ]
        );
        assert!(ds.iter().all(|d| d.hint.is_some()), "{ds:#?}");
    }

    #[test]
    fn literal_cloudevent_values_warn() {
        let ds = findings(
            "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ncloudevents:\n  type: order.created\n  source: order-service\nsink:\n  type: http\n  config:\n    url: http://x:1\n",
        );
        assert!(ds.iter().all(|d| !d.is_error()), "{ds:#?}");
        assert_eq!(ds.len(), 2);
        assert!(ds[0].message.contains("literal string \"order.created\""));
    }

    #[test]
    fn a_transform_without_fields_is_an_error() {
        let ds = findings("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ntransform:\n  fields: {}\nsink:\n  type: http\n  config:\n    url: http://x:1\n");
        assert_eq!(paths(&ds), vec!["transform.fields"]);
        assert!(ds[0].is_error());
    }

    #[test]
    fn evidently_non_string_attributes_warn() {
        let flow = |subject: &str| {
            format!("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ncloudevents:\n  subject: '{subject}'\nsink:\n  type: http\n  config:\n    url: http://x:1\n")
        };
        for (subject, type_name) in [
            ("data.count + 0 > 1", "bool"),
            ("size(data.items)", "int"),
            ("7", "int"),
        ] {
            let ds = findings(&flow(subject));
            assert_eq!(ds.len(), 1, "{subject}: {ds:#?}");
            assert!(!ds[0].is_error());
            assert_eq!(ds[0].path, "cloudevents.subject");
            assert!(
                ds[0].message.contains(&format!("gives a {type_name}")),
                "{}",
                ds[0].message
            );
        }
        for subject in [
            "data.count",
            "string(data.count)",
            r#"data.a + "-" + data.b"#,
        ] {
            assert!(findings(&flow(subject)).is_empty(), "{subject}");
        }
    }

    #[test]
    fn response_body_cap_must_be_positive() {
        let flow = |size: &str| {
            format!("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\nsink:\n  type: http\n  config:\n    url: http://x:1\n    maxResponseBodySize: {size}\n")
        };
        assert_eq!(
            paths(&findings(&flow("0"))),
            vec!["sink.config.maxResponseBodySize"]
        );
        assert!(paths(&findings(&flow("64KiB"))).is_empty());
        assert!(paths(&findings(&flow("2097152"))).is_empty());
    }

    #[test]
    fn wasmer_app_interceptors_name_an_app_and_post_to_a_path() {
        let flow = |config: &str| {
            format!("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ninterceptors:\n  - type: wasmer-app\n    config: {config}\nsink:\n  type: http\n  config:\n    url: http://x:1\n")
        };
        assert!(paths(&findings(&flow("{app: enrich}"))).is_empty());
        assert!(paths(&findings(&flow(
            "{app: enrich, path: /v1/process, failOpen: true}"
        )))
        .is_empty());
        assert_eq!(
            paths(&findings(&flow("{app: Enrich_1, path: process}"))),
            vec!["interceptors[0].config.app", "interceptors[0].config.path"]
        );
        let e = parse_flow("f.yaml", &flow("{app: x, module: m.wasm}")).unwrap_err();
        assert!(e.0[0].message.contains("unknown field `module`"), "{e}");
    }

    const TEMPORAL: &str = "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\nsink:\n  type: temporal\n  config:\n    hostPort: t:7233\n    taskQueue: q\n    workflowType: W\n";

    #[test]
    fn temporal_oidc_needs_exactly_one_secret_and_no_api_key() {
        let oidc = |extra: &str| {
            findings(&format!(
                "{TEMPORAL}    auth:\n{extra}      oidc:\n        tokenURL: https://idp.example.com/token\n        clientID: fiso\n        scopes: [temporal]\n"
            ))
        };
        let secret_env = "        clientSecretEnv: SECRET\n";
        let ok = findings(&format!(
            "{TEMPORAL}    auth:\n      oidc:\n        tokenURL: https://idp.example.com/token\n        clientID: fiso\n{secret_env}"
        ));
        assert!(ok.is_empty(), "{ok:#?}");
        assert_eq!(paths(&oidc("")), vec!["sink.config.auth.oidc"]);
        let both = findings(&format!(
            "{TEMPORAL}    auth:\n      oidc:\n        tokenURL: https://idp.example.com/token\n        clientID: fiso\n{secret_env}        clientSecretFile: /s\n"
        ));
        assert_eq!(paths(&both), vec!["sink.config.auth.oidc"]);
        assert_eq!(
            paths(&oidc("      apiKeyEnv: KEY\n")),
            vec!["sink.config.auth", "sink.config.auth.oidc"]
        );
        let bad_url = findings(&format!(
            "{TEMPORAL}    auth:\n      oidc:\n        tokenURL: idp/token\n        clientID: ''\n{secret_env}"
        ));
        assert_eq!(
            paths(&bad_url),
            vec![
                "sink.config.auth.oidc.tokenURL",
                "sink.config.auth.oidc.clientID"
            ]
        );
        let plain = findings(&format!(
            "{TEMPORAL}    auth:\n      oidc:\n        tokenURL: http://idp:8080/token\n        clientID: fiso\n{secret_env}"
        ));
        assert!(plain.iter().all(|d| !d.is_error()), "{plain:#?}");
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].path, "sink.config.auth.oidc.tokenURL");
    }

    #[test]
    fn tls_disabled_is_plaintext_and_excludes_other_settings() {
        assert!(findings(&format!("{TEMPORAL}    tls:\n      disabled: true\n")).is_empty());
        let ds = findings(&format!(
            "{TEMPORAL}    tls:\n      disabled: true\n      enabled: true\n"
        ));
        assert_eq!(paths(&ds), vec!["sink.config.tls.disabled"]);
        assert!(ds[0].is_error());
    }

    #[test]
    fn dead_letter_needs_a_cluster_for_http_sources() {
        let ds = findings(
            "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\nsink:\n  type: http\n  config:\n    url: http://x:1\nerrorHandling:\n  deadLetterTopic: dlq\n",
        );
        assert_eq!(paths(&ds), vec!["errorHandling.deadLetterTopic"]);
    }

    #[test]
    fn kafka_transaction_keeps_partition_order() {
        let flow = |ordering: &str| {
            format!(
                "name: a\nsource:\n  type: kafka\n  config:\n    cluster: c\n    topic: in\n    ordering: {ordering}\nsink:\n  type: kafka\n  config:\n    cluster: c\n    topic: out\nerrorHandling:\n  commitPolicy: kafka_transaction\n  transactionalId: a-tx\n"
            )
        };
        for refused in ["key", "unordered"] {
            assert!(paths(&findings(&flow(refused))).contains(&"source.config.ordering"));
        }
        assert!(!paths(&findings(&flow("partition"))).contains(&"source.config.ordering"));
    }

    #[test]
    fn resource_origin_allows_missing_name() {
        let f = parse_flow(
            "f",
            "source:\n  type: grpc\n  config:\n    listenAddr: \":50051\"\nsink:\n  type: grpc\n  config:\n    address: svc:50051\n",
        )
        .unwrap();
        assert!(validate_flow(&f, Origin::Resource).is_empty());
        assert_eq!(paths(&validate_flow(&f, Origin::File)), vec!["name"]);
    }
}
