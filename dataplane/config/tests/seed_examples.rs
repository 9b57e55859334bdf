//! Every flow / link YAML example of the upstream README (`shared/seed/fiso-upstream-readme.txt`),
//! verbatim. Fragments (a `sink:` or a `kafka:` block alone) are wrapped in the smallest document
//! around them. Where the seed itself is wrong, the test pins the error that says why.

use fiso_config::crd::{FlowDefinition, LinkTarget};
use fiso_config::validate::{check_project, validate_flow, validate_target, Origin, SourceFile};
use fiso_config::{Diagnostic, Diagnostics};

fn flows(files: &[(&str, &str)]) -> Diagnostics {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(p, t)| SourceFile {
            path: (*p).to_owned(),
            text: (*t).to_owned(),
        })
        .collect();
    check_project(&files, None).1
}

fn flow(text: &str) -> Diagnostics {
    flows(&[("flow.yaml", text)])
}

fn link(text: &str) -> Diagnostics {
    let f = SourceFile {
        path: "link/config.yaml".into(),
        text: text.to_owned(),
    };
    check_project(&[], Some(&f)).1
}

fn assert_clean(d: &Diagnostics) {
    assert!(d.is_empty(), "expected no findings:\n{d}");
}

fn only_error(d: &Diagnostics) -> &Diagnostic {
    let errors: Vec<&Diagnostic> = d.errors().collect();
    assert_eq!(errors.len(), 1, "expected exactly one error:\n{d}");
    errors[0]
}

#[test]
fn http_source_example_used_by_fiso_init() {
    assert_clean(&flow(
        r#"name: example-flow
source:
  type: http
  config:
    listenAddr: ":8081"
    path: /ingest
sink:
  type: http
  config:
    url: http://user-service:8082
    method: POST
"#,
    ));
}

#[test]
fn kafka_source_example() {
    assert_clean(&flow(
        r#"name: order-events
kafka:
  clusters:
    main:
      brokers:
        - kafka.infra.svc:9092
source:
  type: kafka
  config:
    cluster: main
    topic: orders
    consumerGroup: fiso-order-flow
    startOffset: latest
transform:
  fields:
    order_id: "data.legacy_id"
    timestamp: "time"
    status: "data.order_status"
sink:
  type: http
  config:
    url: http://order-service:8080/callbacks/order-result
    method: POST
errorHandling:
  deadLetterTopic: fiso-dlq-order-events
  maxRetries: 5
  backoff: exponential
"#,
    ));
}

#[test]
fn shared_port_flows() {
    let a = r#"name: flow-a
source:
  type: http
  config:
    listenAddr: ":8080" # Same port
    path: /ingest-a # Different path
sink:
  type: http
  config:
    url: http://service-a:8080
    method: POST
"#;
    let b = r#"name: flow-b
source:
  type: http
  config:
    listenAddr: ":8080" # Same port!
    path: /ingest-b # Different path
sink:
  type: http
  config:
    url: http://service-b:8080
    method: POST
"#;
    assert_clean(&flows(&[("flow-a.yaml", a), ("flow-b.yaml", b)]));
}

#[test]
fn kafka_sink_example() {
    assert_clean(&flow(
        r#"name: order-results
kafka:
  clusters:
    main:
      brokers:
        - kafka.infra.svc:9092
source:
  type: http
  config:
    listenAddr: ":8081"
    path: /ingest
transform:
  fields:
    order_id: "data.id"
    result: "data.status"
    timestamp: "time"
sink:
  type: kafka
  config:
    cluster: main
    topic: order-results
errorHandling:
  deadLetterTopic: fiso-dlq-order-results
  maxRetries: 3
"#,
    ));
}

/// Seed bug: `subject: "$.legacy_id"` is v0.7 JSONPath inside a v0.8 flow; and `type` / `source`
/// are unquoted literals (accepted, with a warning each).
#[test]
fn transform_with_cloudevents_customization() {
    let d = flow(
        r#"name: order-pipeline
kafka:
  clusters:
    main:
      brokers:
        - kafka.infra.svc:9092
source:
  type: kafka
  config:
    cluster: main
    topic: orders
    consumerGroup: fiso-order-flow
    startOffset: latest
transform:
  fields:
    order_id: "data.legacy_id"
    total: "data.amount"
    customer: "data.customer_name"
    status: '"pending"'
cloudevents:
  type: order.created
  source: order-service
  subject: "$.legacy_id"
sink:
  type: temporal
  config:
    hostPort: temporal:7233
    taskQueue: order-processing
    workflowType: ProcessOrder
errorHandling:
  deadLetterTopic: fiso-dlq-order-pipeline
  maxRetries: 3
"#,
    );
    let e = only_error(&d);
    assert_eq!(e.path, "cloudevents.subject");
    assert_eq!(e.line, Some(23));
    assert!(e.message.contains("JSONPath"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("write `data.legacy_id` instead"));
    let warnings: Vec<&str> = d.warnings().map(|w| w.path.as_str()).collect();
    assert_eq!(warnings, vec!["cloudevents.type", "cloudevents.source"]);
}

/// Seed bug: the Kafka source names no `cluster` (and the document defines none).
#[test]
fn idempotency_pattern_example() {
    let d = flow(
        r#"name: order-processing
source:
  type: kafka
  config:
    topic: orders
# Combine eventId + CTN for idempotency using CEL
cloudevents:
  id: 'data.eventId + "-" + data.CTN'
  type: "order.created"
sink:
  type: http
  config:
    url: http://order-service:8080
"#,
    );
    let e = only_error(&d);
    assert!(e.message.contains("missing field `cluster`"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("add `cluster:` here"));
}

/// Same seed bug as above; with a cluster added the rest of the example is valid.
#[test]
fn custom_data_field_example() {
    let body = r#"
transform:
  fields:
    transactionId: "data.txn_id"
    processedAt: "time"
cloudevents:
  id: "data.paymentId"
  type: "payment.processed"
  data: "data.rawPayment" # Extract specific field from original input
  dataschema: '"https://api.example.com/schemas/payment/v2.json"'
sink:
  type: http
  config:
    url: http://payment-service:8080
"#;
    let verbatim = format!(
        "name: payment-processor\nsource:\n  type: kafka\n  config:\n    topic: payments\n{body}"
    );
    assert!(only_error(&flow(&verbatim))
        .message
        .contains("missing field `cluster`"));
    let fixed = format!(
        "name: payment-processor\nkafka:\n  clusters:\n    main:\n      brokers: [\"k:9092\"]\nsource:\n  type: kafka\n  config:\n    cluster: main\n    topic: payments\n{body}"
    );
    let d = flow(&fixed);
    assert!(!d.has_errors(), "{d}");
    assert_eq!(
        d.warnings().map(|w| w.path.as_str()).collect::<Vec<_>>(),
        vec!["cloudevents.type"]
    );
}

fn http_flow_with_sink(sink: &str) -> String {
    format!("name: f\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\n{sink}")
}

#[test]
fn temporal_sink_examples() {
    assert_clean(&flow(&http_flow_with_sink(
        r#"sink:
  type: temporal
  config:
    hostPort: temporal:7233
    taskQueue: order-processing
    workflowType: ProcessOrderWorkflow
    workflowIdExpr: "order-{{.data.orderId}}" # Nested field access supported
    mode: start # or "signal"
"#,
    )));
    assert_clean(&flow(&http_flow_with_sink(
        r#"sink:
  type: temporal
  config:
    hostPort: temporal:7233
    taskQueue: order-processing
    workflowType: ProcessOrderWorkflow
    workflowIdExpr: "{{.data.eventId}}-{{.data.ctn}}"
    mode: start
    params:
      - expr: "data.eventId" # CEL expression → string
      - expr: "data.ctn" # → string
      - expr: "data.accountId" # → string
      - expr: "data.amount" # → float64 (typed!)
      - expr: "data.order" # → object (nested structure)
"#,
    )));
}

#[test]
fn wasm_interceptor_examples() {
    assert_clean(&flow(
        r#"name: wasm-transform-flow
source:
  type: http
  config:
    listenAddr: ":8081"
    path: /ingest
interceptors:
  - type: wasm
    config:
      module: /etc/fiso/wasm/transform.wasm
      timeout: "5s"
sink:
  type: http
  config:
    url: http://user-service:8082
    method: POST
"#,
    ));
    let wasmer = r#"interceptors:
  - type: wasm
    config:
      module: /etc/fiso/modules/app.wasm
      runtime: wasmer # Use wasmer instead of default wazero
      timeout: 30s
sink:
  type: http
  config:
    url: http://x:1
"#;
    assert_clean(&flow(&http_flow_with_sink(wasmer)));
}

#[test]
fn link_config_example() {
    assert_clean(&link(
        r#"listenAddr: ":3500"
metricsAddr: ":9091"
kafka:
  clusters:
    main:
      brokers:
        - kafka.infra.svc:9092
targets:
  - name: crm
    protocol: https
    host: api.salesforce.com
    auth:
      type: bearer
      secretRef:
        filePath: /secrets/crm-token
    circuitBreaker:
      enabled: true
      failureThreshold: 5
      resetTimeout: "30s"
    retry:
      maxAttempts: 3
      backoff: exponential
      initialInterval: "200ms"
      maxInterval: "30s"
      jitter: 0.2
    allowedPaths:
      - /api/v2/**
"#,
    ));
}

const CLUSTERS: &str = "kafka:\n  clusters:\n    main:\n      brokers:\n        - kafka.infra.svc:9092\n        - kafka2.infra.svc:9092\n";

#[test]
fn kafka_target_examples() {
    let targets = [
        r#"targets:
  - name: orders-publisher
    protocol: kafka
    kafka:
      cluster: main
      topic: orders
      key:
        type: uuid
      headers:
        source: order-service
        version: "1.0"
      requiredAcks: all
    circuitBreaker:
      enabled: true
      failureThreshold: 5
      resetTimeout: "30s"
    retry:
      maxAttempts: 3
      backoff: exponential
      initialInterval: "100ms"
      maxInterval: "1s"
    rateLimit:
      requestsPerSecond: 1000
      burst: 100
"#,
        "targets:\n  - name: orders-publisher\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: orders\n",
        "targets:\n  - name: events-publisher\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: application-events\n      key:\n        type: uuid # Distribute load across partitions\n    rateLimit:\n      requestsPerSecond: 10000\n      burst: 1000\n",
        "targets:\n  - name: commands-publisher\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: user-commands\n      key:\n        type: payload\n        field: user_id # All commands for same user go to same partition\n      headers:\n        source: command-service\n",
        "targets:\n  - name: orders-publisher\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: orders\n      key:\n        type: header\n        field: X-Correlation-ID # Trace request through system\n      requiredAcks: all\n",
        "targets:\n  - name: ledger-publisher\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: ledger-updates\n      key:\n        type: static\n        value: \"ledger-1\" # All messages to same partition for strict ordering\n    circuitBreaker:\n      enabled: true\n      failureThreshold: 3\n      resetTimeout: \"60s\"\n",
        "targets:\n  - name: analytics-publisher\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: events\n      headers:\n        environment: production\n        version: \"2.0\"\n",
    ];
    for t in targets {
        assert_clean(&link(&format!("{CLUSTERS}{t}")));
    }
    let strategies = [
        "key:\n  type: uuid\n",
        "key:\n  type: header\n  field: X-Correlation-ID\n",
        "key:\n  type: payload\n  field: customer_id\n",
        "key:\n  type: static\n  value: order-processor-1\n",
        "key:\n  type: random\n",
    ];
    for s in strategies {
        let indented: String = s.lines().map(|l| format!("      {l}\n")).collect();
        assert_clean(&link(&format!(
            "{CLUSTERS}targets:\n  - name: t\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: events\n{indented}"
        )));
    }
}

#[test]
fn migration_examples() {
    let after = r#"transform:
  fields:
    total: "data.price * data.quantity"
    discounted: "data.price * data.quantity * 0.9"
    category: 'data.type == "premium" ? "gold" : "standard"'
    fullName: 'data.first_name + " " + data.last_name'
    email: 'data.username + "@" + data.domain'
    customer: '{"id": data.customer_id, "name": data.customer_name}'
    tags: "[data.tag1, data.tag2, data.tag3]"
    eligible: "data.age >= 18 && data.verified == true"
sink:
  type: http
  config:
    url: http://x:1
"#;
    assert_clean(&flow(&http_flow_with_sink(after)));
    for (before, field) in [
        ("transform:\n  cel: '{\"order_id\": data.legacy_id, \"timestamp\": time, \"status\": data.order_status}'\n", "cel"),
        ("transform:\n  mapping:\n    order_id: \"$.legacy_id\"\n    status: \"pending\"\n", "mapping"),
    ] {
        let d = flow(&http_flow_with_sink(&format!("{before}sink:\n  type: http\n  config:\n    url: http://x:1\n")));
        let e = only_error(&d);
        assert_eq!(e.path, format!("transform.{field}"));
        assert!(e.hint.as_deref().unwrap().contains("transform.fields"), "{e}");
    }
}

#[test]
fn crd_examples() {
    let fd: FlowDefinition = serde_yaml_ng::from_str(
        r#"apiVersion: fiso.io/v1alpha1
kind: FlowDefinition
metadata:
  name: order-events
spec:
  kafka:
    clusters:
      main:
        brokers:
          - kafka.infra.svc:9092
  source:
    type: kafka
    config:
      cluster: main
      topic: orders
      consumerGroup: fiso-order-flow
  sink:
    type: http
    config:
      url: "http://order-service:8080/callbacks/order-result"
"#,
    )
    .unwrap();
    assert!(validate_flow(&fd.spec, Origin::Resource).is_empty());
    let lt: LinkTarget = serde_yaml_ng::from_str(
        "apiVersion: fiso.io/v1alpha1\nkind: LinkTarget\nmetadata:\n  name: crm-api\nspec:\n  protocol: https\n  host: api.salesforce.com\n",
    )
    .unwrap();
    assert!(validate_target(&lt.spec, Origin::Resource, None).is_empty());
}
