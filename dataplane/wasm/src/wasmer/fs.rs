//! The guest's filesystem: an empty in-memory root with each `preopens` host directory mounted
//! at its guest path, all of it read-only.
//!
//! wasmer-wasix cannot be trusted to enforce read-only preopens through WASI rights: its root
//! file descriptor (`/`) carries every right, and `path_unlink_file` unlinks through the opened
//! file handle. So the filesystem itself refuses every mutation ([`ReadOnlyFs`]) and every file it
//! hands out refuses writes ([`ReadOnlyFile`]), whatever rights the guest's descriptor claims.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use wasmer_wasix::virtual_fs::{
    self, host_fs, FileOpener, FileSystem, FsError, Metadata, OpenOptions, OpenOptionsConfig,
    ReadDir, TmpFileSystem, VirtualFile,
};

/// Builds the root filesystem for `preopens` (host directory, guest path). `io` runs the host
/// filesystem's blocking calls.
pub fn root(
    preopens: &[(PathBuf, String)],
    io: tokio::runtime::Handle,
) -> Result<Arc<ReadOnlyFs>, String> {
    let tmp = TmpFileSystem::new();
    for (host, guest) in preopens {
        let guest = guest_path(guest);
        if let Some(parent) = guest.parent() {
            create_dir_all(&tmp, parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let host_fs = host_fs::FileSystem::new(io.clone(), host)
            .map_err(|e| format!("cannot open {}: {e}", host.display()))?;
        let root = host
            .canonicalize()
            .map_err(|e| format!("cannot open {}: {e}", host.display()))?;
        let mounted: Arc<dyn FileSystem + Send + Sync> = Arc::new(ReadOnlyFs {
            inner: Box::new(host_fs),
            host_root: Some(root),
        });
        tmp.mount(guest.clone(), &mounted, PathBuf::from("/"))
            .map_err(|e| format!("cannot mount at {}: {e}", guest.display()))?;
    }
    Ok(Arc::new(ReadOnlyFs {
        inner: Box::new(tmp),
        host_root: None,
    }))
}

/// The absolute path in the guest's root that a preopen's `guestPath` names (`data`, `./data`
/// and `/data` are the same directory).
pub fn guest_path(guest: &str) -> PathBuf {
    let mut path = PathBuf::from("/");
    for component in Path::new(guest).components() {
        match component {
            Component::Normal(c) => path.push(c),
            Component::ParentDir => {
                path.pop();
            }
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
        }
    }
    path
}

fn create_dir_all(fs: &TmpFileSystem, path: &Path) -> virtual_fs::Result<()> {
    let mut current = PathBuf::from("/");
    for component in path.components() {
        if let Component::Normal(c) = component {
            current.push(c);
            match fs.create_dir(&current) {
                Ok(()) | Err(FsError::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A filesystem that only reads. Over a host directory (`host_root`), it also refuses paths that
/// resolve (through symlinks) outside that directory, as wasmtime's capability-based preopens do.
#[derive(Debug)]
pub struct ReadOnlyFs {
    inner: Box<dyn FileSystem + Send + Sync>,
    host_root: Option<PathBuf>,
}

impl ReadOnlyFs {
    fn confine(&self, path: &Path) -> virtual_fs::Result<()> {
        let Some(root) = &self.host_root else {
            return Ok(());
        };
        let relative: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        match root.join(relative).canonicalize() {
            Ok(real) if !real.starts_with(root) => Err(FsError::PermissionDenied),
            // A path that does not exist cannot escape: the inner filesystem reports it.
            _ => Ok(()),
        }
    }
}

impl FileSystem for ReadOnlyFs {
    fn readlink(&self, path: &Path) -> virtual_fs::Result<PathBuf> {
        self.confine(path)?;
        self.inner.readlink(path)
    }

    fn read_dir(&self, path: &Path) -> virtual_fs::Result<ReadDir> {
        self.confine(path)?;
        self.inner.read_dir(path)
    }

    fn create_dir(&self, _path: &Path) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn remove_dir(&self, _path: &Path) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn rename<'a>(
        &'a self,
        _from: &'a Path,
        _to: &'a Path,
    ) -> BoxFuture<'a, virtual_fs::Result<()>> {
        Box::pin(async { Err(FsError::PermissionDenied) })
    }

    fn metadata(&self, path: &Path) -> virtual_fs::Result<Metadata> {
        self.confine(path)?;
        self.inner.metadata(path)
    }

    fn symlink_metadata(&self, path: &Path) -> virtual_fs::Result<Metadata> {
        self.confine(path)?;
        self.inner.symlink_metadata(path)
    }

    fn remove_file(&self, _path: &Path) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn new_open_options(&self) -> OpenOptions<'_> {
        OpenOptions::new(self)
    }

    fn mount(
        &self,
        _name: String,
        _path: &Path,
        _fs: Box<dyn FileSystem + Send + Sync>,
    ) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }
}

impl FileOpener for ReadOnlyFs {
    fn open(
        &self,
        path: &Path,
        conf: &OpenOptionsConfig,
    ) -> virtual_fs::Result<Box<dyn VirtualFile + Send + Sync + 'static>> {
        if conf.would_mutate() {
            return Err(FsError::PermissionDenied);
        }
        self.confine(path)?;
        let file = self
            .inner
            .new_open_options()
            .options(conf.clone())
            .open(path)?;
        Ok(Box::new(ReadOnlyFile(file)))
    }
}

/// A file opened from a [`ReadOnlyFs`]: reads and seeks pass through, every change is refused
/// (the default `copy_*` methods of [`VirtualFile`] write through `poll_write`, refused too).
#[derive(Debug)]
struct ReadOnlyFile(Box<dyn VirtualFile + Send + Sync + 'static>);

fn denied() -> io::Error {
    io::ErrorKind::PermissionDenied.into()
}

impl VirtualFile for ReadOnlyFile {
    fn last_accessed(&self) -> u64 {
        self.0.last_accessed()
    }

    fn last_modified(&self) -> u64 {
        self.0.last_modified()
    }

    fn created_time(&self) -> u64 {
        self.0.created_time()
    }

    fn set_times(&mut self, _atime: Option<u64>, _mtime: Option<u64>) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn size(&self) -> u64 {
        self.0.size()
    }

    fn set_len(&mut self, _new_size: u64) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn unlink(&mut self) -> virtual_fs::Result<()> {
        Err(FsError::PermissionDenied)
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }

    fn poll_read_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_read_ready(cx)
    }

    fn poll_write_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(denied()))
    }
}

impl AsyncRead for ReadOnlyFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncSeek for ReadOnlyFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut *self.0).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut *self.0).poll_complete(cx)
    }
}

impl AsyncWrite for ReadOnlyFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(denied()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
