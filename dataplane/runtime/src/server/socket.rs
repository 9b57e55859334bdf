//! The accepted socket as hyper sees it: reads are reported to the connection's
//! [`ConnActivity`], and closing a connection whose request body was left unread is a lingering
//! close (nginx's `lingering_close`): the answer is sent, our side is shut down, and what the
//! client still sends is read and dropped for a bounded time, so that the client — which may
//! write its whole body before it reads — gets the 413 / 403 / 408 instead of a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::activity::ConnActivity;

/// nginx's `lingering_time`: the most a lingering close lasts.
pub const LINGERING_TIME: Duration = Duration::from_secs(30);
/// nginx's `lingering_timeout`: the longest wait for more of the client's data.
pub const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Socket {
    tcp: Option<TcpStream>,
    activity: Arc<ConnActivity>,
}

impl Socket {
    pub(crate) fn new(tcp: TcpStream, activity: Arc<ConnActivity>) -> Self {
        Socket {
            tcp: Some(tcp),
            activity,
        }
    }

    fn tcp(&mut self) -> Pin<&mut TcpStream> {
        // Taken only in `drop`.
        Pin::new(self.tcp.as_mut().expect("the socket is open until dropped"))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let Some(tcp) = self.tcp.take() else { return };
        if !self.activity.needs_linger() {
            return;
        }
        // Outside a runtime (it is shutting down) the socket simply closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(tcp, LINGERING_TIME, LINGERING_TIMEOUT));
        }
    }
}

/// Shuts our side down and discards what the client still sends, until it closes its side,
/// stays silent for `timeout`, or `total` has passed.
pub(crate) async fn linger(mut tcp: TcpStream, total: Duration, timeout: Duration) {
    let _ = tcp.shutdown().await;
    let end = Instant::now() + total;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let until = end.min(Instant::now() + timeout);
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.tcp().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.tcp().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.tcp().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// The client writes a body the server never reads, then reads: without lingering the
    /// close would reset the connection and lose the answer.
    #[tokio::test]
    async fn a_client_still_sending_reads_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 64];
            let _ = tcp.read(&mut head).await.unwrap();
            tcp.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            linger(tcp, LINGERING_TIME, Duration::from_secs(2)).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\ncontent-length: 4194304\r\n\r\n")
            .await
            .unwrap();
        client.write_all(&vec![b'x'; 4 << 20]).await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        drop(client);
        server.await.unwrap();
    }
}
