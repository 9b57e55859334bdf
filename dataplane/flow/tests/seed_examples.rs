//! Every example of the upstream README's transform and CloudEvents sections
//! (`seed/fiso-upstream-readme.txt`), input → exact output. The `transform:` and
//! `cloudevents:` blocks are the README's, verbatim; source and sink are filled in to make
//! each a complete flow.

use chrono::{DateTime, Utc};
use fiso_flow::json::{to_string_plain, to_string_pretty_plain};
use fiso_flow::{CompiledFlow, FlowError, InputEvent, ProcessedEvent};
use pretty_assertions::assert_eq;
use serde_json::{json, Value as Json};

const RECEIVED_AT: &str = "2026-02-06T22:00:00Z";

/// A flow named `name` with the README snippet `body` (its `transform:` / `cloudevents:`).
fn compile(name: &str, body: &str) -> Result<CompiledFlow, Vec<FlowError>> {
    let yaml = format!(
        "name: {name}\n\
         source:\n  type: kafka\n  config:\n    cluster: main\n    topic: orders\n\
         {body}\n\
         sink:\n  type: http\n  config:\n    url: http://order-service:8080\n"
    );
    let config = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    CompiledFlow::compile(&config)
}

fn flow(name: &str, body: &str) -> CompiledFlow {
    compile(name, body).unwrap_or_else(|errors| panic!("{errors:?}"))
}

/// Runs `input` through `flow` as the Kafka record at orders/0/42, received at
/// [`RECEIVED_AT`].
fn process(flow: &CompiledFlow, input: Json) -> Result<ProcessedEvent, FlowError> {
    let at: DateTime<Utc> = RECEIVED_AT.parse().expect("time");
    let defaults = flow
        .defaults()
        .event()
        .with_kafka_id("orders", 0, 42)
        .received_at(at);
    flow.process(InputEvent::from_json(input, defaults)?)
}

fn transformed(flow: &CompiledFlow, input: Json) -> Json {
    process(flow, input)
        .expect("processes")
        .payload()
        .into_owned()
}

fn event_json(processed: &ProcessedEvent) -> Json {
    serde_json::to_value(processed.event()).expect("serializes")
}

// ---------------------------------------------------------------------------------------------
// Transform

#[test]
fn transform_section_example() {
    let flow = flow(
        "order-flow",
        r#"
transform:
  fields:
    order_id: "data.legacy_id" # Field mapping
    total: "data.price * data.quantity" # Arithmetic
    status: '"pending"' # Static string (quoted)
    timestamp: "time" # CloudEvents variable
"#,
    );
    let output = transformed(
        &flow,
        json!({"legacy_id": "L-1", "price": 10.5, "quantity": 3}),
    );
    // Keys in config order, numbers without exponent or trailing `.0`.
    assert_eq!(
        to_string_plain(&output).expect("prints"),
        r#"{"order_id":"L-1","total":31.5,"status":"pending","timestamp":"2026-02-06T22:00:00Z"}"#
    );
}

#[test]
fn feature_list_examples() {
    let flow = flow(
        "features",
        r#"
transform:
  fields:
    field: "data.nested.path"
    total: "data.price * data.quantity"
    category: 'data.type == "premium" ? "gold" : "standard"'
    fullName: 'data.first + " " + data.last'
    customer: '{"id": data.id, "name": data.name}'
    number: "42"
    flag: "true"
"#,
    );
    let input = json!({
        "nested": {"path": "deep"},
        "price": 10.5, "quantity": 3,
        "type": "premium",
        "first": "Ada", "last": "Lovelace",
        "id": "C-7", "name": "Ada"
    });
    assert_eq!(
        transformed(&flow, input.clone()),
        json!({
            "field": "deep",
            "total": 31.5,
            "category": "gold",
            "fullName": "Ada Lovelace",
            "customer": {"id": "C-7", "name": "Ada"},
            "number": 42,
            "flag": true
        })
    );
    let mut standard = input;
    standard["type"] = json!("basic");
    assert_eq!(transformed(&flow, standard)["category"], json!("standard"));
}

#[test]
fn migration_section_full_syntax_example() {
    let flow = flow(
        "migration",
        r#"
transform:
  fields:
    # Arithmetic
    total: "data.price * data.quantity"
    discounted: "data.price * data.quantity * 0.9"
    # Conditionals
    category: 'data.type == "premium" ? "gold" : "standard"'
    # String operations
    fullName: 'data.first_name + " " + data.last_name'
    email: 'data.username + "@" + data.domain'
    # Nested objects
    customer: '{"id": data.customer_id, "name": data.customer_name}'
    # Arrays
    tags: "[data.tag1, data.tag2, data.tag3]"
    # Boolean logic
    eligible: "data.age >= 18 && data.verified == true"
"#,
    );
    let input = json!({
        "price": 10.5, "quantity": 3, "type": "premium",
        "first_name": "Grace", "last_name": "Hopper",
        "username": "grace", "domain": "example.com",
        "customer_id": "C-1", "customer_name": "Grace Hopper",
        "tag1": "vip", "tag2": "navy", "tag3": "cobol",
        "age": 85, "verified": true
    });
    let output = transformed(&flow, input.clone());
    assert_eq!(
        output,
        json!({
            "total": 31.5,
            "discounted": 28.35,
            "category": "gold",
            "fullName": "Grace Hopper",
            "email": "grace@example.com",
            "customer": {"id": "C-1", "name": "Grace Hopper"},
            "tags": ["vip", "navy", "cobol"],
            "eligible": true
        })
    );
    assert_eq!(
        to_string_pretty_plain(&output["discounted"]).expect("prints"),
        "28.35"
    );

    let mut minor = input;
    minor["age"] = json!(17);
    assert_eq!(transformed(&flow, minor)["eligible"], json!(false));
}

#[test]
fn migration_section_mapping_example() {
    let flow = flow(
        "migrated",
        r#"
transform:
  fields:
    order_id: "data.legacy_id"
    total: "data.amount"
    customer: "data.customer_name"
    status: '"pending"' # Static strings must be quoted
"#,
    );
    assert_eq!(
        transformed(
            &flow,
            json!({"legacy_id": "L-9", "amount": 99.99, "customer_name": "Bo"})
        ),
        json!({"order_id": "L-9", "total": 99.99, "customer": "Bo", "status": "pending"})
    );
}

#[test]
fn kafka_source_example() {
    let flow = flow(
        "order-events",
        r#"
transform:
  fields:
    order_id: "data.legacy_id"
    timestamp: "time"
    status: "data.order_status"
"#,
    );
    let processed = process(&flow, json!({"legacy_id": "L-1", "order_status": "NEW"})).expect("ok");
    assert_eq!(
        event_json(&processed),
        json!({
            "specversion": "1.0",
            "id": "orders-0-42",
            "type": "fiso.event",
            "source": "fiso-flow/order-events",
            "datacontenttype": "application/json",
            "time": RECEIVED_AT,
            "data": {"order_id": "L-1", "timestamp": RECEIVED_AT, "status": "NEW"}
        })
    );
}

#[test]
fn kafka_sink_example() {
    let flow = flow(
        "order-results",
        r#"
transform:
  fields:
    order_id: "data.id"
    result: "data.status"
    timestamp: "time"
"#,
    );
    assert_eq!(
        transformed(&flow, json!({"id": "o-1", "status": "done", "extra": 1})),
        json!({"order_id": "o-1", "result": "done", "timestamp": RECEIVED_AT})
    );
}

#[test]
fn transform_test_cli_example_input() {
    // `fiso transform test --input '{"order_id":"TEST-001","customer_id":"CUST-123"}'`
    let flow = flow(
        "order-flow",
        r#"
transform:
  fields:
    order_id: "data.order_id"
    customer: "data.customer_id"
"#,
    );
    assert_eq!(
        transformed(
            &flow,
            json!({"order_id": "TEST-001", "customer_id": "CUST-123"})
        ),
        json!({"order_id": "TEST-001", "customer": "CUST-123"})
    );
}

#[test]
fn a_missing_field_fails_the_transform() {
    let flow = flow(
        "strict",
        r#"
transform:
  fields:
    order_id: "data.legacy_id"
    total: "data.price * data.quantity"
"#,
    );
    let error = process(&flow, json!({"legacy_id": "L-1", "quantity": 3})).expect_err("fails");
    assert_eq!(error.code(), "TRANSFORM_FAILED");
    assert_eq!(
        error.to_string(),
        "transform field `total`: no such key: price"
    );
}

#[test]
fn an_unquoted_static_string_is_a_compile_error() {
    let errors = compile(
        "unquoted",
        r#"
transform:
  fields:
    status: "pending"
"#,
    )
    .expect_err("invalid");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code(), "CONFIG_INVALID");
    let message = errors[0].to_string();
    assert!(
        message.starts_with("transform.fields.status: undeclared reference `pending`"),
        "{message}"
    );
}

#[test]
fn invalid_cel_is_a_compile_error_with_its_path() {
    let errors = compile(
        "broken",
        r#"
transform:
  fields:
    total: "data.price * * data.quantity"
cloudevents:
  type: 'data.kind == ? "a" : "b"'
"#,
    )
    .expect_err("invalid");
    let paths: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(paths, ["transform.fields.total", "cloudevents.type"]);
    assert!(errors.iter().all(|e| e.to_string().contains("invalid CEL")));
}

// ---------------------------------------------------------------------------------------------
// CloudEvents

#[test]
fn full_cloudevents_spec_support_example() {
    let flow = flow(
        "full-spec",
        r#"
cloudevents:
  id: 'data.eventId + "-" + data.CTN' # CloudEvent ID for idempotency
  type: 'data.amount > 1000 ? "high-value" : "standard"' # Event type
  source: '"service-" + data.region' # Event source
  subject: 'data.customerId' # Optional subject
  data: 'data.payload' # Custom data field (default: transformed payload)
  datacontenttype: '"application/json"' # Content type (default: application/json)
  dataschema: '"https://example.com/schemas/v1/order.json"' # Schema URL (optional)
"#,
    );
    let input = json!({
        "eventId": "evt-1", "CTN": "555", "amount": 1500, "region": "eu",
        "customerId": "cust-9", "payload": {"sku": "A-1", "qty": 2}
    });
    let processed = process(&flow, input.clone()).expect("processes");
    assert_eq!(
        event_json(&processed),
        json!({
            "specversion": "1.0",
            "id": "evt-1-555",
            "type": "high-value",
            "source": "service-eu",
            "subject": "cust-9",
            "datacontenttype": "application/json",
            "dataschema": "https://example.com/schemas/v1/order.json",
            "time": RECEIVED_AT,
            "data": {"sku": "A-1", "qty": 2}
        })
    );
    // Without a transform the payload is the input, whatever `data` the envelope carries.
    assert_eq!(processed.payload().as_ref(), &input);

    let mut small = input;
    small["amount"] = json!(99.99);
    assert_eq!(
        event_json(&process(&flow, small).expect("processes"))["type"],
        json!("standard")
    );
}

#[test]
fn cel_expression_examples() {
    let flow = flow(
        "extraction",
        r#"
cloudevents:
  # Field extraction
  id: 'data.requestId' # Extract single field
  type: 'data.eventType' # Dynamic type from payload
  subject: 'data.order.id' # Nested field access
"#,
    );
    let event = event_json(
        &process(
            &flow,
            json!({"requestId": "req-1", "eventType": "order.shipped", "order": {"id": "o-77"}}),
        )
        .expect("processes"),
    );
    assert_eq!(event["id"], json!("req-1"));
    assert_eq!(event["type"], json!("order.shipped"));
    assert_eq!(event["subject"], json!("o-77"));
    assert_eq!(event["source"], json!("fiso-flow/extraction"));
}

#[test]
fn custom_data_is_the_whole_original_input() {
    let flow = flow(
        "whole",
        r#"
transform:
  fields:
    id: "data.id"
cloudevents:
  data: 'data' # Use entire original input as data
"#,
    );
    let input = json!({"id": 1, "zeta": {"b": 2, "a": 1}, "alpha": [1.5, "x"]});
    let processed = process(&flow, input.clone()).expect("processes");
    assert_eq!(event_json(&processed)["data"], input);
    // Passed through whole, the input keeps its key order.
    assert_eq!(
        to_string_plain(&event_json(&processed)["data"]).expect("prints"),
        r#"{"id":1,"zeta":{"b":2,"a":1},"alpha":[1.5,"x"]}"#
    );
    assert_eq!(processed.payload().as_ref(), &json!({"id": 1}));
}

#[test]
fn idempotency_pattern() {
    let flow = flow(
        "order-processing",
        r#"
# Combine eventId + CTN for idempotency using CEL
cloudevents:
  id: 'data.eventId + "-" + data.CTN'
  type: "order.created"
"#,
    );
    let input = json!({"eventId": "evt-123", "CTN": "456", "order": {"sku": "A", "qty": 1}});
    let processed = process(&flow, input.clone()).expect("processes");
    assert_eq!(
        event_json(&processed),
        json!({
            "specversion": "1.0",
            "id": "evt-123-456",
            "type": "order.created",
            "source": "fiso-flow/order-processing",
            "datacontenttype": "application/json",
            "time": RECEIVED_AT,
            "data": input
        })
    );
}

#[test]
fn payment_processor_custom_data_example() {
    let flow = flow(
        "payment-processor",
        r#"
transform:
  fields:
    transactionId: "data.txn_id"
    processedAt: "time"
cloudevents:
  id: "data.paymentId"
  type: "payment.processed"
  data: "data.rawPayment" # Extract specific field from original input
  dataschema: '"https://api.example.com/schemas/payment/v2.json"'
"#,
    );
    let processed = process(
        &flow,
        json!({
            "paymentId": "pay-999",
            "txn_id": "txn-abc",
            "rawPayment": {"amount": 100, "currency": "USD"},
            "metadata": {"region": "us-west"}
        }),
    )
    .expect("processes");
    let mut event = event_json(&processed);
    // The README's output shows some receive time: only its presence is the contract.
    let time = event
        .as_object_mut()
        .and_then(|o| o.remove("time"))
        .expect("time");
    assert!(time
        .as_str()
        .is_some_and(|t| t.parse::<DateTime<Utc>>().is_ok()));
    assert_eq!(
        event,
        json!({
            "specversion": "1.0",
            "id": "pay-999",
            "type": "payment.processed",
            "source": "fiso-flow/payment-processor",
            "dataschema": "https://api.example.com/schemas/payment/v2.json",
            "datacontenttype": "application/json",
            "data": {
                "amount": 100,
                "currency": "USD"
            }
        })
    );
    assert_eq!(
        to_string_plain(&event["data"]).expect("prints"),
        r#"{"amount":100,"currency":"USD"}"#
    );
    // The transform still ran; its output is not the event's data here.
    assert_eq!(
        processed.payload().as_ref(),
        &json!({"transactionId": "txn-abc", "processedAt": RECEIVED_AT})
    );
}

#[test]
fn order_pipeline_example_literals_and_jsonpath() {
    let body = r#"
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
"#;
    let errors = compile("order-pipeline", body).expect_err("JSONPath is gone");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code(), "CONFIG_INVALID");
    assert_eq!(
        errors[0].to_string(),
        "cloudevents.subject: JSONPath `$.legacy_id` is not supported: JSONPath `$.x` was \
         replaced by CEL `data.x` in v0.8 (write `data.legacy_id`)"
    );

    // With the subject rewritten as the message says, the literals are accepted as written.
    let fixed = flow(
        "order-pipeline",
        &body.replace(r#"subject: "$.legacy_id""#, r#"subject: "data.legacy_id""#),
    );
    let processed = process(
        &fixed,
        json!({"legacy_id": "L-5", "amount": 12, "customer_name": "Cy"}),
    )
    .expect("processes");
    assert_eq!(
        event_json(&processed),
        json!({
            "specversion": "1.0",
            "id": "orders-0-42",
            "type": "order.created",
            "source": "order-service",
            "subject": "L-5",
            "datacontenttype": "application/json",
            "time": RECEIVED_AT,
            "data": {"order_id": "L-5", "total": 12, "customer": "Cy", "status": "pending"}
        })
    );
}

#[test]
fn type_and_source_from_expressions_not_literals() {
    // A dotted value whose root is a scope variable is CEL, not a literal.
    let flow = flow(
        "dynamic",
        r#"
cloudevents:
  type: data.kind
  source: source
"#,
    );
    let event = event_json(&process(&flow, json!({"kind": "k.v1"})).expect("processes"));
    assert_eq!(event["type"], json!("k.v1"));
    assert_eq!(event["source"], json!("fiso-flow/dynamic"));
}

#[test]
fn cloudevents_error_paths() {
    let empty_type = flow("e1", "cloudevents:\n  type: 'data.kind'\n");
    let error = process(&empty_type, json!({"kind": ""})).expect_err("empty type");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert_eq!(error.to_string(), "cloudevents.type: must not be empty");

    // A number where a string belongs is its string form, as upstream.
    let int_subject = flow("e2", "cloudevents:\n  subject: 'data.customerId'\n");
    let event = event_json(&process(&int_subject, json!({"customerId": 42})).expect("int subject"));
    assert_eq!(event["subject"], json!("42"));
    let null_id = flow("e2b", "cloudevents:\n  id: 'data.customerId'\n");
    let error = process(&null_id, json!({"customerId": null})).expect_err("null id");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert_eq!(
        error.to_string(),
        "cloudevents.id: must be a string, not null (convert it with string(...))"
    );

    let missing = flow(
        "e3",
        "cloudevents:\n  id: 'data.eventId + \"-\" + data.CTN'\n",
    );
    let error = process(&missing, json!({"eventId": "evt-1"})).expect_err("no CTN");
    assert_eq!(error.code(), "CLOUDEVENT_WRAP_FAILED");
    assert_eq!(error.to_string(), "cloudevents.id: no such key: CTN");

    let errors = compile("e4", "cloudevents:\n  type: 'data.kind +'\n").expect_err("invalid CEL");
    assert_eq!(errors[0].code(), "CONFIG_INVALID");
    assert!(errors[0]
        .to_string()
        .starts_with("cloudevents.type: invalid CEL"));
}

#[test]
fn a_structured_cloudevent_input_keeps_its_identity() {
    let flow = flow(
        "ce-in",
        r#"
transform:
  fields:
    total: "data.amount * 2"
    seen: "type + '@' + source"
"#,
    );
    let processed = process(
        &flow,
        json!({
            "specversion": "1.0", "id": "ce-7", "source": "/shop", "type": "order.placed",
            "time": "2026-01-01T00:00:00Z", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "data": {"amount": 2.25}
        }),
    )
    .expect("processes");
    assert_eq!(
        event_json(&processed),
        json!({
            "specversion": "1.0",
            "id": "ce-7",
            "type": "order.placed",
            "source": "/shop",
            "datacontenttype": "application/json",
            "time": "2026-01-01T00:00:00Z",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "data": {"total": 4.5, "seen": "order.placed@/shop"}
        })
    );
}
