//! The bare hyper proxy the HTTP benchmarks measure Fiso beside: hyper's HTTP/1 server and
//! Fiso's own client pool of plain HTTP/1.1 connections ([`OriginClient`]: the libraries Fiso's
//! hot path is built on), forwarding every request to the upstream as it came and the response
//! back as it came, nothing else. It is the
//! floor of any proxy built on these libraries, in two shapes:
//! - [`Shape::Shared`]: one multi-threaded Tokio runtime and one connection pool, Fiso's shape;
//! - [`Shape::PerCore`]: a single-threaded runtime per core, each with its own `SO_REUSEPORT`
//!   listener and its own pool, nginx's shape: no task, wake-up or connection crosses threads.

use std::net::SocketAddr;
use std::sync::mpsc;

use anyhow::{Context, Result};
use bytes::Bytes;
use fiso_runtime::http_client::{ClientSettings, OriginClient, ResponseBody};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use tokio::net::{TcpListener, TcpSocket};

use super::upstream::serve_http1;

pub enum Shape {
    Shared,
    PerCore,
}

impl std::str::FromStr for Shape {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shared" => Ok(Shape::Shared),
            "per-core" => Ok(Shape::PerCore),
            other => anyhow::bail!("unknown proxy shape {other:?} (shared | per-core)"),
        }
    }
}

/// Proxies `upstream` from `listen` until the process is killed; prints `listening <addr>` once
/// every listener is bound.
pub fn serve(listen: SocketAddr, upstream: SocketAddr, shape: Shape) -> Result<()> {
    match shape {
        Shape::Shared => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(async move {
                let listener = TcpListener::bind(listen).await?;
                println!("listening {}", listener.local_addr()?);
                accept(listener, upstream).await
            }),
        Shape::PerCore => per_core(listen, upstream),
    }
}

/// One thread per core, each its own runtime and listener on the same port: the first binds
/// `listen` and tells the others the port it got.
fn per_core(listen: SocketAddr, upstream: SocketAddr) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (bound_tx, bound_rx) = mpsc::channel::<Result<SocketAddr>>();
    let mut addr = listen;
    let mut threads = Vec::new();
    for _ in 0..cores {
        let bound = bound_tx.clone();
        threads.push(std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = reuse_port(addr);
                let _ = bound.send(match &listener {
                    Ok(l) => l.local_addr().map_err(Into::into),
                    Err(e) => Err(anyhow::anyhow!("binding {addr}: {e}")),
                });
                accept(listener?, upstream).await
            })
        }));
        addr = bound_rx.recv().context("a proxy thread ended")??;
    }
    println!("listening {addr}");
    for thread in threads {
        thread.join().expect("proxy thread panicked")?;
    }
    Ok(())
}

fn reuse_port(addr: SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(1024)?)
}

/// Serves every connection `listener` accepts on the current runtime, through one pool.
async fn accept(listener: TcpListener, upstream: SocketAddr) -> Result<()> {
    let authority: hyper::http::uri::Authority = upstream.to_string().parse()?;
    let origin = Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()?;
    let client: OriginClient<Incoming> = ClientSettings::default().build_for(&origin)?;
    serve_http1(listener, || {
        let (client, authority) = (client.clone(), authority.clone());
        service_fn(move |req: Request<Incoming>| forward(client.clone(), authority.clone(), req))
    })
    .await
}

type Body = Either<ResponseBody, Empty<Bytes>>;

async fn forward(
    client: OriginClient<Incoming>,
    authority: hyper::http::uri::Authority,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    let response = match Uri::from_parts(uri) {
        Ok(uri) => {
            parts.uri = uri;
            client.request(Request::from_parts(parts, body)).await.ok()
        }
        Err(_) => None,
    };
    Ok(match response {
        Some(r) => r.map(Either::Left),
        None => {
            let mut bad = Response::new(Either::Right(Empty::new()));
            *bad.status_mut() = StatusCode::BAD_GATEWAY;
            bad
        }
    })
}
