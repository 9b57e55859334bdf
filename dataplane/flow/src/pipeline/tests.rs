//! [`Pipeline::handle`] with a fake sink and an in-memory dead-letter queue: what becomes of an
//! event for each sink answer, the dead letters written (with the headers DESIGN.md's
//! "Delivery failure" lists), interceptor rejections and refusals before delivery.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::http::StatusCode;
use bytes::Bytes;
use fiso_config::flow::WasmRuntime;
use fiso_runtime::MetricsRegistry;

use super::delivery::{DeliveryErrorKind, Origin, Receipt, SinkResponse};
use super::*;
use crate::cel::budget::Budget;
use crate::kafka::client::KafkaRecord;
use crate::kafka::dlq::DeadLetter;
use crate::{CloudEvent, Data, FlowDefaults, InputEvent};

/// A sink that answers from a script and remembers what it was given.
#[derive(Default)]
struct FakeSink {
    answers: Mutex<VecDeque<Result<Receipt, DeliveryError>>>,
    delivered: Mutex<Vec<(CloudEvent, String)>>,
    refuse_prepare: bool,
    refuse_seal: bool,
}

impl FakeSink {
    fn answering(answer: Result<Receipt, DeliveryError>) -> Self {
        FakeSink {
            answers: Mutex::new(VecDeque::from([answer])),
            ..Default::default()
        }
    }
}

impl Sink for FakeSink {
    /// The input event's id, as a sink would render a key from it.
    type Prepared = String;

    fn prepare(&self, input: &InputEvent, _budget: Budget) -> Result<String, FlowError> {
        if self.refuse_prepare {
            return Err(FlowError::Transform {
                field: "sink.config.key".into(),
                message: "no such key: missing".into(),
            });
        }
        Ok(input.id().to_owned())
    }

    fn seal(&self, event: &CloudEvent, prepared: &mut String) -> Result<(), FlowError> {
        if self.refuse_seal {
            return Err(FlowError::Transform {
                field: "sink.config.workflowIdExpr".into(),
                message: "no field `data.orderId`".into(),
            });
        }
        prepared.push_str(&format!("/{}", event.ty()));
        Ok(())
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        prepared: String,
        _ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        self.delivered
            .lock()
            .unwrap()
            .push((event.clone(), prepared));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(Receipt::Response(response(StatusCode::OK, "ok"))))
    }
}

/// A dead-letter queue in memory; `broken` refuses every letter.
#[derive(Default)]
struct MemoryQueue {
    letters: Mutex<Vec<KafkaRecord>>,
    broken: bool,
}

impl DeadLetterQueue for MemoryQueue {
    fn topic(&self) -> &str {
        "fiso-dlq-orders"
    }

    async fn write(&self, letter: &DeadLetter) -> Result<KafkaDelivery, KafkaDeliveryError> {
        if self.broken {
            return Err(KafkaDeliveryError {
                topic: self.topic().to_owned(),
                attempts: 1,
                message: "broker down".into(),
            });
        }
        let mut letters = self.letters.lock().unwrap();
        letters.push(letter.record());
        Ok(KafkaDelivery {
            partition: 0,
            offset: letters.len() as i64 - 1,
        })
    }
}

fn response(status: StatusCode, body: &'static str) -> SinkResponse {
    SinkResponse {
        status,
        content_type: None,
        body: Bytes::from_static(body.as_bytes()),
        truncated: false,
    }
}

const FLOW: &str = "
name: orders
source:
  type: http
  config:
    listenAddr: \":0\"
    path: /orders
transform:
  fields:
    total: data.amount * 2
cloudevents:
  type: '\"order.created\"'
sink:
  type: http
  config:
    url: http://127.0.0.1:9/in
";

fn pipeline(
    sink: FakeSink,
    dlq: Option<MemoryQueue>,
    interceptors: InterceptorChain,
) -> Pipeline<FakeSink, MemoryQueue> {
    let config: FlowConfig = serde_yaml_ng::from_str(FLOW).expect("valid flow YAML");
    let compiled = CompiledFlow::compile(&config).expect("compiles");
    let parts = Parts {
        version: "v1",
        metrics: FlowMetrics::register(&MetricsRegistry::new()).expect("metrics"),
        dir: None,
        kafka_source: None,
        apps: &Default::default(),
    };
    Pipeline::assemble(&config, parts, compiled, sink, interceptors, dlq)
}

fn plain(sink: FakeSink, dlq: Option<MemoryQueue>) -> Pipeline<FakeSink, MemoryQueue> {
    pipeline(sink, dlq, InterceptorChain::default())
}

fn input(data: serde_json::Value) -> Result<InputEvent, FlowError> {
    let flow = FlowDefaults::new("orders");
    InputEvent::from_json(data, flow.event().with_id("evt-1"))
}

/// The context of a Kafka record `orders-3-41` with key `k-1`.
fn kafka_ctx() -> DeliveryContext {
    DeliveryContext {
        correlation_id: "corr-1".into(),
        body: Bytes::from_static(br#"{"amount":21}"#),
        origin: Some(Origin {
            topic: "orders".into(),
            partition: 3,
            offset: 41,
            key: Some(b"k-1".to_vec()),
        }),
        ..Default::default()
    }
}

fn text(r: &KafkaRecord, name: &str) -> Option<String> {
    r.header(name)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

#[tokio::test]
async fn a_delivered_event_is_transformed_wrapped_and_prepared() {
    let flow = plain(FakeSink::default(), None);
    let outcome = flow
        .handle(
            input(serde_json::json!({"amount": 21})),
            &DeliveryContext::default(),
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::Delivered(Receipt::Response(r)) if r.status == StatusCode::OK),
        "{outcome:?}"
    );
    let delivered = flow.sink.delivered.lock().unwrap();
    let (event, prepared) = &delivered[0];
    assert_eq!(event.ty(), "order.created");
    assert_eq!(event.id(), "evt-1");
    assert_eq!(
        prepared, "evt-1/order.created",
        "prepared from the input, sealed from the event"
    );
    let data: serde_json::Value = match event.data() {
        Some(Data::Json(v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(data, serde_json::json!({"total": 42}));
}

#[tokio::test]
async fn every_failure_kind_reaches_the_source_as_the_sink_said() {
    for (kind, attempts) in [
        (DeliveryErrorKind::Rejected, 1),
        (DeliveryErrorKind::Timeout, 4),
        (DeliveryErrorKind::Unavailable, 4),
        (DeliveryErrorKind::Other, 0),
    ] {
        let error = DeliveryError::new(kind, attempts, format!("{kind:?}"));
        let flow = plain(FakeSink::answering(Err(error)), None);
        let outcome = flow
            .handle(
                input(serde_json::json!({"amount": 1})),
                &DeliveryContext::default(),
            )
            .await;
        match outcome {
            Outcome::Failed(e) => {
                assert_eq!((e.kind, e.attempts()), (kind, attempts));
                assert_eq!(e.to_string(), format!("{kind:?}"));
            }
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refusal_with_the_sinks_answer_keeps_it_for_the_caller() {
    let error = DeliveryError::new(DeliveryErrorKind::Rejected, 1, "sink rejected")
        .with_response(response(StatusCode::UNPROCESSABLE_ENTITY, "nope"));
    let flow = plain(FakeSink::answering(Err(error)), None);
    let outcome = flow
        .handle(
            input(serde_json::json!({"amount": 1})),
            &DeliveryContext::default(),
        )
        .await;
    let Outcome::Failed(e) = outcome else {
        panic!("{outcome:?}");
    };
    let answer = e.refusal().expect("the sink's answer");
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::UNPROCESSABLE_ENTITY, &b"nope"[..])
    );
    // A failure that is not a refusal has no answer to relay, even with a response.
    let exhausted = DeliveryError::new(DeliveryErrorKind::Unavailable, 3, "503")
        .with_response(response(StatusCode::SERVICE_UNAVAILABLE, "busy"));
    assert!(exhausted.refusal().is_none());
    assert_eq!(
        exhausted.sink_status(),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test]
async fn a_failed_delivery_is_dead_lettered_with_its_headers() {
    let error = DeliveryError::new(DeliveryErrorKind::Other, 4, "sink answered 500")
        .with_response(response(StatusCode::INTERNAL_SERVER_ERROR, "boom"));
    let flow = plain(
        FakeSink::answering(Err(error)),
        Some(MemoryQueue::default()),
    );
    let outcome = flow
        .handle(input(serde_json::json!({"amount": 21})), &kafka_ctx())
        .await;
    match &outcome {
        Outcome::DeadLettered { error, topic, at } => {
            assert_eq!(topic, "fiso-dlq-orders");
            assert_eq!((at.partition, at.offset), (0, 0));
            assert_eq!(error.attempts(), 4);
        }
        other => panic!("{other:?}"),
    }
    let letters = flow.dlq.as_ref().unwrap().letters.lock().unwrap();
    let r = &letters[0];
    assert_eq!(r.key.as_deref(), Some(&b"k-1"[..]));
    assert_eq!(r.value.as_deref(), Some(&br#"{"amount":21}"#[..]));
    for (header, value) in [
        ("fiso-error-code", "SINK_DELIVERY_FAILED"),
        ("fiso-error-message", "sink answered 500"),
        ("fiso-retry-count", "4"),
        ("fiso-flow-name", "orders"),
        ("fiso-correlation-id", "corr-1"),
        ("fiso-http-status", "500"),
        ("fiso-response-body", "boom"),
        ("fiso-original-topic", "orders"),
        ("fiso-original-partition", "3"),
        ("fiso-original-offset", "41"),
    ] {
        assert_eq!(text(r, header).as_deref(), Some(value), "{header}");
    }
    assert!(text(r, "fiso-failed-at").is_some());
}

#[tokio::test]
async fn a_dead_letter_queue_that_fails_leaves_the_delivery_failure() {
    let error = DeliveryError::new(DeliveryErrorKind::Unavailable, 2, "unreachable");
    let queue = MemoryQueue {
        broken: true,
        ..Default::default()
    };
    let flow = plain(FakeSink::answering(Err(error)), Some(queue));
    let outcome = flow
        .handle(input(serde_json::json!({"amount": 1})), &kafka_ctx())
        .await;
    assert!(
        matches!(&outcome, Outcome::Failed(e) if e.kind == DeliveryErrorKind::Unavailable),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn refusals_before_delivery_never_reach_the_sink() {
    // Bad input, a transform failure, the sink's preparation, the sink's sealing.
    let cases: [(FakeSink, Result<InputEvent, FlowError>, &str); 4] = [
        (
            FakeSink::default(),
            Err(FlowError::invalid_input("not JSON")),
            "INPUT_INVALID",
        ),
        (
            FakeSink::default(),
            input(serde_json::json!({"other": 1})),
            "TRANSFORM_FAILED",
        ),
        (
            FakeSink {
                refuse_prepare: true,
                ..Default::default()
            },
            input(serde_json::json!({"amount": 1})),
            "TRANSFORM_FAILED",
        ),
        (
            FakeSink {
                refuse_seal: true,
                ..Default::default()
            },
            input(serde_json::json!({"amount": 1})),
            "TRANSFORM_FAILED",
        ),
    ];
    for (sink, event, code) in cases {
        let flow = plain(sink, Some(MemoryQueue::default()));
        let outcome = flow.handle(event, &kafka_ctx()).await;
        let Outcome::Invalid(e) = outcome else {
            panic!("{code}: {outcome:?}");
        };
        assert_eq!(e.code(), code, "{e}");
        assert!(flow.sink.delivered.lock().unwrap().is_empty(), "{code}");
        assert!(flow
            .dlq
            .as_ref()
            .unwrap()
            .letters
            .lock()
            .unwrap()
            .is_empty());
        // A Kafka source dead-letters them itself: one letter, no attempts.
        let at = flow.dead_letter_refused(&e, &kafka_ctx()).await.unwrap();
        assert_eq!(
            at,
            Some(KafkaDelivery {
                partition: 0,
                offset: 0
            })
        );
        let letters = flow.dlq.as_ref().unwrap().letters.lock().unwrap();
        assert_eq!(text(&letters[0], "fiso-error-code").as_deref(), Some(code));
        assert_eq!(text(&letters[0], "fiso-retry-count").as_deref(), Some("0"));
        assert!(letters[0].header("fiso-http-status").is_none());
    }
    let without_queue = plain(FakeSink::default(), None);
    let refused = FlowError::invalid_input("x");
    assert_eq!(
        without_queue
            .dead_letter_refused(&refused, &kafka_ctx())
            .await
            .unwrap(),
        None
    );
}

/// The chain of one `dataplane/wasm/testdata/<name>.wat` interceptor.
fn wasm_chain(name: &str) -> InterceptorChain {
    crate::interceptor::tests::chain(WasmRuntime::Wasmtime, name, |_| {})
}

#[tokio::test]
async fn an_interceptor_rejection_is_the_outcome_and_nothing_is_delivered() {
    let chain = wasm_chain("reject");
    let flow = pipeline(FakeSink::default(), Some(MemoryQueue::default()), chain);
    let outcome = flow
        .handle(input(serde_json::json!({"amount": 1})), &kafka_ctx())
        .await;
    match outcome {
        Outcome::Rejected {
            status,
            reason,
            module,
        } => {
            assert_eq!((status, reason.as_str()), (422, "bad"));
            assert!(module.contains("reject.wasm"), "{module}");
        }
        other => panic!("{other:?}"),
    }
    assert!(flow.sink.delivered.lock().unwrap().is_empty());
    assert!(flow
        .dlq
        .as_ref()
        .unwrap()
        .letters
        .lock()
        .unwrap()
        .is_empty());
}

/// A passthrough flow (no transform, no overrides) through an interceptor that echoes its
/// input delivers every CloudEvent exactly as it came: the interceptor contract is the JSON
/// format, so data forms and JSON-typed extensions survive it.
#[tokio::test]
async fn an_echo_interceptor_delivers_every_event_form_unchanged() {
    let config: FlowConfig = serde_yaml_ng::from_str(
        "name: relay\nsource: {type: http, config: {listenAddr: ':0', path: /r}}\n\
         sink: {type: http, config: {url: 'http://127.0.0.1:9/in'}}\n",
    )
    .unwrap();
    let parts = Parts {
        version: "v1",
        metrics: FlowMetrics::register(&MetricsRegistry::new()).expect("metrics"),
        dir: None,
        kafka_source: None,
        apps: &Default::default(),
    };
    let compiled = CompiledFlow::compile(&config).expect("compiles");
    let flow: Pipeline<FakeSink, MemoryQueue> = Pipeline::assemble(
        &config,
        parts,
        compiled,
        FakeSink::default(),
        wasm_chain("echo"),
        None,
    );
    let base = serde_json::json!({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t",
        "time": "2026-01-02T03:04:05.5+01:00", "subject": "caf\u{e9}", "n": -7, "ok": false,
        "dataschema": "https://e.com/s.json"});
    for data in [
        serde_json::json!({}),
        serde_json::json!({"data": null}),
        serde_json::json!({"data": {"a": [1, 2.50, "x"]}}),
        serde_json::json!({"data": "just a JSON string"}),
        serde_json::json!({"datacontenttype": "text/plain; charset=utf-8", "data": "Hello, \u{1f30e}!\n"}),
        serde_json::json!({"datacontenttype": "application/octet-stream", "data_base64": "AP+AgQ=="}),
        serde_json::json!({"data_base64": "AAE="}),
    ] {
        let mut json = base.clone();
        json.as_object_mut()
            .unwrap()
            .extend(data.as_object().unwrap().clone());
        let event = crate::event::json_format::from_json(json.clone()).unwrap();
        let input = InputEvent::from_event(event.clone(), chrono::Utc::now());
        let outcome = flow.handle(Ok(input), &DeliveryContext::default()).await;
        assert!(
            matches!(outcome, Outcome::Delivered(_)),
            "{json}: {outcome:?}"
        );
        let delivered = flow.sink.delivered.lock().unwrap().pop().unwrap().0;
        assert_eq!(delivered, event, "{json}");
    }
}
