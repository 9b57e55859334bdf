//! The gRPC source's connections: accepted with the shared backoff (tonic retries a failed
//! accept at once, which spins while the process is out of file descriptors), and closed if the
//! client sends nothing within `readHeaderTimeout` of connecting. After the first bytes, HTTP/2
//! keep-alive PINGs find dead peers; a live gRPC channel may stay idle, as gRPC clients expect.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use fiso_runtime::server::Acceptor;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Accepted connections of `listener`, forever (tonic stops taking them on shutdown).
pub fn incoming(
    listener: TcpListener,
    first_byte: Duration,
) -> impl Stream<Item = io::Result<FirstByteDeadline>> {
    futures::stream::unfold(Acceptor::new(listener), move |mut acceptor| async move {
        let tcp = acceptor.accept().await;
        let _ = tcp.set_nodelay(true);
        Some((Ok(FirstByteDeadline::new(tcp, first_byte)), acceptor))
    })
}

/// A socket whose reads fail with `TimedOut` if nothing arrived within the deadline.
pub struct FirstByteDeadline {
    tcp: TcpStream,
    /// `None` once a byte arrived.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl FirstByteDeadline {
    fn new(tcp: TcpStream, within: Duration) -> Self {
        FirstByteDeadline {
            tcp,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl Connected for FirstByteDeadline {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for FirstByteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing after connecting",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for FirstByteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_silent_client_is_cut_off_and_a_talking_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Box::pin(incoming(listener, Duration::from_millis(200)));

        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut server_side = conns.next().await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        let err = server_side.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let mut talking = TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut talking, b"PRI")
            .await
            .unwrap();
        let mut server_side = conns.next().await.unwrap().unwrap();
        assert_eq!(server_side.read(&mut buf).await.unwrap(), 3);
        // Past the first deadline, a quiet moment is no longer an error: the read just waits.
        let waited =
            tokio::time::timeout(Duration::from_millis(400), server_side.read(&mut buf)).await;
        assert!(waited.is_err(), "{waited:?}");
    }
}
