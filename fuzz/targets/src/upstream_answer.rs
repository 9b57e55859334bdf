//! Fiso's plain-HTTP client (`fiso_runtime::http_client`, the Link upstream and the Flow HTTP
//! sink) reading whatever an upstream answers: the input is written back, as it is, to one GET
//! on a fresh connection to a real loopback server, which then closes the connection. The
//! client must end with an answer or an error, never a panic, and a body it hands out is never
//! longer than the bytes that arrived.
//!
//! One server serves the whole process, one connection at a time: a listener per input would
//! leave a port in `TIME_WAIT` per input and run out of ports after ~28 000 inputs.
//!
//! Input: the upstream's bytes (status line, headers, body), unframed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use fiso_runtime::http_client::{ClientSettings, OriginClient};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server's address and the answer its next connection gets.
struct Upstream {
    addr: SocketAddr,
    answer: Arc<Mutex<Vec<u8>>>,
}

fn upstream() -> &'static Upstream {
    static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
    UPSTREAM.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let answer = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::clone(&answer);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                listener
                    .set_nonblocking(true)
                    .expect("a non-blocking listener");
                let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
                loop {
                    let Ok((mut tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let answer = next.lock().expect("the answer").clone();
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tcp.write_all(&answer).await;
                }
            });
        });
        Upstream { addr, answer }
    })
}

pub fn run(data: &[u8]) {
    let upstream = upstream();
    *upstream.answer.lock().expect("the answer") = data.to_vec();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(exchange(upstream.addr, data.len()));
}

async fn exchange(addr: SocketAddr, sent: usize) {
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
            assert!(body.to_bytes().len() <= sent);
        }
    }
}
