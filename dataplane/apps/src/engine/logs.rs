//! A guest's stdout / stderr as log lines: each line becomes one `tracing` event with the app's
//! name and the stream (`fiso_apps::guest` target), so the JSON logs carry them like Fiso's own.
//! A line longer than [`MAX_LINE`] is logged in pieces; bytes that are not UTF-8 are replaced.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use wasmer_wasix::virtual_fs::{self, FsError, VirtualFile};

/// Longest line logged as one event.
pub(crate) const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct LogLines {
    app: Arc<str>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogLines {
    pub(crate) fn new(app: &str, stream: &'static str) -> Self {
        LogLines {
            app: app.into(),
            stream,
            pending: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            self.emit(&piece);
        }
    }

    /// Logs what is left without a final newline (at the guest's exit).
    pub(crate) fn flush_rest(&self) {
        let rest = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if self.stream == "stderr" {
            tracing::warn!(target: "fiso_apps::guest", app = %self.app, stream = self.stream, "{line}");
        } else {
            tracing::info!(target: "fiso_apps::guest", app = %self.app, stream = self.stream, "{line}");
        }
    }
}

impl VirtualFile for LogLines {
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

impl AsyncWrite for LogLines {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for LogLines {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::PermissionDenied.into()))
    }
}

impl AsyncSeek for LogLines {
    fn start_seek(self: Pin<&mut Self>, _position: io::SeekFrom) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}
