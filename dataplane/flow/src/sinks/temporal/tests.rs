//! Temporal sink without a server: workflow ids, params, build errors, classification, an
//! unreachable server.

use std::time::Duration;

use temporalio_client::tonic::{Code, Status};

use super::*;
use crate::retry::Attempt;
use crate::InputEvent;
use fiso_config::flow::TemporalParam;
use pretty_assertions::assert_eq;
use serde_json::json;

fn envelope() -> Json {
    json!({
        "specversion": "1.0",
        "id": "evt-1",
        "source": "orders",
        "type": "order.created",
        "data": {
            "orderId": "A-17",
            "customerId": 42,
            "amount": 1e21,
            "ratio": 0.5,
            "vip": true,
            "gone": null,
            "blank": "",
            "items": [{"sku": "x"}],
        },
    })
}

fn render(expr: &str) -> Result<String, String> {
    WorkflowIdTemplate::parse(expr)?.render(&envelope())
}

#[test]
fn workflow_id_placeholders_resolve_against_the_envelope() {
    assert_eq!(render("{{.id}}").unwrap(), "evt-1");
    assert_eq!(render("{{.type}}").unwrap(), "order.created");
    assert_eq!(render("{{.data.orderId}}").unwrap(), "A-17");
    assert_eq!(
        render("order-{{.data.customerId}}-{{ .data.orderId }}").unwrap(),
        "order-42-A-17"
    );
    assert_eq!(render("{{.data.items.0.sku}}").unwrap(), "x");
    assert_eq!(render("static").unwrap(), "static");
}

#[test]
fn workflow_id_scalars_render_plainly() {
    assert_eq!(
        render("{{.data.amount}}").unwrap(),
        "1000000000000000000000"
    );
    assert_eq!(render("{{.data.ratio}}").unwrap(), "0.5");
    assert_eq!(render("{{.data.vip}}").unwrap(), "true");
}

#[test]
fn workflow_id_missing_or_unusable_fields_are_errors() {
    for (expr, why) in [
        ("order-{{.data.missing}}", "no such field"),
        ("{{.data.orderId.deeper}}", "no such field"),
        ("{{.data.gone}}", "null"),
        ("{{.data.blank}}", "empty"),
        ("{{.data}}", "not a string"),
        ("{{.data.items}}", "not a string"),
    ] {
        let e = render(expr).unwrap_err();
        assert!(e.contains(why), "{expr}: {e}");
    }
}

#[test]
fn workflow_id_syntax_matches_validation() {
    for bad in [
        "",
        "  ",
        "{{.a",
        "{{data.id}}",
        "{{.}}",
        "{{.a..b}}",
        "x}}",
        "{{.a b}}",
    ] {
        assert!(WorkflowIdTemplate::parse(bad).is_err(), "{bad:?}");
    }
    assert!(WorkflowIdTemplate::parse("a-{{.data.order_id}}-{{.x-y}}").is_ok());
}

fn config(extra: &str) -> TemporalSinkConfig {
    serde_yaml_ng::from_str(&format!(
        "hostPort: 127.0.0.1:7233\ntaskQueue: q\nworkflowType: ProcessOrder\n{extra}"
    ))
    .unwrap()
}

fn cloud_event(id: &str) -> CloudEvent {
    crate::event::json_format::from_json(json!({
        "specversion": "1.0", "id": id, "source": "orders", "type": "order.created",
        "datacontenttype": "application/json", "data": {"orderId": "A-17"}
    }))
    .unwrap()
}

#[test]
fn default_workflow_id_is_type_and_event_id() {
    let sink = TemporalSink::new(&config(""), RetryPolicy::default(), Budget::DEFAULT).unwrap();
    assert_eq!(
        sink.workflow_id(&cloud_event("orders-0-17")).unwrap(),
        "ProcessOrder-orders-0-17"
    );
    let sink = TemporalSink::new(
        &config("workflowIdExpr: 'order-{{.data.orderId}}'"),
        RetryPolicy::default(),
        Budget::DEFAULT,
    )
    .unwrap();
    assert_eq!(sink.workflow_id(&cloud_event("e")).unwrap(), "order-A-17");
    let sink = TemporalSink::new(
        &config("workflowIdExpr: '{{.data.nope}}'"),
        RetryPolicy::default(),
        Budget::DEFAULT,
    )
    .unwrap();
    let e = sink.workflow_id(&cloud_event("e")).unwrap_err();
    assert_eq!(e.code(), "TRANSFORM_FAILED");
}

fn input(json: Json) -> InputEvent {
    let defaults = crate::FlowDefaults::new("f");
    InputEvent::from_json(json, defaults.event()).unwrap()
}

#[test]
fn params_keep_their_json_types() {
    let mut cfg = config("");
    cfg.params = [
        "data.name",
        "data.count",
        "data.amount",
        "data.ok",
        "data.nothing",
        "[data.count, data.name]",
        "data.order",
        "data.count + 1",
        "id",
    ]
    .into_iter()
    .map(|e| TemporalParam { expr: e.into() })
    .collect();
    let sink = TemporalSink::new(&cfg, RetryPolicy::default(), Budget::DEFAULT).unwrap();
    let input = input(json!({
        "specversion": "1.0", "id": "evt-9", "source": "s", "type": "t",
        "data": {"name": "n", "count": 3, "amount": 99.5, "ok": true, "nothing": null,
                 "order": {"id": "o-1", "lines": [1, 2]}},
    }));
    let params = sink.params(&Scope::new(&input)).unwrap();
    assert_eq!(
        params,
        vec![
            json!("n"),
            json!(3),
            json!(99.5),
            json!(true),
            json!(null),
            json!([3, "n"]),
            json!({"id": "o-1", "lines": [1, 2]}),
            json!(4),
            json!("evt-9"),
        ]
    );
    assert!(params[1].is_i64() && params[2].is_f64() && params[7].is_i64());
    let payload = json_payload(&params[6]).unwrap();
    assert_eq!(payload.metadata["encoding"], b"json/plain");
    assert_eq!(payload.data, br#"{"id":"o-1","lines":[1,2]}"#);
}

#[test]
fn a_failing_param_names_its_index() {
    let mut cfg = config("");
    cfg.params = vec![
        TemporalParam {
            expr: "data.a".into(),
        },
        TemporalParam {
            expr: "data.missing".into(),
        },
    ];
    let sink = TemporalSink::new(&cfg, RetryPolicy::default(), Budget::DEFAULT).unwrap();
    let input = input(json!({"a": 1}));
    let e = sink.params(&Scope::new(&input)).unwrap_err();
    assert!(e.to_string().contains("sink.config.params[1].expr"), "{e}");
}

#[test]
fn build_errors_name_the_field_and_hide_the_key() {
    let e = TemporalSink::new(
        &config("params: [{expr: 'data.'}]"),
        RetryPolicy::default(),
        Budget::DEFAULT,
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("sink.config.params[0].expr"),
        "{e}"
    );
    let mut cfg = config("");
    cfg.host_port = "no port".into();
    assert!(matches!(
        TemporalSink::new(&cfg, RetryPolicy::default(), Budget::DEFAULT),
        Err(TemporalBuildError::HostPort(_))
    ));
    let dir = std::env::temp_dir().join(format!("fiso-temporal-key-{}", std::process::id()));
    std::fs::write(&dir, "s3cr3t-key\n").unwrap();
    let sink = TemporalSink::new(
        &config(&format!("auth: {{apiKeyFile: {}}}", dir.display())),
        RetryPolicy::default(),
        Budget::DEFAULT,
    )
    .unwrap();
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(sink.inner.connector.api_key.as_deref(), Some("s3cr3t-key"));
    assert!(!format!("{sink:?}").contains("s3cr3t"));
}

#[test]
fn tls_options_build_from_config() {
    let sink = TemporalSink::new(
        &config("tls: {enabled: true, skipVerify: true}"),
        RetryPolicy::default(),
        Budget::DEFAULT,
    )
    .unwrap();
    let tls = sink.inner.connector.tls.as_ref().expect("TLS on");
    assert!(tls.server_cert_verifier.is_some());
    assert_eq!(sink.inner.connector.target.scheme(), "https");
    let e = TemporalSink::new(
        &config("tls: {enabled: true, caFile: /nonexistent/ca.pem}"),
        RetryPolicy::default(),
        Budget::DEFAULT,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("sink.config.tls.caFile"), "{e}");
    let plain = TemporalSink::new(
        &config("tls: {enabled: false}"),
        RetryPolicy::default(),
        Budget::DEFAULT,
    );
    assert_eq!(plain.unwrap().inner.connector.target.scheme(), "http");
}

#[test]
fn status_codes_are_classified_like_http() {
    let kind = |code| match classify_call(Err(Status::new(code, "x"))) {
        Attempt::Retryable((k, _), _) => ("retry", k),
        Attempt::Permanent((k, _)) => ("final", k),
        Attempt::Success(_) => ("ok", TemporalFailure::Request),
    };
    assert_eq!(
        kind(Code::Unavailable),
        ("retry", TemporalFailure::Unavailable)
    );
    assert_eq!(
        kind(Code::ResourceExhausted),
        ("retry", TemporalFailure::Unavailable)
    );
    assert_eq!(
        kind(Code::DeadlineExceeded),
        ("retry", TemporalFailure::Timeout)
    );
    assert_eq!(kind(Code::NotFound), ("final", TemporalFailure::Rejected));
    assert_eq!(
        kind(Code::InvalidArgument),
        ("final", TemporalFailure::Rejected)
    );
    assert_eq!(kind(Code::AlreadyExists).0, "ok");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported_unavailable() {
    // A port nothing listens on: bind, read it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config("");
    cfg.host_port = format!("127.0.0.1:{port}");
    let policy = RetryPolicy {
        max_retries: 2,
        initial: Duration::from_millis(1),
        max: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let sink = TemporalSink::new(&cfg, policy, Budget::DEFAULT).unwrap();
    let e = sink
        .send(
            &cloud_event("e-1"),
            "wf-1".into(),
            Vec::new(),
            &DeliveryContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!((e.attempts, e.kind), (3, TemporalFailure::Unavailable));
    assert_eq!(e.workflow_id, "wf-1");
    let readiness = Readiness::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(sink.clone().keep_connected(
        readiness.clone(),
        "flow/x/sink".into(),
        cancel.clone(),
    ));
    while readiness.state("flow/x/sink").is_none() {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        readiness.state("flow/x/sink"),
        Some(fiso_runtime::health::ComponentState::NotReady { .. })
    ));
    cancel.cancel();
    task.await.unwrap();
}
