//! The server against real sockets: deadlines close connections (the client reads EOF), a
//! stalled body fails the handler's read, an early answer survives a client still sending.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;

const SHORT: Duration = Duration::from_millis(300);
/// Bounds a test that would otherwise hang; not an expectation of speed.
const GIVE_UP: Duration = Duration::from_secs(20);

fn timeouts() -> ServerTimeouts {
    ServerTimeouts {
        read_header: SHORT,
        idle: SHORT,
        body: SHORT,
    }
}

/// `/echo` reads the whole body (408 when it stalls); `/early` answers 413 without reading.
fn app() -> Router {
    Router::new()
        .route(
            "/echo",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(b) => (StatusCode::OK, b).into_response(),
                    Err(e) if is_body_timeout(&e) => {
                        (StatusCode::REQUEST_TIMEOUT, e.to_string()).into_response()
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }),
        )
        .route("/early", post(|| async { StatusCode::PAYLOAD_TOO_LARGE }))
}

async fn start(t: ServerTimeouts) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, app(), t.fixed(), stop.clone()));
    (addr, stop)
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(GIVE_UP, tcp.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("a clean close, not a reset");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (addr, _stop) = start(timeouts()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_to_close(&mut tcp).await, "");
}

#[tokio::test]
async fn headers_that_never_end_are_cut_off() {
    let (addr, _stop) = start(timeouts()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // hyper may answer 408 before closing; what matters is that the connection ends.
    let answer = read_to_close(&mut tcp).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_h2c_connection_without_a_stream_is_closed() {
    let (addr, _stop) = start(timeouts()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(GIVE_UP, tcp.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    // SETTINGS, its ACK, then GOAWAY (type 7) before the close.
    assert!(out.len() >= 9, "{out:?}");
    assert_eq!(out[3], 4, "the server's SETTINGS first: {out:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
    let (addr, _stop) = start(ServerTimeouts {
        read_header: GIVE_UP * 2,
        ..timeouts()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hi"), "{answer}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408() {
    let (addr, _stop) = start(timeouts()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body stopped arriving for 300ms"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_slow_but_steady_body_is_read_whole() {
    let (addr, _stop) = start(ServerTimeouts {
        body: Duration::from_secs(1),
        ..timeouts()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // 10 parts 150 ms apart: longer than bodyTimeout in all, never that long between two.
    for part in b"abcdefghij" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tcp.write_all(&[*part]).await.unwrap();
    }
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("abcdefghij"), "{answer}");
}

#[tokio::test]
async fn an_early_answer_reaches_a_client_that_writes_its_whole_body_first() {
    let (addr, _stop) = start(ServerTimeouts::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let size = 4 << 20;
    tcp.write_all(
        format!("POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::timeout(GIVE_UP, tcp.write_all(&vec![b'x'; size]))
        .await
        .expect("the server keeps reading what it will not use")
        .expect("no reset while writing");
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn the_health_server_closes_silent_connections() {
    // The metrics port has fixed deadlines (readHeaderTimeout 10s): paused time gets there.
    tokio::time::pause();
    let state = crate::HealthState::default();
    let server = crate::health::serve("127.0.0.1:0", state, CancellationToken::new())
        .await
        .unwrap();
    let mut tcp = TcpStream::connect(server.local_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(n, 0, "closed by the server");
}

/// Slots numbered from 0: the last is the shared one.
fn numbered_slots() -> PerCore<usize> {
    let mut next = 0;
    PerCore::try_new(|| {
        next += 1;
        Ok::<_, Infallible>(next - 1)
    })
    .unwrap()
}

/// A per-core server whose `/core` answers the `PerCore` slot the request was served from and
/// its thread's name; `/wait` tells `entered`, then answers once `release` is notified.
fn per_core_app(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
    let slots = Arc::new(numbered_slots());
    Router::new()
        .route(
            "/core",
            post(move || async move {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                format!("{} {thread}", slots.get())
            }),
        )
        .route(
            "/wait",
            post(move || async move {
                entered.notify_one();
                release.notified().await;
                "released"
            }),
        )
}

/// One request on its own connection: the whole answer.
async fn ask(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    read_to_close(&mut tcp).await
}

fn start_per_core(app: Router, stop: &CancellationToken) -> PerCoreServer {
    PerCoreServer::start(
        "127.0.0.1:0".parse().unwrap(),
        "test-core",
        move || app.clone(),
        ServerTimeouts::default().fixed(),
        stop.clone(),
    )
    .unwrap()
}

#[tokio::test]
async fn every_request_is_served_on_a_core_thread_with_that_core_s_own_slot() {
    let stop = CancellationToken::new();
    let server = start_per_core(per_core_app(Default::default(), Default::default()), &stop);
    let mut asking = tokio::task::JoinSet::new();
    for _ in 0..4 * cores() {
        asking.spawn(ask(server.local_addr(), "/core"));
    }
    while let Some(answer) = asking.join_next().await {
        let answer = answer.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (slot, thread) = answer
            .rsplit("\r\n")
            .next()
            .unwrap()
            .split_once(' ')
            .unwrap();
        let slot: usize = slot.parse().unwrap();
        assert_eq!(thread, format!("test-core-{slot}"), "{answer}");
        assert!(
            slot < cores(),
            "a core's own slot, not the shared one: {answer}"
        );
    }
    stop.cancel();
    tokio::time::timeout(GIVE_UP, server.stopped())
        .await
        .expect("every core stops");
}

#[test]
fn one_slot_per_core_and_the_last_for_every_other_thread() {
    let slots = numbered_slots();
    assert_eq!(*slots.get(), cores(), "this test's thread serves no core");
}

/// The error of starting a per-core server on `addr`, which must fail.
fn start_refused(addr: std::net::SocketAddr) -> std::io::Error {
    PerCoreServer::start(
        addr,
        "test-core",
        app,
        ServerTimeouts::default().fixed(),
        CancellationToken::new(),
    )
    .unwrap_err()
}

#[tokio::test]
async fn a_port_in_use_fails_to_start_and_is_not_shared() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = start_refused(taken.local_addr().unwrap());
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}

#[tokio::test]
async fn a_second_server_on_the_port_of_a_running_one_fails_to_start() {
    let stop = CancellationToken::new();
    let running = start_per_core(app(), &stop);
    let e = start_refused(running.local_addr());
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    stop.cancel();
    running.stopped().await;
}

#[tokio::test]
async fn stopping_every_core_lets_requests_in_flight_finish() {
    let stop = CancellationToken::new();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = start_per_core(per_core_app(entered.clone(), release.clone()), &stop);
    let addr = server.local_addr();
    let in_flight = tokio::spawn(ask(addr, "/wait"));
    entered.notified().await;
    stop.cancel();
    release.notify_one();
    let answer = tokio::time::timeout(GIVE_UP, in_flight)
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.ends_with("released"), "{answer}");
    tokio::time::timeout(GIVE_UP, server.stopped())
        .await
        .expect("every core stops");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens once every core stopped"
    );
}
