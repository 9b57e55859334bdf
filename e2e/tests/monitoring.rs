//! The chart's monitoring (`dashboards.enabled`, `alerts.enabled`), checked with Debian's
//! Prometheus 2.42 (`cargo xtask infra up prometheus`):
//! * the PrometheusRule as `helm template` renders it passes `promtool check rules`, and
//!   `promtool test rules` (`charts/fiso/monitoring/alerts_test.yaml`) fires each alert on
//!   synthetic series and not on the healthy ones beside them;
//! * a real Prometheus scrapes `fiso run` (a Kafka flow with a DLQ, an HTTP flow, a link target
//!   with retries, breaker, rate limit and credentials, after a little traffic) and the
//!   operator, and every metric name and label a dashboard panel, a dashboard variable or an
//!   alert uses is in what it scraped — so renaming a metric or a label fails here.

use std::collections::BTreeSet;
use std::time::Duration;

use fiso_e2e::infra::{chart_dir, helm, promtool, run};
use fiso_e2e::kafka::{self, create_topic, kafka_source, unique};
use fiso_e2e::operator::Install;
use fiso_e2e::prometheus::{Prometheus, Series, Target};
use fiso_e2e::promql::{self, Uses};
use fiso_e2e::{
    client, eventually, post_json, send, FisoProcess, FlowDir, HttpFlow, Reply, Script, SinkServer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `helm template` with dashboards, alerts and both monitors on.
fn render() -> Vec<Value> {
    let out = run(
        helm()
            .args(["template", "fiso"])
            .arg(chart_dir())
            .args(["--namespace", "fiso-system"])
            .args([
                "--set",
                "dashboards.enabled=true,alerts.enabled=true,metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true",
            ]),
        None,
    );
    serde_yaml_ng::Deserializer::from_str(&out)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm output is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The PrometheusRule's groups as a Prometheus rule file.
fn rule_file(docs: &[Value]) -> Value {
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("alerts.enabled renders a PrometheusRule");
    json!({"groups": rule["spec"]["groups"]})
}

fn alerts(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

/// Each dashboard's JSON, by ConfigMap name.
fn dashboards(docs: &[Value]) -> Vec<(String, Value)> {
    let found: Vec<(String, Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .flat_map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap().to_owned();
            d["data"].as_object().unwrap().values().map(move |text| {
                let json = serde_json::from_str(text.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{name}: dashboard JSON: {e}"));
                (name.clone(), json)
            })
        })
        .collect();
    assert_eq!(found.len(), 3, "flow, link and operator dashboards");
    found
}

#[test]
fn alert_rules_pass_promtool_and_each_fires_in_its_unit_test() {
    let rules = rule_file(&render());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&rules).unwrap(),
    )
    .unwrap();
    run(
        promtool()
            .args(["check", "rules"])
            .arg(dir.path().join("rules.yaml")),
        None,
    );

    let tests = chart_dir().join("monitoring/alerts_test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts_test.yaml")).unwrap();
    run(
        promtool()
            .args(["test", "rules", "alerts_test.yaml"])
            .current_dir(dir.path()),
        None,
    );

    // Every alert has a case where it fires.
    let text = std::fs::read_to_string(&tests).unwrap();
    let cases: Value = serde_yaml_ng::from_str(&text).unwrap();
    let fired: BTreeSet<&str> = cases["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|c| c["alertname"].as_str().unwrap())
        .collect();
    let defined: BTreeSet<&str> = alerts(&rules)
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        fired,
        defined,
        "alerts without a firing case in {}",
        tests.display()
    );
    for alert in alerts(&rules) {
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{alert}: severity"
        );
        for key in ["summary", "description"] {
            assert!(alert["annotations"][key].is_string(), "{alert}: {key}");
        }
    }
}

/// One expression to check and where it comes from.
struct Expression {
    origin: String,
    uses: Uses,
    /// Labels the result must carry: a legend's `{{label}}`, an annotation's `$labels.label`, a
    /// variable's `label_values(..., label)`.
    result_labels: BTreeSet<String>,
}

fn template_labels(text: &str, open: &str) -> BTreeSet<String> {
    text.match_indices(open)
        .map(|(i, _)| {
            text[i + open.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn expressions(docs: &[Value]) -> Vec<Expression> {
    let mut out = Vec::new();
    for (board, json) in dashboards(docs) {
        for var in json["templating"]["list"].as_array().unwrap() {
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"].as_str().unwrap();
            let (uses, label) = promql::label_values(query)
                .unwrap_or_else(|| panic!("{board}: variable query {query}"));
            out.push(Expression {
                origin: format!("{board} variable {}", var["name"]),
                uses,
                result_labels: [label].into(),
            });
        }
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                let legend = target["legendFormat"].as_str().unwrap_or_default();
                out.push(Expression {
                    origin: format!("{board} panel {}: {expr}", panel["title"]),
                    uses: promql::uses(expr),
                    result_labels: template_labels(legend, "{{"),
                });
            }
        }
    }
    for alert in alerts(&rule_file(docs)) {
        let expr = alert["expr"].as_str().unwrap();
        let annotations = alert["annotations"].to_string();
        out.push(Expression {
            origin: format!("alert {}: {expr}", alert["alert"]),
            uses: promql::uses(expr),
            result_labels: template_labels(&annotations, "$labels."),
        });
    }
    out
}

/// What `expression` uses that `series` lacks.
fn missing(expression: &Expression, series: &Series) -> Vec<String> {
    let mut problems = Vec::new();
    let has_label = |metric: &str, label: &str| {
        series
            .get(metric)
            .is_some_and(|all| all.iter().any(|s| s.contains_key(label)))
    };
    let metrics: BTreeSet<&str> = expression
        .uses
        .selectors
        .iter()
        .map(|s| s.metric.as_str())
        .collect();
    if metrics.is_empty() {
        problems.push("uses no metric".to_owned());
    }
    for selector in &expression.uses.selectors {
        let metric = &selector.metric;
        if !series.contains_key(metric) {
            problems.push(format!("metric {metric} was not scraped"));
            continue;
        }
        for m in &selector.matchers {
            if !has_label(metric, &m.label) {
                problems.push(format!("{metric} has no label {}", m.label));
            } else if m.op == "=" && !m.value.contains('$') {
                let found = series[metric]
                    .iter()
                    .any(|s| s.get(&m.label) == Some(&m.value));
                if !found {
                    problems.push(format!(
                        "no {metric}{{{}=\"{}\"}} was scraped",
                        m.label, m.value
                    ));
                }
            }
        }
    }
    // Aggregated, joined and displayed labels must be there on every metric of the expression.
    for label in expression
        .uses
        .grouping
        .iter()
        .chain(&expression.result_labels)
    {
        for metric in metrics.iter().filter(|m| series.contains_key(**m)) {
            if !has_label(metric, label) {
                problems.push(format!("{metric} has no label {label}"));
            }
        }
    }
    problems
}

/// A flow reading `topic` into `sink_url`, dead-lettering to `dlq`.
fn kafka_flow(name: &str, topic: &str, dlq: &str, sink_url: &str) -> String {
    format!(
        "name: {name}\n{}sink:\n  type: http\n  config:\n    url: {sink_url}\n\
         errorHandling:\n  maxRetries: 0\n  deadLetterTopic: {dlq}\n",
        kafka_source(topic, &unique("mon-group"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboards_and_alerts_use_is_scraped() {
    let docs = render();
    let expressions = expressions(&docs);

    // The operator, as the chart runs it.
    let install = Install::new("mon", &[]).await;
    let operator = install.start_operator("fiso-operator-0").await;

    // A sidecar: a Kafka flow with a DLQ, an HTTP flow and a link target with every concern.
    let topic = unique("mon-orders");
    let dlq = unique("mon-dlq");
    create_topic(&topic, 1).await;
    let producer = kafka::producer();
    kafka::send(&producer, &topic, 0, r#"{"id":1}"#).await;
    kafka::send(&producer, &topic, 0, "not json{").await;
    let sink = SinkServer::ok().await;
    let upstream = SinkServer::start(Script::first([Reply::status(503)], Reply::status(200))).await;
    let flows = FlowDir::new();
    flows.write(
        "orders.yaml",
        &kafka_flow("orders", &topic, &dlq, &sink.url("/orders")),
    );
    flows.write(
        "web.yaml",
        &HttpFlow::new("web", "127.0.0.1:0", "/web", &sink.url("/web")).yaml(),
    );
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "t1\n").unwrap();
    let link = secrets.path().join("link.yaml");
    std::fs::write(
        &link,
        format!(
            "listenAddr: 127.0.0.1:0\ntargets:\n  - name: crm\n    protocol: http\n    host: localhost\n    port: {}\n\
             \x20   retry:\n      maxAttempts: 2\n      initialInterval: 10ms\n      jitter: 0\n\
             \x20   circuitBreaker:\n      enabled: true\n      failureThreshold: 5\n\
             \x20   rateLimit:\n      requestsPerSecond: 1000\n\
             \x20   auth:\n      type: bearer\n      secretRef:\n        filePath: {}\n",
            upstream.addr().port(),
            token.display()
        ),
    )
    .unwrap();
    let fiso = FisoProcess::start_run(&flows.path(), &link).await;

    let web = fiso.http_addr("127.0.0.1:0").await;
    let answer = post_json(&client(), &format!("http://{web}/web"), &json!({"x": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let proxy = fiso.link_addr().await;
    let answer = send(client().get(format!("http://{proxy}/link/crm/v1/contacts"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    fiso.wait_for_metric("fiso_flow_dlq_total", &[("flow", "orders")], 1.0)
        .await;
    let lag = eventually(Duration::from_secs(30), || async {
        fiso.metrics().await.get(
            "fiso_flow_consumer_lag",
            &[("flow", "orders"), ("partition", "0")],
        )
    })
    .await;
    assert!(
        lag.is_some(),
        "no consumer lag reported\n{}",
        fiso.metrics().await
    );

    // Prometheus gives each target the labels a PodMonitor / ServiceMonitor would.
    let prometheus = Prometheus::start(&[
        Target {
            addr: fiso.metrics_addr(),
            labels: &[("namespace", "shop"), ("pod", "orders-7f9c")],
        },
        Target {
            addr: operator.health_addr,
            labels: &[("namespace", install.release()), ("pod", "fiso-operator-0")],
        },
    ])
    .await;
    prometheus.wait_for_scrapes(2).await;
    let series = prometheus.series("fiso_.+").await;

    let problems: Vec<String> = expressions
        .iter()
        .flat_map(|e| {
            missing(e, &series)
                .into_iter()
                .map(move |p| format!("{}\n    {p}", e.origin))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{} uses the scrape does not have:\n{}\n\nscraped: {:?}",
        problems.len(),
        problems.join("\n"),
        series.keys().collect::<Vec<_>>()
    );
    // The check saw the dashboards and the alerts.
    assert!(expressions.len() > 40, "{} expressions", expressions.len());
}
