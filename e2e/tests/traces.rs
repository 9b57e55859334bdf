//! OpenTelemetry traces exported to a real collector (`rotel-agent`, see `fiso_e2e::otel`):
//! the span tree of a Kafka → HTTP flow and of an HTTP flow whose sink fails once, over
//! OTLP/gRPC and OTLP/HTTP; the Link's request span with its upstream attempt, and no
//! credential anywhere in what is exported; `trace_id` in the logs; a Link configured by the
//! `tracing:` section of its file alone.

use fiso_e2e::kafka::{create_topic, kafka_source, produce_in_order, unique};
use fiso_e2e::link::{http_target, Link};
use fiso_e2e::otel::{Collector, Span};
use fiso_e2e::{client, send, FisoProcess, FlowDir, HttpFlow, Reply, Script, SinkServer};
use pretty_assertions::assert_eq;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
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

    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("traceparent", caller_traceparent())
            .body(r#"{"n":1}"#),
    )
    .await;
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
