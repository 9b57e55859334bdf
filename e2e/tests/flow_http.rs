//! `fiso flow` with HTTP sources and sinks: what reaches the sink (transform, CloudEvents
//! envelope, correlation and trace headers), what the caller gets back, shared-port routing and
//! the HTTP source's error answers.

use fiso_e2e::{
    client, post_json, send, FisoProcess, FlowDir, HttpFlow, Reply, Script, SinkServer,
};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SHARED: &str = "127.0.0.1:0";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Removes `time` from a CloudEvent after checking it is an RFC 3339 timestamp.
fn take_time(ce: &mut Value) -> String {
    let time = ce
        .as_object_mut()
        .and_then(|o| o.remove("time"))
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("the CloudEvent has no `time`: {ce}"));
    chrono::DateTime::parse_from_rfc3339(&time)
        .unwrap_or_else(|e| panic!("`time` {time} is not RFC 3339: {e}"));
    time
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformed_event_reaches_the_sink_as_a_structured_cloudevent() {
    let sink = SinkServer::start(Script::always(
        Reply::json(201, &json!({"order": "accepted"})).header("x-sink", "yes"),
    ))
    .await;
    let dir = FlowDir::new();
    dir.write(
        "orders.yaml",
        &HttpFlow::new("orders", SHARED, "/orders", &sink.url("/events"))
            .with(
                r#"transform:
  fields:
    order_id: "data.id"
    total: "data.price * data.quantity"
    customer: '{"name": data.customer.name, "vip": data.customer.tier == "gold"}'
    status: '"pending"'
cloudevents:
  id: '"order-" + data.id'
  type: '"order.created"'
  source: '"shop/" + data.region'
  subject: 'data.id'"#,
            )
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/orders", fiso.http_addr(SHARED).await);
    let input = json!({
        "id": "A-1",
        "price": 10.5,
        "quantity": 3,
        "region": "eu",
        "customer": {"name": "Ada", "tier": "gold"}
    });

    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-request-id", "req-42")
            .header("traceparent", TRACEPARENT)
            .body(input.to_string()),
    )
    .await;

    // The caller gets the sink's own answer, and its correlation id back.
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    assert_eq!(answer.json(), json!({"order": "accepted"}));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("fiso-correlation-id"), Some("req-42"));

    let got = sink.wait_for_requests(1).await.remove(0);
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/events");
    assert_eq!(
        got.header("content-type"),
        Some("application/cloudevents+json")
    );
    assert_eq!(got.header("fiso-correlation-id"), Some("req-42"));
    assert_eq!(got.header("traceparent"), Some(TRACEPARENT));
    let mut ce = got.json();
    take_time(&mut ce);
    assert_eq!(
        ce,
        json!({
            "specversion": "1.0",
            "id": "order-A-1",
            "type": "order.created",
            "source": "shop/eu",
            "subject": "A-1",
            "datacontenttype": "application/json",
            "traceparent": TRACEPARENT,
            "data": {
                "order_id": "A-1",
                "total": 31.5,
                "customer": {"name": "Ada", "vip": true},
                "status": "pending"
            }
        })
    );
    // Output fields keep the order of `transform.fields`, and numbers render plainly.
    let keys: Vec<&String> = ce["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["order_id", "total", "customer", "status"]);
    assert!(
        String::from_utf8_lossy(&got.body).contains(r#""total":31.5"#),
        "{}",
        String::from_utf8_lossy(&got.body)
    );

    // Without a correlation header the trace id of `traceparent` is the correlation id.
    let answer = send(
        client()
            .post(&url)
            .header("traceparent", TRACEPARENT)
            .body(input.to_string()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.header("fiso-correlation-id"), Some(TRACE_ID));
    let got = sink.wait_for_requests(2).await.remove(1);
    assert_eq!(got.header("fiso-correlation-id"), Some(TRACE_ID));

    // Without either, one is generated, sent to the sink and echoed to the caller.
    let answer = post_json(&client(), &url, &input).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let generated = answer
        .header("fiso-correlation-id")
        .expect("a generated correlation id")
        .to_owned();
    let got = sink.wait_for_requests(3).await.remove(2);
    assert_eq!(got.header("fiso-correlation-id"), Some(generated.as_str()));
    assert_eq!(got.header("traceparent"), None);
    assert!(got.json().get("traceparent").is_none(), "{}", got.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_sends_ce_headers_and_the_data_as_body() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "payments.yaml",
        &HttpFlow::new("payments", SHARED, "/payments", &sink.url("/in"))
            .sink_config("mode: binary")
            .with(
                r#"transform:
  fields:
    amount: "data.cents / 100.0"
cloudevents:
  type: '"payment.received"'"#,
            )
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/payments", fiso.http_addr(SHARED).await);

    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("fiso-correlation-id", "pay-1")
            .header("traceparent", TRACEPARENT)
            .body(json!({"cents": 1250}).to_string()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"received": true}));

    let got = sink.wait_for_requests(1).await.remove(0);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("ce-specversion"), Some("1.0"));
    assert_eq!(got.header("ce-type"), Some("payment.received"));
    assert_eq!(got.header("ce-source"), Some("fiso-flow/payments"));
    assert!(
        got.header("ce-id").is_some_and(|id| !id.is_empty()),
        "{:?}",
        got.headers
    );
    let time = got.header("ce-time").expect("ce-time");
    chrono::DateTime::parse_from_rfc3339(time).expect("ce-time is RFC 3339");
    assert_eq!(got.header("ce-traceparent"), Some(TRACEPARENT));
    assert_eq!(got.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(got.header("fiso-correlation-id"), Some("pay-1"));
    assert_eq!(got.json(), json!({"amount": 12.5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_cloudevents_keep_their_attributes() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "users.yaml",
        &HttpFlow::new("users", SHARED, "/users", &sink.url("/in"))
            .with("transform:\n  fields:\n    user: \"data.name\"\n    seen: \"type\"")
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/users", fiso.http_addr(SHARED).await);

    // Structured mode in.
    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(
                json!({
                    "specversion": "1.0",
                    "id": "in-7",
                    "type": "user.signup",
                    "source": "/crm",
                    "subject": "u-1",
                    "time": "2024-01-02T03:04:05Z",
                    "tenant": "acme",
                    "data": {"name": "Ada"}
                })
                .to_string(),
            ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let got = sink.wait_for_requests(1).await.remove(0);
    let ce = got.json();
    assert_eq!(
        ce,
        json!({
            "specversion": "1.0",
            "id": "in-7",
            "type": "user.signup",
            "source": "/crm",
            "subject": "u-1",
            "time": "2024-01-02T03:04:05Z",
            "datacontenttype": "application/json",
            "tenant": "acme",
            "data": {"user": "Ada", "seen": "user.signup"}
        })
    );

    // Binary mode in.
    let answer = send(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", "bin-9")
            .header("ce-type", "user.updated")
            .header("ce-source", "/crm")
            .header("ce-subject", "u-2")
            .header("ce-time", "2024-05-06T07:08:09Z")
            .header("ce-tenant", "acme")
            .body(json!({"name": "Grace"}).to_string()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let got = sink.wait_for_requests(2).await.remove(1);
    assert_eq!(
        got.json(),
        json!({
            "specversion": "1.0",
            "id": "bin-9",
            "type": "user.updated",
            "source": "/crm",
            "subject": "u-2",
            "time": "2024-05-06T07:08:09Z",
            "datacontenttype": "application/json",
            "tenant": "acme",
            "data": {"user": "Grace", "seen": "user.updated"}
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_on_one_listen_address_share_a_server_and_route_by_path() {
    let sink_a = SinkServer::ok().await;
    let sink_b = SinkServer::ok().await;
    let dir = FlowDir::new();
    for (name, sink) in [("a", &sink_a), ("b", &sink_b)] {
        dir.write(
            &format!("{name}.yaml"),
            &HttpFlow::new(name, SHARED, &format!("/{name}"), &sink.url("/in"))
                .with(&format!("transform:\n  fields:\n    via: '\"{name}\"'"))
                .yaml(),
        );
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;
    let listening = fiso.logs().matching(0, |l| l.is("http source listening"));
    assert_eq!(
        listening.len(),
        1,
        "one server for both flows: {listening:?}"
    );

    let http = client();
    let answer = post_json(&http, &format!("http://{addr}/a"), &json!({"n": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = post_json(&http, &format!("http://{addr}/b"), &json!({"n": 2})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());

    let a = sink_a.wait_for_requests(1).await;
    let b = sink_b.wait_for_requests(1).await;
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(a[0].json()["data"], json!({"via": "a"}));
    assert_eq!(b[0].json()["data"], json!({"via": "b"}));

    let answer = post_json(&http, &format!("http://{addr}/c"), &json!({"n": 3})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"]["code"], "NOT_FOUND");
    assert_eq!(
        sink_a.count() + sink_b.count(),
        2,
        "nothing else was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_never_reach_the_sink() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "small.yaml",
        &HttpFlow::new("small", SHARED, "/small", &sink.url("/in"))
            .source_config("maxBodySize: \"16\"")
            .with("transform:\n  fields:\n    p: \"data.price\"")
            .yaml(),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let url = format!("http://{}/small", fiso.http_addr(SHARED).await);
    let http = client();

    // Each error body is `{"error": {code, message, correlationId}}`, the id echoed in a header.
    let check = |answer: &fiso_e2e::Answer, status: StatusCode, code: &str| -> String {
        assert_eq!(answer.status, status, "{}", answer.text());
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let body = answer.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(
            body["error"]["correlationId"].as_str(),
            answer.header("fiso-correlation-id"),
            "{body}"
        );
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let too_large = post_json(&http, &url, &json!({"price": 1, "pad": "0123456789"})).await;
    let message = check(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
    assert!(message.contains("16"), "{message}");

    let malformed = send(
        http.post(&url)
            .header("content-type", "application/json")
            .body(r#"{"price":"#),
    )
    .await;
    let message = check(&malformed, StatusCode::BAD_REQUEST, "INPUT_INVALID");
    assert!(message.contains("not valid JSON"), "{message}");

    let empty = send(http.post(&url).header("x-request-id", "empty-1")).await;
    let message = check(&empty, StatusCode::BAD_REQUEST, "INPUT_INVALID");
    assert!(message.contains("empty"), "{message}");
    assert_eq!(empty.header("fiso-correlation-id"), Some("empty-1"));

    let get = send(http.get(&url)).await;
    check(&get, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(get.header("allow"), Some("POST"));

    let missing = post_json(&http, &url, &json!({"cost": 1})).await;
    let message = check(
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "TRANSFORM_FAILED",
    );
    assert!(message.contains("price"), "{message}");

    assert_eq!(sink.count(), 0, "no refused event reached the sink");
    let ok = post_json(&http, &url, &json!({"price": 1})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(
        sink.wait_for_requests(1).await[0].json()["data"],
        json!({"p": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivalent_listen_addresses_are_one_server() {
    // `:<port>` and `0.0.0.0:<port>` are the same address (as `fiso validate` says): one server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    for (name, listen) in [("a", format!(":{port}")), ("b", format!("0.0.0.0:{port}"))] {
        dir.write(
            &format!("{name}.yaml"),
            &HttpFlow::new(name, &listen, &format!("/{name}"), &sink.url("/in")).yaml(),
        );
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    for name in ["a", "b"] {
        let outcome = fiso
            .wait_for_log(|l| {
                (l.is("flow started") || l.is("flow stopped with error"))
                    && l.str_field("name") == Some(name)
            })
            .await;
        assert!(outcome.is("flow started"), "{}", outcome.raw);
    }
    let listening = fiso.logs().matching(0, |l| l.is("http source listening"));
    assert_eq!(listening.len(), 1, "{listening:?}");

    let http = client();
    for name in ["a", "b"] {
        let url = format!("http://127.0.0.1:{port}/{name}");
        let answer = post_json(&http, &url, &json!({ "to": name })).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    assert_eq!(sink.wait_for_requests(2).await.len(), 2);
}
