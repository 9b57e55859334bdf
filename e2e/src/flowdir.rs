//! A temporary flow config directory that tests edit while `fiso flow` watches it.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// `<tmp>/flows` (the config dir) next to `<tmp>/staging`, where files are written before being
/// renamed into place, so the watcher never reads a half-written file unless a test asks.
pub struct FlowDir {
    root: TempDir,
}

impl Default for FlowDir {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowDir {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("fiso-e2e-")
            .tempdir()
            .expect("creating a temp dir");
        for dir in ["flows", "staging"] {
            std::fs::create_dir(root.path().join(dir)).expect("creating the flow dir");
        }
        FlowDir { root }
    }

    /// The directory to pass as `--config-dir`.
    pub fn path(&self) -> PathBuf {
        self.root.path().join("flows")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Replaces (or creates) `name` atomically with `content`.
    pub fn write(&self, name: &str, content: &str) {
        let staged = self.root.path().join("staging").join(name);
        std::fs::write(&staged, content).expect("writing a staged flow file");
        std::fs::rename(&staged, self.file(name)).expect("moving a flow file into place");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.file(name)).expect("removing a flow file");
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// An HTTP → HTTP flow file.
///
/// ```
/// let yaml = fiso_e2e::HttpFlow::new("orders", "127.0.0.1:0", "/orders", "http://127.0.0.1:9/in")
///     .source_config("maxBodySize: 16")
///     .sink_config("mode: binary")
///     .with("errorHandling:\n  maxRetries: 0")
///     .yaml();
/// assert!(yaml.contains("    maxBodySize: 16\n"));
/// ```
#[derive(Debug, Clone)]
pub struct HttpFlow {
    name: String,
    listen_addr: String,
    path: String,
    sink_url: String,
    source_config: Vec<String>,
    sink_config: Vec<String>,
    sections: Vec<String>,
}

impl HttpFlow {
    pub fn new(name: &str, listen_addr: &str, path: &str, sink_url: &str) -> Self {
        HttpFlow {
            name: name.to_owned(),
            listen_addr: listen_addr.to_owned(),
            path: path.to_owned(),
            sink_url: sink_url.to_owned(),
            source_config: Vec::new(),
            sink_config: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// A flow on `listen_addr` at `/<name>`, delivering to `sink`'s `/<name>`.
    pub fn named(name: &str, listen_addr: &str, sink: &crate::SinkServer) -> Self {
        let path = format!("/{name}");
        HttpFlow::new(name, listen_addr, &path, &sink.url(&path))
    }

    /// A line under `source.config` (e.g. `maxBodySize: 16`).
    pub fn source_config(mut self, line: &str) -> Self {
        self.source_config.push(line.to_owned());
        self
    }

    /// A line under `sink.config` (e.g. `mode: binary`).
    pub fn sink_config(mut self, line: &str) -> Self {
        self.sink_config.push(line.to_owned());
        self
    }

    /// A top-level section as YAML (`transform:`, `cloudevents:`, `errorHandling:`, ...).
    pub fn with(mut self, yaml: &str) -> Self {
        if !yaml.trim().is_empty() {
            self.sections.push(yaml.trim_end().to_owned());
        }
        self
    }

    /// `transform.fields` with the one field `out: <expr>` (any text: it is written as a quoted
    /// YAML scalar).
    pub fn out_field(self, expr: &str) -> Self {
        let quoted = serde_json::Value::String(expr.to_owned()).to_string();
        self.with(&format!("transform:\n  fields:\n    out: {quoted}"))
    }

    pub fn yaml(&self) -> String {
        let indent =
            |lines: &[String]| -> String { lines.iter().map(|l| format!("    {l}\n")).collect() };
        let mut out = format!(
            "name: {}\nsource:\n  type: http\n  config:\n    listenAddr: \"{}\"\n    path: {}\n{}\
             sink:\n  type: http\n  config:\n    url: {}\n{}",
            self.name,
            self.listen_addr,
            self.path,
            indent(&self.source_config),
            self.sink_url,
            indent(&self.sink_config),
        );
        for section in &self.sections {
            out.push_str(section);
            out.push('\n');
        }
        out
    }
}
