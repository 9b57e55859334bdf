//! An OCI image written without a container engine: one uncompressed layer holding the given
//! files, an image config, a manifest and an index, packed as an OCI image-layout tar that
//! `ctr images import` (and `skopeo copy oci-archive:…`) read.
//!
//! The output depends only on the inputs: every tar entry has mtime 0 and owner 0:0, entries are
//! sorted and parents are written before children, so the same binaries give the same digests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File as FsFile;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// What the image runs and as whom (the `config` object of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `uid:gid` or a name from the image's `/etc/passwd`.
    pub user: Option<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    /// TCP ports.
    pub exposed_ports: Vec<u16>,
    pub workdir: Option<String>,
    pub labels: BTreeMap<String, String>,
}

pub use fiso_rootfs::{materialize, Entry, File, Source};

/// An image: its reference (`fiso.local/fiso:dev`), config and files.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: String,
    pub config: Config,
    pub files: Vec<File>,
}

/// A written blob: its digest (`sha256:…`) and size.
struct Blob {
    digest: String,
    size: u64,
}

impl Image {
    /// Writes the OCI image-layout tar to `out`.
    pub fn write_archive(&self, out: &Path) -> Result<()> {
        let files = self.normalized_files()?;
        let work = out.with_extension("layer.tmp");
        let layer = write_layer(&files, &work)
            .with_context(|| format!("writing the layer of {}", self.reference))?;
        let config = serde_json::to_vec(&self.config_json(&layer.digest))?;
        let config_blob = blob_of(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, &config_blob),
            "layers": [descriptor(LAYER_MEDIA_TYPE, &layer)],
        }))?;
        let manifest_blob = blob_of(&manifest);
        let mut manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, &manifest_blob);
        manifest_descriptor["annotations"] = json!({
            "io.containerd.image.name": self.reference,
            "org.opencontainers.image.ref.name": self.reference,
        });
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [manifest_descriptor],
        }))?;

        let tmp = out.with_extension("tar.tmp");
        let mut tar = tar::Builder::new(BufWriter::new(
            FsFile::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        ));
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut tar, "index.json", &index)?;
        for (blob, bytes) in [(&config_blob, &config), (&manifest_blob, &manifest)] {
            append_bytes(&mut tar, &blob_path(blob), bytes)?;
        }
        let mut header = tar_header(tar::EntryType::Regular, 0o644, layer.size);
        tar.append_data(
            &mut header,
            blob_path(&layer),
            FsFile::open(&work).with_context(|| format!("opening {}", work.display()))?,
        )?;
        tar.into_inner()?.flush()?;
        std::fs::remove_file(&work)?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))
    }

    /// The image config: what runs, the layer's diff id, a fixed platform.
    fn config_json(&self, layer_digest: &str) -> Value {
        let c = &self.config;
        let mut config = serde_json::Map::new();
        if let Some(user) = &c.user {
            config.insert("User".into(), json!(user));
        }
        if !c.env.is_empty() {
            config.insert("Env".into(), json!(c.env));
        }
        if !c.entrypoint.is_empty() {
            config.insert("Entrypoint".into(), json!(c.entrypoint));
        }
        if !c.cmd.is_empty() {
            config.insert("Cmd".into(), json!(c.cmd));
        }
        if !c.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, Value> = c
                .exposed_ports
                .iter()
                .map(|p| (format!("{p}/tcp"), json!({})))
                .collect();
            config.insert("ExposedPorts".into(), Value::Object(ports));
        }
        if let Some(dir) = &c.workdir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if !c.labels.is_empty() {
            config.insert("Labels".into(), json!(c.labels));
        }
        json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        })
    }

    /// Files by path, each parent directory present (0755 unless given), no path twice.
    fn normalized_files(&self) -> Result<BTreeMap<String, Entry>> {
        let mut entries = BTreeMap::new();
        for file in &self.files {
            let path = fiso_rootfs::relative(&file.path)?;
            if entries.insert(path.clone(), file.entry.clone()).is_some() {
                bail!("{} is in image {} twice", file.path, self.reference);
            }
        }
        let parents: BTreeSet<String> = entries
            .keys()
            .flat_map(|p| {
                let mut dirs = Vec::new();
                let mut rest = p.as_str();
                while let Some((parent, _)) = rest.rsplit_once('/') {
                    dirs.push(parent.to_owned());
                    rest = parent;
                }
                dirs
            })
            .collect();
        for dir in parents {
            match entries.get(&dir) {
                None => {
                    entries.insert(dir, Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => bail!(
                    "/{dir} is both a directory and a file in {}",
                    self.reference
                ),
            }
        }
        Ok(entries)
    }
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// The layer tar at `path`, hashed as it is written (uncompressed: its digest is its diff id).
fn write_layer(files: &BTreeMap<String, Entry>, path: &Path) -> Result<Blob> {
    let file = FsFile::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(HashingWriter::new(BufWriter::new(file)));
    for (path, entry) in files {
        match entry {
            Entry::Dir { mode } => {
                let mut header = tar_header(tar::EntryType::Directory, *mode, 0);
                tar.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            Entry::File { source, mode } => {
                let (size, reader): (u64, Box<dyn Read>) = match source {
                    Source::Bytes(bytes) => (bytes.len() as u64, Box::new(bytes.as_slice())),
                    Source::Path(from) => {
                        let f = FsFile::open(from)
                            .with_context(|| format!("opening {}", from.display()))?;
                        (f.metadata()?.len(), Box::new(f))
                    }
                };
                let mut header = tar_header(tar::EntryType::Regular, *mode, size);
                tar.append_data(&mut header, path, reader)
                    .with_context(|| format!("adding /{path}"))?;
            }
        }
    }
    let mut hashing = tar.into_inner()?;
    hashing.flush()?;
    Ok(Blob {
        digest: format!("sha256:{:x}", hashing.hasher.finalize()),
        size: hashing.written,
    })
}

fn blob_of(bytes: &[u8]) -> Blob {
    Blob {
        digest: format!("sha256:{:x}", Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

fn blob_path(blob: &Blob) -> String {
    format!("blobs/{}", blob.digest.replacen(':', "/", 1))
}

fn descriptor(media_type: &str, blob: &Blob) -> Value {
    json!({"mediaType": media_type, "digest": blob.digest, "size": blob.size})
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// Counts and hashes what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(files: Vec<File>) -> Image {
        Image {
            reference: "fiso.local/test:1".into(),
            config: Config {
                entrypoint: vec!["/bin/x".into()],
                user: Some("65532:65532".into()),
                exposed_ports: vec![8081],
                ..Config::default()
            },
            files,
        }
    }

    /// Entries of a tar as (path, type, mode, bytes).
    fn entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, kind, mode, data)
            })
            .collect()
    }

    fn json_of(outer: &[(String, tar::EntryType, u32, Vec<u8>)], path: &str) -> Value {
        let (_, _, _, bytes) = outer.iter().find(|(p, ..)| p == path).unwrap();
        serde_json::from_slice(bytes).unwrap()
    }

    fn blob<'a>(outer: &'a [(String, tar::EntryType, u32, Vec<u8>)], digest: &Value) -> &'a [u8] {
        let path = format!("blobs/{}", digest.as_str().unwrap().replacen(':', "/", 1));
        &outer.iter().find(|(p, ..)| *p == path).unwrap().3
    }

    #[test]
    fn an_archive_is_a_valid_layout_with_every_digest_matching() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.tar");
        image(vec![
            File::bytes("/bin/x", b"#!".to_vec(), 0o755),
            File::dir("/tmp", 0o1777),
        ])
        .write_archive(&out)
        .unwrap();
        let outer = entries(&std::fs::read(&out).unwrap());
        let index = json_of(&outer, "index.json");
        let manifest_desc = &index["manifests"][0];
        assert_eq!(
            manifest_desc["annotations"]["io.containerd.image.name"],
            "fiso.local/test:1"
        );
        for (path, _, _, bytes) in outer.iter().filter(|(p, ..)| p.starts_with("blobs/")) {
            let digest = format!("{:x}", Sha256::digest(bytes));
            assert!(
                path.ends_with(&digest),
                "{path} holds bytes hashing to {digest}"
            );
        }
        let manifest: Value =
            serde_json::from_slice(blob(&outer, &manifest_desc["digest"])).unwrap();
        let config: Value =
            serde_json::from_slice(blob(&outer, &manifest["config"]["digest"])).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["ExposedPorts"], json!({"8081/tcp": {}}));
        assert_eq!(
            config["rootfs"]["diff_ids"][0], manifest["layers"][0]["digest"],
            "an uncompressed layer's diff id is its digest"
        );
        let layer = entries(blob(&outer, &manifest["layers"][0]["digest"]));
        let listed: Vec<(&str, tar::EntryType, u32)> = layer
            .iter()
            .map(|(p, k, m, _)| (p.as_str(), *k, *m))
            .collect();
        assert_eq!(
            listed,
            [
                ("bin/", tar::EntryType::Directory, 0o755),
                ("bin/x", tar::EntryType::Regular, 0o755),
                ("tmp/", tar::EntryType::Directory, 0o1777),
            ]
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![File::bytes("/a/b", b"1".to_vec(), 0o644)];
        let (one, two) = (dir.path().join("1.tar"), dir.path().join("2.tar"));
        image(files.clone()).write_archive(&one).unwrap();
        image(files).write_archive(&two).unwrap();
        assert_eq!(std::fs::read(one).unwrap(), std::fs::read(two).unwrap());
    }

    #[test]
    fn bad_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["relative", "/a/../b", "/", "/a//b"] {
            let err = image(vec![File::bytes(bad, b"".to_vec(), 0o644)])
                .write_archive(&dir.path().join("x.tar"))
                .unwrap_err();
            assert!(err.to_string().contains("path"), "{bad}: {err}");
        }
        let err = image(vec![
            File::bytes("/a", b"".to_vec(), 0o644),
            File::bytes("/a/b", b"".to_vec(), 0o644),
        ])
        .write_archive(&dir.path().join("x.tar"))
        .unwrap_err();
        assert!(
            err.to_string().contains("both a directory and a file"),
            "{err}"
        );
    }
}
