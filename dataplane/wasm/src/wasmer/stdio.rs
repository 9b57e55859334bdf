//! The guest's stdout and stderr: in-memory, bounded.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use wasmer_wasix::virtual_fs::{self, FsError, VirtualFile};

use super::run::{Run, Stop};

/// What a guest writes to stdout or stderr, kept in host memory.
#[derive(Debug, Clone)]
pub struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    limit: usize,
    /// `Some` for stdout: going past `limit` fails the write and stops the run (the event fails
    /// with `OutputTooLarge` whatever the guest does next). `None` for stderr: the rest is
    /// dropped silently, because a Rust guest panics when a write to stderr fails.
    overflow: Option<Arc<Run>>,
}

impl Capture {
    pub fn stdout(limit: u64, run: Arc<Run>) -> Self {
        Capture {
            buf: Arc::default(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            overflow: Some(run),
        }
    }

    pub fn stderr(keep: usize) -> Self {
        Capture {
            buf: Arc::default(),
            limit: keep,
            overflow: None,
        }
    }

    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn append(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.limit.saturating_sub(buf.len());
        match &self.overflow {
            Some(run) if bytes.len() > room => {
                run.stop(Stop::OutputTooLarge);
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "stdout is larger than its limit",
                ))
            }
            _ => {
                buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                Ok(bytes.len())
            }
        }
    }
}

impl VirtualFile for Capture {
    fn last_accessed(&self) -> u64 {
        0
    }

    fn last_modified(&self) -> u64 {
        0
    }

    fn created_time(&self) -> u64 {
        0
    }

    fn size(&self) -> u64 {
        0
    }

    fn set_len(&mut self, _new_size: u64) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn unlink(&mut self) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn poll_read_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }

    fn poll_write_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(64 * 1024))
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.append(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Capture {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::PermissionDenied.into()))
    }
}

impl AsyncSeek for Capture {
    fn start_seek(self: Pin<&mut Self>, _position: io::SeekFrom) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}
