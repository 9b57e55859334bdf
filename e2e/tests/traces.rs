//! OpenTelemetry traces exported to a real collector (`rotel-agent`, see `fiso_e2e::otel`):
//! the span tree of a Kafka → HTTP flow and of an HTTP flow whose sink fails once, over
//! OTLP/gRPC and OTLP/HTTP; gRPC sink attempts continued by the receiving flow, a Temporal
//! start carrying `_tracer-data` (the dev server); the Link's request span with its upstream
//! attempt, and no credential anywhere in what is exported; its breaker state, interceptor and
//! Kafka `send` spans; `trace_id` in the logs; a Link configured by the `tracing:` section of its
//! file alone.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fiso_e2e::kafka::{brokers, consume, create_topic, kafka_source, produce_in_order, unique};
use fiso_e2e::link::{http_target, Link};
use fiso_e2e::otel::{Collector, Span};
use fiso_e2e::temporal::{history, started, temporal_addr};
use fiso_e2e::wasm::{engine_module, fixed};
use fiso_e2e::{
    client, eventually, send, Answer, FisoProcess, FlowDir, HttpFlow, Reply, Script, SinkServer,
    DEADLINE,
};
use pretty_assertions::assert_eq;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    caller_in(TRACE_ID)
}

/// `{"n":1}` posted to `url` from within the caller's trace.
async fn post_in_callers_trace(url: &str) -> Answer {
    send(
        client()
            .post(url)
            .header("content-type", "application/json")
            .header("traceparent", caller_traceparent())
            .body(r#"{"n":1}"#),
    )
    .await
}

/// A caller's `traceparent` in trace `trace_id`.
fn caller_in(trace_id: &str) -> String {
    format!("00-{trace_id}-{CALLER_SPAN}-01")
}

/// Trace ids of their own for the requests of one test.
fn trace_id(n: u32) -> String {
    format!("{:032x}", 0x4bf9_0000_u128 + u128::from(n))
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    match named(spans, name).as_slice() {
        [span] => span,
        other => panic!("expected one `{name}` span, got {other:#?}\nall: {spans:#?}"),
    }
}

/// `00-<trace>-<parent>-<flags>` → (trace, parent).
fn trace_and_parent(traceparent: &str) -> (&str, &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1], parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_http_flow_continues_the_record_trace_over_grpc() {
    let collector = Collector::start().await;
    let sink = SinkServer::start(Script::always(Reply::status(200))).await;
    let topic = unique("traces-in");
    let group = unique("traces-group");
    // The topic exists before the consumer subscribes, so it is assigned at once rather than
    // at the next metadata refresh.
    create_topic(&topic, 1).await;
    let dir = FlowDir::new();
    dir.write(
        "traced.yaml",
        &format!(
            "name: traced\n{}sink:\n  type: http\n  config:\n    url: {}\n",
            kafka_source(&topic, &group),
            sink.url("/events")
        ),
    );
    let fiso = FisoProcess::start_with_env(&dir.path(), collector.env("grpc")).await;
    fiso.wait_for_log(|l| l.is("exporting traces over OTLP"))
        .await;
    produce_in_order(
        &topic,
        &[(
            vec![
                ("traceparent".into(), caller_traceparent().into_bytes()),
                ("tracestate".into(), b"vendor=1".to_vec()),
            ],
            br#"{"id":"o-1"}"#.to_vec(),
        )],
    )
    .await;

    let got = sink.wait_for_requests(1).await.remove(0);
    let spans = collector
        .wait_for_trace(TRACE_ID, |s| {
            ["flow traced", "transform", "POST"]
                .iter()
                .all(|n| s.iter().any(|span| span.name == *n))
        })
        .await;

    let flow = one(&spans, "flow traced");
    assert_eq!(
        flow.parent_id, CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(flow.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(flow.attr("messaging.system"), Some("kafka"));
    assert_eq!(
        flow.attr("messaging.destination.name"),
        Some(topic.as_str())
    );
    assert_eq!(flow.attr("messaging.destination.partition.id"), Some("0"));
    assert_eq!(flow.attr("messaging.kafka.offset"), Some("0"));
    assert_eq!(
        flow.attr("messaging.consumer.group.name"),
        Some(group.as_str())
    );
    assert_eq!(
        flow.attr("messaging.message.id"),
        Some(format!("{topic}-0-0").as_str())
    );
    let transform = one(&spans, "transform");
    assert_eq!(transform.parent_id, flow.span_id);
    let attempt = one(&spans, "POST");
    assert_eq!(attempt.parent_id, flow.span_id);
    assert_eq!(attempt.kind, "SPAN_KIND_CLIENT");
    assert_eq!(attempt.attr("http.response.status_code"), Some("200"));

    // The sink continues the trace from the delivery attempt.
    let (trace, parent) = trace_and_parent(got.header("traceparent").expect("traceparent"));
    assert_eq!((trace, parent), (TRACE_ID, attempt.span_id.as_str()));
    assert_eq!(got.header("tracestate"), Some("vendor=1"));
    // The CloudEvent's distributed-tracing extension names Fiso's flow span.
    let ce = got.json();
    let (trace, parent) = trace_and_parent(ce["traceparent"].as_str().expect("extension"));
    assert_eq!((trace, parent), (TRACE_ID, flow.span_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_flow_retry_shows_each_attempt_over_http_protobuf_and_logs_carry_the_trace() {
    let collector = Collector::start().await;
    let sink = SinkServer::start(Script::first([Reply::status(503)], Reply::status(201))).await;
    let dir = FlowDir::new();
    dir.write(
        "retried.yaml",
        &HttpFlow::new("retried", "127.0.0.1:0", "/in", &sink.url("/events"))
            .with("errorHandling:\n  maxRetries: 2\n  initialInterval: 10ms\n  maxInterval: 20ms")
            .yaml(),
    );
    let mut env = collector.env("http/protobuf");
    env.push(("FISO_LOG_LEVEL", "debug".to_owned()));
    let fiso = FisoProcess::start_with_env(&dir.path(), env).await;
    let url = format!("http://{}/in", fiso.http_addr("127.0.0.1:0").await);

    let answer = post_in_callers_trace(&url).await;
    assert_eq!(answer.status.as_u16(), 201, "{}", answer.text());

    let spans = collector
        .wait_for_trace(TRACE_ID, |s| {
            s.iter().any(|x| x.name == "flow retried") && named(s, "POST").len() == 2
        })
        .await;
    let flow = one(&spans, "flow retried");
    assert_eq!(flow.parent_id, CALLER_SPAN);
    assert_eq!(flow.kind, "SPAN_KIND_SERVER");
    let mut attempts = named(&spans, "POST");
    attempts.sort_by_key(|s| s.attr("http.request.resend_count").map(str::to_owned));
    let (first, second) = (attempts[0], attempts[1]);
    assert!(attempts.iter().all(|a| a.parent_id == flow.span_id));
    assert_eq!(first.attr("http.request.resend_count"), None);
    assert_eq!(first.attr("http.response.status_code"), Some("503"));
    assert_eq!(first.attr("error.type"), Some("503"));
    assert_eq!(first.status, "STATUS_CODE_ERROR");
    assert_eq!(second.attr("http.request.resend_count"), Some("1"));
    assert_eq!(second.attr("http.response.status_code"), Some("201"));
    // Each attempt is the parent the sink saw on that request.
    let parents: Vec<String> = sink
        .requests()
        .iter()
        .map(|r| {
            trace_and_parent(r.header("traceparent").unwrap())
                .1
                .to_owned()
        })
        .collect();
    assert_eq!(parents, [first.span_id.clone(), second.span_id.clone()]);

    // A log line written inside the event's spans names its trace and span.
    let retry_log = fiso.wait_for_log(|l| l.is("retrying sink delivery")).await;
    let span = retry_log
        .field("span")
        .expect("the log line names its span");
    assert_eq!(span["trace_id"], TRACE_ID, "{}", retry_log.raw);
    assert_eq!(
        span["span_id"],
        second.span_id.as_str(),
        "{}",
        retry_log.raw
    );
    // ... and carries them at the top level too, where log pipelines look for them.
    assert_eq!(
        retry_log.field("trace_id").and_then(|v| v.as_str()),
        Some(TRACE_ID),
        "{}",
        retry_log.raw
    );
    assert_eq!(
        retry_log.field("span_id").and_then(|v| v.as_str()),
        Some(second.span_id.as_str()),
        "{}",
        retry_log.raw
    );

    // The latency histogram links to the trace (OpenMetrics exemplar).
    let exemplar = format!("# {{trace_id=\"{TRACE_ID}\"}}");
    let metrics = scrape(fiso.metrics_addr()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fiso_flow_event_duration_seconds_bucket")
                && l.contains("phase=\"total\"")
                && l.contains(&exemplar)),
        "no exemplar with the trace id:\n{metrics}"
    );
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    send(client().get(format!("http://{addr}/metrics")))
        .await
        .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_request_span_has_its_upstream_attempt_and_no_credential() {
    const SECRET: &str = "s3cr3t-bearer-token-never-exported";
    let collector = Collector::start().await;
    let upstream = SinkServer::start(Script::always(Reply::status(200))).await;
    let targets = http_target(
        "orders",
        upstream.addr(),
        "    auth:\n      type: bearer\n      secretRef:\n        envVar: E2E_TOKEN\n",
    );
    let mut env: Vec<(String, String)> = collector
        .env("grpc")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push(("E2E_TOKEN".into(), SECRET.into()));
    let link = Link::start_with_env(&targets, env).await;

    let answer = send(
        client()
            .get(link.url("/link/orders/v1/items?api_key=from-the-query"))
            .header("traceparent", caller_traceparent()),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let got = upstream.wait_for_requests(1).await.remove(0);
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );

    let spans = collector
        .wait_for_trace(TRACE_ID, |s| {
            s.iter().any(|x| x.name == "link orders") && s.iter().any(|x| x.name == "GET")
        })
        .await;
    let request = one(&spans, "link orders");
    assert_eq!(request.parent_id, CALLER_SPAN);
    assert_eq!(request.kind, "SPAN_KIND_SERVER");
    assert_eq!(request.attr("fiso.link.target"), Some("orders"));
    assert_eq!(request.attr("fiso.link.path_allowed"), Some("true"));
    assert_eq!(request.attr("fiso.link.rate_limited"), Some("false"));
    assert_eq!(request.attr("fiso.link.circuit_open"), Some("false"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    let attempt = one(&spans, "GET");
    assert_eq!(attempt.parent_id, request.span_id);
    assert_eq!(attempt.kind, "SPAN_KIND_CLIENT");
    let (trace, parent) = trace_and_parent(got.header("traceparent").expect("traceparent"));
    assert_eq!((trace, parent), (TRACE_ID, attempt.span_id.as_str()));

    let metrics = scrape(link.fiso.metrics_addr()).await;
    let exemplar = format!("# {{trace_id=\"{TRACE_ID}\"}}");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("fiso_link_request_duration_seconds_bucket") && l.contains(&exemplar)
        ),
        "no exemplar with the trace id:\n{metrics}"
    );

    let exported = collector.output();
    for secret in [SECRET, "Bearer", "from-the-query"] {
        assert!(
            !exported.contains(secret),
            "`{secret}` reached the collector:\n{exported}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_with_only_a_tracing_section_in_its_file_exports_spans() {
    assert!(
        std::env::vars().all(|(k, _)| !k.starts_with("OTEL_")),
        "this test shows the file alone configures tracing: run it without OTEL_* variables"
    );
    let collector = Collector::start().await;
    let upstream = SinkServer::start(Script::always(Reply::status(200))).await;
    let targets = http_target("orders", upstream.addr(), "");
    let tracing = |service: &str| {
        format!(
            "tracing:\n  endpoint: http://{}\n  protocol: grpc\n  serviceName: {service}\n  \
             resourceAttributes:\n    deployment.environment.name: e2e\n  sampler: always_on\n",
            collector.grpc
        )
    };
    let config = format!(
        "listenAddr: 127.0.0.1:0\n{}targets:\n{targets}",
        tracing("fiso-from-file")
    );
    let link = Link::start_with_config(&config, Vec::new()).await;
    let started = link
        .fiso
        .wait_for_log(|l| l.is("exporting traces over OTLP"))
        .await;
    assert_eq!(
        started.field("endpoint").and_then(|v| v.as_str()),
        Some(format!("http://{}", collector.grpc).as_str()),
        "{}",
        started.raw
    );

    let answer = send(
        client()
            .get(link.url("/link/orders/v1/items"))
            .header("traceparent", caller_traceparent()),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let spans = collector
        .wait_for_trace(TRACE_ID, |s| {
            s.iter().any(|x| x.name == "link orders") && s.iter().any(|x| x.name == "GET")
        })
        .await;
    let request = one(&spans, "link orders");
    assert_eq!(request.parent_id, CALLER_SPAN);
    assert_eq!(one(&spans, "GET").parent_id, request.span_id);
    let exported = collector.output();
    assert!(
        exported.contains("fiso-from-file"),
        "service.name from the file:\n{exported}"
    );
    assert!(
        exported.contains("deployment.environment.name"),
        "{exported}"
    );

    // A reload that changes the section keeps the running tracing, says a restart applies
    // it, and still applies the rest of the file.
    let more = format!("{targets}{}", http_target("billing", upstream.addr(), ""));
    link.rewrite_config(&format!(
        "listenAddr: 127.0.0.1:0\n{}targets:\n{more}",
        tracing("renamed")
    ));
    let warning = link
        .fiso
        .wait_for_log(|l| l.level() == Some("WARN") && l.raw.contains("a restart applies it"))
        .await;
    assert!(warning.raw.contains("tracing:"), "{}", warning.raw);
    link.fiso
        .wait_for_log(|l| l.raw.contains("link targets reloaded: added `billing`"))
        .await;
    let answer = send(client().get(link.url("/link/billing/v1/items"))).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sink_attempts_are_continued_by_the_receiving_flow() {
    let collector = Collector::start().await;
    // The receiving flow's sink refuses the first event: that flow acknowledges UNAVAILABLE,
    // and the sending flow tries again.
    let sink = SinkServer::start(Script::first([Reply::status(503)], Reply::status(200))).await;
    let dir = FlowDir::new();
    dir.write(
        "receiver.yaml",
        &format!(
            "name: receiver\n\
             source:\n  type: grpc\n  config:\n    listenAddr: 127.0.0.1:0\n\
             sink:\n  type: http\n  config:\n    url: {}\n\
             errorHandling:\n  maxRetries: 0\n",
            sink.url("/events")
        ),
    );
    // The receiver listens first, on a port of its own choosing (a port picked free beforehand
    // can be taken by another test before the receiver binds it); the sender joins after.
    let fiso = FisoProcess::start_with_env(&dir.path(), collector.env("grpc")).await;
    let grpc = fiso.grpc_addr("receiver").await;
    let mark = fiso.log_mark();
    dir.write(
        "sender.yaml",
        &format!(
            "name: sender\n\
             source:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:0\n    path: /in\n\
             sink:\n  type: grpc\n  config:\n    address: {grpc}\n    timeout: 5s\n\
             errorHandling:\n  maxRetries: 2\n  initialInterval: 10ms\n  maxInterval: 20ms\n"
        ),
    );
    fiso.wait_for_log_since(mark, |l| l.is_flow_started("sender"))
        .await;
    let url = format!("http://{}/in", fiso.http_addr("127.0.0.1:0").await);

    let answer = post_in_callers_trace(&url).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(answer.json()["outcome"], "OUTCOME_DELIVERED");

    const ATTEMPT: &str = "fiso.v1.EventService/PublishStream";
    let spans = collector
        .wait_for_trace(TRACE_ID, |s| {
            s.iter().any(|x| x.name == "flow sender")
                && named(s, ATTEMPT).len() == 2
                && named(s, "flow receiver").len() == 2
        })
        .await;
    let flow = one(&spans, "flow sender");
    assert_eq!(flow.parent_id, CALLER_SPAN);
    let mut attempts = named(&spans, ATTEMPT);
    attempts.sort_by_key(|s| s.attr("fiso.delivery.resend_count").map(str::to_owned));
    let (first, second) = (attempts[0], attempts[1]);
    for attempt in [first, second] {
        assert_eq!(attempt.parent_id, flow.span_id);
        assert_eq!(attempt.kind, "SPAN_KIND_CLIENT");
        assert_eq!(attempt.attr("rpc.system"), Some("grpc"));
        assert_eq!(attempt.attr("rpc.service"), Some("fiso.v1.EventService"));
        assert_eq!(attempt.attr("rpc.method"), Some("PublishStream"));
        assert_eq!(attempt.attr("server.address"), Some("127.0.0.1"));
        assert_eq!(
            attempt.attr("server.port"),
            Some(grpc.port().to_string().as_str())
        );
    }
    assert_eq!(first.attr("fiso.delivery.resend_count"), None);
    assert_eq!(first.attr("rpc.grpc.status_code"), Some("14"));
    assert_eq!(first.attr("error.type"), Some("UNAVAILABLE"));
    assert_eq!(first.status, "STATUS_CODE_ERROR");
    assert_eq!(second.attr("fiso.delivery.resend_count"), Some("1"));
    assert_eq!(second.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(second.attr("error.type"), None);
    // Each event carried its attempt's context (the stream's metadata is shared by all): the
    // receiving flow continues each attempt.
    let mut receivers: Vec<&str> = named(&spans, "flow receiver")
        .iter()
        .map(|s| s.parent_id.as_str())
        .collect();
    receivers.sort_unstable();
    let mut expected = [first.span_id.as_str(), second.span_id.as_str()];
    expected.sort_unstable();
    assert_eq!(receivers, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_start_span_and_tracer_data_header() {
    let collector = Collector::start().await;
    let queue = unique("tq-traced");
    let dir = FlowDir::new();
    dir.write(
        "started.yaml",
        &format!(
            "name: started\n\
             source:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:0\n    path: /events\n\
             sink:\n  type: temporal\n  config:\n    hostPort: \"{}\"\n    taskQueue: {queue}\n\
             \x20   workflowType: TracedOrder\n",
            temporal_addr()
        ),
    );
    let fiso = FisoProcess::start_with_env(&dir.path(), collector.env("http/protobuf")).await;
    let url = format!("http://{}/events", fiso.http_addr("127.0.0.1:0").await);
    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("traceparent", caller_traceparent())
            .header("tracestate", "vendor=1")
            .body(r#"{"orderId":"o-1"}"#),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.text());
    let workflow_id = answer.json()["workflowId"]
        .as_str()
        .expect("a workflow id")
        .to_owned();

    let spans = collector
        .wait_for_trace(TRACE_ID, |s| {
            s.iter().any(|x| x.name == "flow started")
                && s.iter().any(|x| x.name == "StartWorkflow:TracedOrder")
        })
        .await;
    let flow = one(&spans, "flow started");
    let start = one(&spans, "StartWorkflow:TracedOrder");
    assert_eq!(start.parent_id, flow.span_id);
    assert_eq!(start.kind, "SPAN_KIND_CLIENT");
    let port = temporal_addr().rsplit(':').next().unwrap().to_owned();
    for (key, value) in [
        ("rpc.system", "grpc"),
        (
            "rpc.service",
            "temporal.api.workflowservice.v1.WorkflowService",
        ),
        ("rpc.method", "StartWorkflowExecution"),
        ("rpc.grpc.status_code", "0"),
        ("server.port", port.as_str()),
        ("temporalWorkflowID", workflow_id.as_str()),
        ("temporal.namespace", "default"),
        ("temporal.task_queue", queue.as_str()),
        ("temporal.workflow.type", "TracedOrder"),
    ] {
        assert_eq!(start.attr(key), Some(value), "{key} of {start:#?}");
    }
    assert_eq!(start.attr("fiso.delivery.resend_count"), None);
    assert_eq!(start.attr("error.type"), None);
    assert!(
        !collector.output().contains("o-1"),
        "the workflow input reached the collector"
    );

    // The workflow's header carries the attempt's context the way Temporal's OpenTelemetry
    // interceptors read it: `_tracer-data`, a json/plain payload of the propagator's carrier.
    let h = history(&workflow_id).await;
    let tracer_data = &started(&h)["header"]["fields"]["_tracer-data"];
    let decode = |v: &serde_json::Value| {
        String::from_utf8(BASE64.decode(v.as_str().expect("base64")).unwrap()).unwrap()
    };
    assert_eq!(decode(&tracer_data["metadata"]["encoding"]), "json/plain");
    let carrier: serde_json::Value =
        serde_json::from_str(&decode(&tracer_data["data"])).expect("a JSON carrier");
    let (trace, parent) = trace_and_parent(carrier["traceparent"].as_str().expect("traceparent"));
    assert_eq!((trace, parent), (TRACE_ID, start.span_id.as_str()));
    assert_eq!(carrier["tracestate"], "vendor=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_spans_show_the_breaker_state_interceptors_and_the_kafka_send() {
    let collector = Collector::start().await;
    let flaky = SinkServer::start(Script::first([Reply::status(500)], Reply::status(200))).await;
    let guarded = SinkServer::start(Script::always(Reply::status(200))).await;
    let topic = unique("traces-link");
    create_topic(&topic, 1).await;
    let targets = [
        http_target(
            "flaky",
            flaky.addr(),
            "    retry:\n      maxAttempts: 1\n    circuitBreaker:\n      enabled: true\n      failureThreshold: 1\n      resetTimeout: 200ms\n",
        ),
        http_target(
            "guarded",
            guarded.addr(),
            "    interceptors:\n      - type: wasm\n        config:\n          module: pass.wasm\n\
             \x20     - type: wasm\n        config:\n          module: trap.wasm\n          phase: inbound\n          failOpen: true\n",
        ),
        format!(
            "  - name: events\n    protocol: kafka\n    kafka:\n      cluster: main\n      topic: {topic}\n"
        ),
    ]
    .concat();
    let config = format!(
        "listenAddr: 127.0.0.1:0\nkafka:\n  clusters:\n    main:\n      brokers: [\"{}\"]\ntargets:\n{targets}",
        brokers()
    );
    let env = collector
        .env("grpc")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let link = Link::start_with_files(
        &config,
        &[
            ("pass.wasm", fixed("{}")),
            ("trap.wasm", engine_module("trap")),
        ],
        env,
    )
    .await;
    let get = |path: &str, trace: &str| {
        send(
            client()
                .get(link.url(path))
                .header("traceparent", caller_in(trace)),
        )
    };
    let link_span = |trace: String, name: &'static str| {
        let collector = &collector;
        async move {
            let spans = collector
                .wait_for_trace(&trace, |s| s.iter().any(|x| x.name == name))
                .await;
            one(&spans, name).clone()
        }
    };

    // Closed when the request came (its 500 opens it), then open, then half-open once the
    // reset timeout passed.
    assert_eq!(
        get("/link/flaky/a", &trace_id(1)).await.status.as_u16(),
        500
    );
    let refused = get("/link/flaky/b", &trace_id(2)).await;
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.text());
    let mut n = 2;
    let probe = eventually(DEADLINE, || {
        n += 1;
        let trace = trace_id(n);
        async move {
            let answer = get("/link/flaky/c", &trace).await;
            (answer.status.as_u16() == 200).then_some(trace)
        }
    })
    .await
    .expect("the breaker lets a probe through after its reset timeout");
    for (trace, state, open) in [
        (trace_id(1), "closed", "false"),
        (trace_id(2), "open", "true"),
        (probe, "half_open", "false"),
    ] {
        let span = link_span(trace, "link flaky").await;
        assert_eq!(
            span.attr("fiso.link.circuit_state"),
            Some(state),
            "{span:#?}"
        );
        assert_eq!(span.attr("fiso.link.circuit_open"), Some(open), "{span:#?}");
    }

    // One span per interceptor run, under the request's.
    let trace = trace_id(100);
    assert_eq!(get("/link/guarded/x", &trace).await.status.as_u16(), 200);
    let spans = collector
        .wait_for_trace(&trace, |s| {
            [
                "link guarded",
                "interceptor pass.wasm",
                "interceptor trap.wasm",
            ]
            .iter()
            .all(|n| s.iter().any(|x| x.name == *n))
        })
        .await;
    let request = one(&spans, "link guarded");
    let outbound = one(&spans, "interceptor pass.wasm");
    let inbound = one(&spans, "interceptor trap.wasm");
    assert_eq!(request.attr("fiso.link.circuit_state"), None, "no breaker");
    for span in [outbound, inbound] {
        assert_eq!(span.parent_id, request.span_id);
        assert_eq!(span.kind, "SPAN_KIND_INTERNAL");
    }
    assert_eq!(outbound.attr("fiso.interceptor.module"), Some("pass.wasm"));
    assert_eq!(outbound.attr("fiso.interceptor.phase"), Some("outbound"));
    assert_eq!(outbound.attr("error.type"), None);
    assert_eq!(inbound.attr("fiso.interceptor.phase"), Some("inbound"));
    assert_eq!(inbound.attr("error.type"), Some("INTERCEPTOR_FAILED"));
    assert_eq!(inbound.status, "STATUS_CODE_ERROR");

    // The Kafka target's record continues the trace from its `send` span.
    let trace = trace_id(200);
    let published = send(
        client()
            .post(link.url("/link/events"))
            .header("content-type", "application/json")
            .header("traceparent", caller_in(&trace))
            .header("tracestate", "vendor=1")
            .body(r#"{"id":1}"#),
    )
    .await;
    assert_eq!(published.status.as_u16(), 200, "{}", published.text());
    let record = consume(&topic, 1).await.remove(0);
    let send_name = format!("send {topic}");
    let spans = collector
        .wait_for_trace(&trace, |s| s.iter().any(|x| x.name == send_name))
        .await;
    let request = one(&spans, "link events");
    let producer = one(&spans, &send_name);
    assert_eq!(producer.parent_id, request.span_id);
    assert_eq!(producer.kind, "SPAN_KIND_PRODUCER");
    for (key, value) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "send"),
        ("messaging.destination.name", topic.as_str()),
        ("messaging.destination.partition.id", "0"),
        ("messaging.kafka.offset", "0"),
    ] {
        assert_eq!(producer.attr(key), Some(value), "{key} of {producer:#?}");
    }
    let (got_trace, parent) = trace_and_parent(&record.headers["traceparent"]);
    assert_eq!(
        (got_trace, parent),
        (trace.as_str(), producer.span_id.as_str())
    );
    assert_eq!(record.headers["tracestate"], "vendor=1");
}
