//! The files of a `FROM scratch` image of a dynamically linked binary, so the image needs no
//! base image and does not depend on any distribution's libc: the binary, exactly the shared
//! libraries `ldd` says it loads (the dynamic loader included), the CA bundle, `/etc/passwd`
//! and `/etc/group` naming the non-root user 65532, and an empty `/tmp`. Nothing is written at
//! run time, so the root filesystem can be mounted read-only.
//!
//! `cargo xtask image` packs these files into OCI archives and the root `Dockerfile` copies
//! them (`cargo xtask image rootfs`); `fiso dev --docker` writes them for its compose file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user every image runs as (distroless's `nonroot`).
pub const USER: &str = "65532:65532";
/// CA bundle copied into images, where rustls-native-certs (via openssl-probe) finds it.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// One entry of an image's file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { source: Source, mode: u32 },
    Dir { mode: u32 },
}

/// A file or directory at an absolute path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub entry: Entry,
}

impl File {
    pub fn copy(path: impl Into<String>, from: impl Into<PathBuf>, mode: u32) -> Self {
        File {
            path: path.into(),
            entry: Entry::File {
                source: Source::Path(from.into()),
                mode,
            },
        }
    }

    pub fn bytes(path: impl Into<String>, bytes: impl Into<Vec<u8>>, mode: u32) -> Self {
        File {
            path: path.into(),
            entry: Entry::File {
                source: Source::Bytes(bytes.into()),
                mode,
            },
        }
    }

    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        File {
            path: path.into(),
            entry: Entry::Dir { mode },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot run `ldd {binary}` (is this a glibc system?): {source}")]
    Ldd {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("`ldd {binary}` failed: {output}")]
    LddFailed { binary: PathBuf, output: String },
    #[error("{binary}: a shared library is missing: {line}")]
    Missing { binary: PathBuf, line: String },
    #[error("image path {0:?} is not a plain absolute path")]
    Path(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The files of a scratch image running `binary`, which lands at `path_in_image`.
pub fn scratch_image(binary: &Path, path_in_image: &str) -> Result<Vec<File>, RootfsError> {
    let mut files = vec![
        File::copy(path_in_image, binary, 0o755),
        File::bytes(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nfiso:x:65532:65532:fiso:/nonexistent:/sbin/nologin\n",
            0o644,
        ),
        File::bytes("/etc/group", "root:x:0:\nfiso:x:65532:\n", 0o644),
        File::copy(CA_BUNDLE, CA_BUNDLE, 0o644),
        File::dir("/tmp", 0o1777),
    ];
    for lib in shared_libraries(binary)? {
        let real = std::fs::canonicalize(&lib).map_err(|source| RootfsError::Io {
            action: "resolving",
            path: lib.clone(),
            source,
        })?;
        files.push(File::copy(lib.display().to_string(), real, 0o755));
    }
    Ok(files)
}

/// The shared libraries `binary` loads, as `ldd` resolves them on this machine (the dynamic
/// loader included; the kernel's vDSO excluded).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, RootfsError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| RootfsError::Ldd {
            binary: binary.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(RootfsError::LddFailed {
            binary: binary.to_owned(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    parse_ldd(binary, &String::from_utf8_lossy(&out.stdout))
}

fn parse_ldd(binary: &Path, text: &str) -> Result<Vec<PathBuf>, RootfsError> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => {
                return Err(RootfsError::Missing {
                    binary: binary.to_owned(),
                    line: line.to_owned(),
                })
            }
            _ => {}
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// Writes `file` under the directory `root` (its mode included), for builds that copy a tree
/// into an image (a `Dockerfile`'s `COPY`).
pub fn materialize(file: &File, root: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::PermissionsExt;

    let path = root.join(relative(&file.path)?);
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| RootfsError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let mode = match &file.entry {
        Entry::Dir { mode } => {
            std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
            *mode
        }
        Entry::File { source, mode } => {
            match source {
                Source::Path(from) => std::fs::copy(from, &path).map(drop),
                Source::Bytes(bytes) => std::fs::write(&path, bytes),
            }
            .map_err(io("writing", &path))?;
            *mode
        }
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", &path))
}

/// `/usr/local/bin/fiso` → `usr/local/bin/fiso`, refusing `..` and relative paths.
pub fn relative(path: &str) -> Result<String, RootfsError> {
    let rest = path
        .strip_prefix('/')
        .map(|r| r.trim_end_matches('/'))
        .filter(|rest| {
            !rest.is_empty()
                && !rest
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
        })
        .ok_or_else(|| RootfsError::Path(path.to_owned()))?;
    Ok(rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(Path::new("b"), text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = "\tlibfoo.so.1 => not found\n";
        assert!(matches!(
            parse_ldd(Path::new("b"), missing),
            Err(RootfsError::Missing { .. })
        ));
    }

    #[test]
    fn image_paths_are_plain_and_absolute() {
        assert_eq!(
            relative("/usr/local/bin/fiso").unwrap(),
            "usr/local/bin/fiso"
        );
        assert_eq!(relative("/tmp/").unwrap(), "tmp");
        for bad in ["tmp", "/", "/a/../b", "/a//b", "/./a"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_materialized_tree_keeps_modes() {
        use std::os::unix::fs::PermissionsExt;

        let root = tempfile::tempdir().unwrap();
        for file in [
            File::bytes("/etc/group", "root:x:0:\n", 0o644),
            File::dir("/tmp", 0o1777),
        ] {
            materialize(&file, root.path()).unwrap();
        }
        let mode = |p: &str| {
            std::fs::metadata(root.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("etc/group"), 0o644);
        assert_eq!(mode("tmp"), 0o1777);
    }
}
