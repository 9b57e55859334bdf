//! gRPC flows end to end: a gRPC source (`fiso.v1.EventService`) in front of a real HTTP sink —
//! unary and streaming publish, health and reflection, the status codes of each failure — and
//! an HTTP source delivering to a real gRPC server through the gRPC sink, with retries.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use fiso_e2e::tls::TestCert;
use fiso_e2e::{client, post_json, FisoProcess, FlowDir, Reply, Script, SinkServer};
use fiso_flow::event::protobuf::proto::fiso::v1::event_service_client::EventServiceClient;
use fiso_flow::event::protobuf::proto::fiso::v1::event_service_server::{EventService, EventServiceServer};
use fiso_flow::event::protobuf::proto::fiso::v1::{Outcome, PublishResponse};
use fiso_flow::event::protobuf::proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use fiso_flow::event::protobuf::proto::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data};
use fiso_flow::event::protobuf::proto::io::cloudevents::v1::CloudEvent;
use futures::{Stream, StreamExt};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tonic::{Code, Request, Response, Status, Streaming};

/// A flow `name` with a gRPC source on `127.0.0.1:0`, a transform, into `sink_url`.
fn grpc_source_flow(name: &str, sink_url: &str, extra: &str) -> String {
    format!(
        "name: {name}\n\
         source:\n  type: grpc\n  config:\n    listenAddr: 127.0.0.1:0\n\
         transform:\n  fields:\n    order: data.order_id\n    total: data.amount * 2\n\
         sink:\n  type: http\n  config:\n    url: {sink_url}\n{extra}"
    )
}

fn structured(id: &str, data: &Value) -> CloudEvent {
    let mut attributes = std::collections::HashMap::new();
    attributes.insert(
        "datacontenttype".to_owned(),
        CloudEventAttributeValue {
            attr: Some(Attr::CeString("application/json".into())),
        },
    );
    CloudEvent {
        id: id.into(),
        source: "/shop".into(),
        spec_version: "1.0".into(),
        r#type: "order.created".into(),
        attributes,
        data: Some(Data::TextData(data.to_string())),
    }
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting to the gRPC source")
}

async fn connect(addr: SocketAddr) -> EventServiceClient<tonic::transport::Channel> {
    EventServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connecting to the gRPC source")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_events_reach_the_http_sink_unary_and_streamed() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write("g.yaml", &grpc_source_flow("g", &sink.url("/in"), ""));
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.grpc_addr("g").await;
    let mut events = connect(addr).await;

    let ack = events
        .publish(structured(
            "e-1",
            &json!({"order_id": "o-1", "amount": 10.5}),
        ))
        .await
        .expect("published")
        .into_inner();
    assert_eq!(ack.id, "e-1");
    assert_eq!(ack.outcome(), Outcome::Delivered);
    let got = sink.wait_for_requests(1).await;
    let delivered = got[0].json();
    assert_eq!(delivered["id"], "e-1");
    assert_eq!(delivered["type"], "order.created");
    assert_eq!(delivered["data"], json!({"order": "o-1", "total": 21}));

    // A bare JSON payload: no spec_version, the flow gives it an id.
    let bare = CloudEvent {
        data: Some(Data::BinaryData(
            json!({"order_id": "o-2", "amount": 1})
                .to_string()
                .into_bytes(),
        )),
        ..Default::default()
    };
    let ack = events.publish(bare).await.expect("published").into_inner();
    assert!(!ack.id.is_empty());
    assert_eq!(
        sink.wait_for_requests(2).await[1].json()["id"],
        ack.id.as_str()
    );

    // 500 events on one stream: one acknowledgement each, in order.
    const N: usize = 500;
    let outgoing = futures::stream::iter(
        (0..N).map(|i| structured(&format!("s-{i}"), &json!({"order_id": i, "amount": i}))),
    );
    let acks: Vec<PublishResponse> = events
        .publish_stream(outgoing)
        .await
        .expect("stream opened")
        .into_inner()
        .map(|a| a.expect("an acknowledgement"))
        .collect()
        .await;
    let ids: Vec<String> = acks.iter().map(|a| a.id.clone()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("s-{i}")).collect();
    assert_eq!(ids, expected);
    assert!(acks.iter().all(|a| a.outcome() == Outcome::Delivered));
    assert_eq!(sink.wait_for_requests(N + 2).await.len(), N + 2);

    // The standard health service and reflection (what grpcurl uses).
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "fiso.v1.EventService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let services = reflected_services(addr).await;
    assert!(
        services.contains(&"fiso.v1.EventService".to_owned()),
        "{services:?}"
    );
}

async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel(addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_status_code_and_a_stream_goes_on() {
    let sink = SinkServer::start(Script::always(Reply::status(503))).await;
    let ok_sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "down.yaml",
        &grpc_source_flow(
            "down",
            &sink.url("/in"),
            "errorHandling:\n  maxRetries: 1\n  initialInterval: 10ms\n",
        ),
    );
    dir.write("up.yaml", &grpc_source_flow("up", &ok_sink.url("/in"), ""));
    let fiso = FisoProcess::start(&dir.path()).await;
    let mut down = connect(fiso.grpc_addr("down").await).await;
    let mut up = connect(fiso.grpc_addr("up").await).await;

    let status = down
        .publish(structured("d-1", &json!({"order_id": "o", "amount": 1})))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("SINK_DELIVERY_FAILED"),
        "{status:?}"
    );
    assert_eq!(sink.count(), 2, "tried twice");

    let mut not_json = structured("bad-1", &json!({}));
    not_json.data = Some(Data::TextData("{not json".into()));
    let status = up.publish(not_json.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let missing_field = structured("bad-2", &json!({"amount": 1}));
    let status = up.publish(missing_field.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("TRANSFORM_FAILED"), "{status:?}");

    // On a stream the same failures are acknowledgements; the stream carries on.
    let outgoing = futures::stream::iter([
        structured("s-1", &json!({"order_id": "a", "amount": 1})),
        not_json,
        missing_field,
        structured("s-2", &json!({"order_id": "b", "amount": 2})),
    ]);
    let acks: Vec<(String, Outcome, i32)> = up
        .publish_stream(outgoing)
        .await
        .unwrap()
        .into_inner()
        .map(|a| {
            let a = a.unwrap();
            (a.id.clone(), a.outcome(), a.code)
        })
        .collect()
        .await;
    let invalid = Code::InvalidArgument as i32;
    assert_eq!(
        acks,
        [
            ("s-1".to_owned(), Outcome::Delivered, 0),
            ("bad-1".to_owned(), Outcome::Rejected, invalid),
            ("bad-2".to_owned(), Outcome::Rejected, invalid),
            ("s-2".to_owned(), Outcome::Delivered, 0),
        ]
    );
    assert_eq!(ok_sink.count(), 2);
}

/// A gRPC `EventService` that records what it receives and answers each event with the next
/// scripted code (then OK).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<CloudEvent>>>,
    script: Arc<Mutex<VecDeque<Code>>>,
}

impl Receiver {
    fn answer(&self, ce: CloudEvent) -> PublishResponse {
        let code = self.script.lock().unwrap().pop_front().unwrap_or(Code::Ok);
        let id = ce.id.clone();
        self.got.lock().unwrap().push(ce);
        PublishResponse {
            id,
            outcome: if code == Code::Ok {
                Outcome::Delivered
            } else {
                Outcome::Failed
            } as i32,
            code: code as i32,
            message: if code == Code::Ok {
                String::new()
            } else {
                format!("scripted {code:?}")
            },
            dead_letter_topic: String::new(),
        }
    }
}

type Acks = Pin<Box<dyn Stream<Item = Result<PublishResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Receiver {
    async fn publish(
        &self,
        request: Request<CloudEvent>,
    ) -> Result<Response<PublishResponse>, Status> {
        Ok(Response::new(self.answer(request.into_inner())))
    }

    type PublishStreamStream = Acks;

    async fn publish_stream(
        &self,
        request: Request<Streaming<CloudEvent>>,
    ) -> Result<Response<Acks>, Status> {
        let this = self.clone();
        let acks = request
            .into_inner()
            .map(move |ce| ce.map(|ce| this.answer(ce)));
        Ok(Response::new(Box::pin(acks)))
    }
}

async fn start_receiver(receiver: Receiver) -> SocketAddr {
    start_receiver_with(receiver, None).await
}

/// The receiver, over TLS with `cert` when given.
async fn start_receiver_with(receiver: Receiver, cert: Option<&TestCert>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = tonic::transport::Server::builder();
    if let Some(cert) = cert {
        let identity = tonic::transport::Identity::from_pem(&cert.cert_pem, &cert.key_pem);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    tokio::spawn(
        server
            .add_service(EventServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_reach_a_grpc_server_with_retries() {
    let receiver = Receiver::default();
    receiver
        .script
        .lock()
        .unwrap()
        .extend([Code::Unavailable, Code::Ok, Code::InvalidArgument]);
    let addr = start_receiver(receiver.clone()).await;
    let dir = FlowDir::new();
    dir.write(
        "h2g.yaml",
        &format!(
            "name: h2g\n\
             source:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:0\n    path: /orders\n\
             transform:\n  fields:\n    order: data.order_id\n\
             cloudevents:\n  type: '\"order.placed\"'\n\
             sink:\n  type: grpc\n  config:\n    address: {addr}\n    timeout: 5s\n\
             errorHandling:\n  maxRetries: 2\n  initialInterval: 10ms\n"
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let http = fiso.http_addr("127.0.0.1:0").await;
    let url = format!("http://{http}/orders");

    // UNAVAILABLE, then OK: delivered on the second attempt.
    let answer = post_json(&client(), &url, &json!({"order_id": "o-1"})).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(answer.json()["outcome"], "OUTCOME_DELIVERED");
    let id = answer.json()["id"].as_str().unwrap().to_owned();
    {
        let got = receiver.got.lock().unwrap();
        assert_eq!(got.len(), 2);
        let ce = &got[1];
        assert_eq!(ce.id, id);
        assert_eq!(ce.r#type, "order.placed");
        assert_eq!(ce.spec_version, "1.0");
        assert_eq!(ce.data, Some(Data::TextData(r#"{"order":"o-1"}"#.into())));
        assert_eq!(
            ce.attributes
                .get("datacontenttype")
                .and_then(|a| a.attr.clone()),
            Some(Attr::CeString("application/json".into()))
        );
    }

    // INVALID_ARGUMENT is final: one attempt, the caller hears about it.
    let answer = post_json(&client(), &url, &json!({"order_id": "o-2"})).await;
    assert_eq!(answer.status.as_u16(), 502, "{}", answer.text());
    assert_eq!(answer.json()["error"]["attempts"], 1);
    assert_eq!(receiver.got.lock().unwrap().len(), 3);

    // Many events over the one stream.
    for i in 0..20 {
        let answer = post_json(&client(), &url, &json!({"order_id": format!("m-{i}")})).await;
        assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    }
    assert_eq!(receiver.got.lock().unwrap().len(), 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_sink_verifies_the_server_with_the_configured_ca() {
    let cert = TestCert::new(&["localhost"]);
    let receiver = Receiver::default();
    let addr = start_receiver_with(receiver.clone(), Some(&cert)).await;
    let dir = FlowDir::new();
    let flow = |name: &str, tls: &str| {
        format!(
            "name: {name}\n\
             source:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:0\n    path: /{name}\n\
             sink:\n  type: grpc\n  config:\n    address: localhost:{}\n{tls}\
             errorHandling:\n  maxRetries: 0\n",
            addr.port()
        )
    };
    dir.write(
        "trusted.yaml",
        &flow(
            "trusted",
            &format!(
                "    tls:\n      enabled: true\n      caFile: {}\n",
                cert.ca_file().display()
            ),
        ),
    );
    dir.write(
        "untrusted.yaml",
        &flow("untrusted", "    tls:\n      enabled: true\n"),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let http = fiso.http_addr("127.0.0.1:0").await;
    let answer = post_json(
        &client(),
        &format!("http://{http}/trusted"),
        &json!({"n": 1}),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(receiver.got.lock().unwrap().len(), 1);
    // The system roots alone do not know the test CA: the handshake fails, nothing arrives.
    let answer = post_json(
        &client(),
        &format!("http://{http}/untrusted"),
        &json!({"n": 2}),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 503, "{}", answer.text());
    assert_eq!(receiver.got.lock().unwrap().len(), 1);
}

/// The Protobuf format end to end: events with every attribute type and every data form cross
/// a gRPC source → gRPC sink flow (no transform) and reach the next gRPC server as they were
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_events_cross_a_grpc_flow_with_their_types() {
    let receiver = Receiver::default();
    let addr = start_receiver(receiver.clone()).await;
    let dir = FlowDir::new();
    dir.write(
        "g2g.yaml",
        &format!(
            "name: g2g\n\
             source:\n  type: grpc\n  config:\n    listenAddr: 127.0.0.1:0\n\
             sink:\n  type: grpc\n  config:\n    address: {addr}\n"
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let mut events = connect(fiso.grpc_addr("g2g").await).await;
    let attr = |a: Attr| CloudEventAttributeValue { attr: Some(a) };
    let timestamp = |seconds, nanos| Attr::CeTimestamp(prost_types::Timestamp { seconds, nanos });
    let typed: Vec<(&str, CloudEventAttributeValue)> = vec![
        ("time", attr(timestamp(1_522_949_784, 123_000_000))),
        ("subject", attr(Attr::CeString("caf\u{e9} \"100%\"".into()))),
        (
            "dataschema",
            attr(Attr::CeUri("https://e.com/schema".into())),
        ),
        ("flag", attr(Attr::CeBoolean(false))),
        ("count", attr(Attr::CeInteger(i32::MIN))),
        ("blob", attr(Attr::CeBytes(vec![0, 255, 10]))),
        ("home", attr(Attr::CeUri("urn:example:home".into()))),
        ("rel", attr(Attr::CeUriRef("../up?q=1#f".into()))),
        ("due", attr(timestamp(-1, 999_999_999))),
    ];
    let forms = [
        (
            Some("text/plain; charset=utf-8"),
            Data::TextData("Hello, \u{1f30e}!\n".into()),
        ),
        (
            Some("application/json"),
            Data::TextData(r#"{"a":[1,2.5,null]}"#.into()),
        ),
        (
            Some("application/octet-stream"),
            Data::BinaryData(vec![0, 159, 146, 150]),
        ),
        (None, Data::BinaryData(b"\x01\x02".to_vec())),
        (
            None,
            Data::ProtoData(prost_types::Any {
                type_url: "type.googleapis.com/shop.Order".into(),
                value: vec![8, 1, 18, 2, 111, 107],
            }),
        ),
    ];
    let mut sent = Vec::new();
    for (i, (content_type, data)) in forms.into_iter().enumerate() {
        let mut ce = CloudEvent {
            id: format!("typed-{i}"),
            source: "/shop".into(),
            spec_version: "1.0".into(),
            r#type: "order.created".into(),
            attributes: typed
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
            data: Some(data),
        };
        if let Some(ct) = content_type {
            ce.attributes
                .insert("datacontenttype".into(), attr(Attr::CeString(ct.into())));
        }
        let ack = events
            .publish(ce.clone())
            .await
            .expect("published")
            .into_inner();
        assert_eq!(ack.outcome(), Outcome::Delivered, "{ack:?}");
        sent.push(ce);
    }
    assert_eq!(*receiver.got.lock().unwrap(), sent);
}
