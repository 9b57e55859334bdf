//! Fiso's plain-HTTP client (`fiso_runtime::http_client`, the Link upstream and the Flow HTTP
//! sink) reading whatever an upstream answers: the input is written back, as it is, to one GET
//! on a fresh connection from a real loopback server, which then closes the connection. The
//! client must end with an answer or an error, never a panic, and a body it hands out is never
//! longer than the bytes that arrived.
//!
//! Input: the upstream's bytes (status line, headers, body), unframed.

use bytes::Bytes;
use fiso_runtime::http_client::{ClientSettings, OriginClient};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn run(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(exchange(data));
}

async fn exchange(data: &[u8]) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let answer = data.to_vec();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("the client connects");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tcp.write_all(&answer).await;
    });
    let origin: http::Uri = format!("http://{addr}/").parse().expect("an origin");
    let client: OriginClient<Empty<Bytes>> = ClientSettings::default()
        .build_for(&origin)
        .expect("a plain-HTTP client");
    let uri = client
        .uri(http::uri::PathAndQuery::from_static("/fuzz"))
        .expect("a request URI");
    let request = http::Request::get(uri)
        .body(Empty::new())
        .expect("a request");
    if let Ok(answer) = client.request(request).await {
        if let Ok(body) = answer.into_body().collect().await {
            assert!(body.to_bytes().len() <= data.len());
        }
    }
    let _ = server.await;
}
