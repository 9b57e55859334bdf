//! The upstream every benchmark proxies to: the smallest fast HTTP/1.1 server (hyper, keep-alive,
//! all cores), answering any request with `200` and a 2-byte JSON body after reading the body.
//! `GET /__count` answers how many other requests it served: the Kafka drain benchmark polls it
//! to see when Fiso delivered every record.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Requests served, `/__count` excluded.
static SERVED: AtomicU64 = AtomicU64::new(0);

/// Serves on `addr` until the process is killed; prints `listening <addr>` once bound.
pub fn serve(addr: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        serve_http1(listener, || {
            service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() == "/__count" {
                    let n = SERVED.load(Ordering::Relaxed).to_string();
                    return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(n))));
                }
                // Read the body like a real service would.
                let _ = req.into_body().collect().await;
                SERVED.fetch_add(1, Ordering::Relaxed);
                Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
            })
        })
        .await
    })
}

/// Serves every connection `listener` accepts over keep-alive HTTP/1.1 with a service from
/// `service`, each connection its own task on the current runtime.
pub async fn serve_http1<S, B>(
    listener: tokio::net::TcpListener,
    service: impl Fn() -> S,
) -> Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let connection = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(tcp), service());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
