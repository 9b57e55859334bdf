//! CloudEvents conformance vectors and the contract Fiso's sinks are checked against.
//!
//! A [`Vector`] is one message to send (an HTTP request or a Kafka record: headers and body)
//! and what must come of it: a valid event, written as the JSON format carries it, or a refusal
//! whose message names the problem. The vectors come from `e2e/conformance/`:
//! - `fiso/*.yaml`: our own, one file per CloudEvents 1.0.2 document ([`own`]);
//! - `upstream/features/*.feature`: the CloudEvents conformance repository's Gherkin scenarios,
//!   every `Examples` row one vector ([`gherkin`]);
//! - `upstream/yaml/**`: its YAML events, sent exactly as its `cloudevents send` tool builds the
//!   request ([`upstream`]).
//!
//! [`check`] holds the expectations at a structured and a binary HTTP sink and for a refusal.

pub mod check;
mod gherkin;
mod own;
mod upstream;

use std::path::PathBuf;

use serde_json::{Map, Value};

/// Where a vector is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// An HTTP request to the flows' HTTP source.
    Http,
    /// A record produced to the topic a Kafka-source flow reads.
    Kafka,
}

/// What is sent: an HTTP request's headers and body, or a Kafka record's headers and value.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    /// A structured-mode message: `event` as the body with `content_type`.
    pub fn structured(content_type: &str, event: &Value) -> Self {
        Message {
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: serde_json::to_vec(event).expect("serialising an event"),
        }
    }
}

/// What must come of a vector.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Accepted and delivered as this event (JSON-format members: attributes with their JSON
    /// types, `data` / `data_base64` / neither). No `time`: the input had none and Fiso stamps
    /// the receive time.
    Valid(Map<String, Value>),
    /// Refused (HTTP: 400 `INPUT_INVALID`), never delivered; the error message contains this
    /// word (case-insensitive, as a whole word).
    Invalid(String),
}

/// One conformance vector.
#[derive(Debug, Clone)]
pub struct Vector {
    /// `<file>: <name>`, unique over all vectors.
    pub name: String,
    /// The specification clause it comes from.
    pub clause: String,
    pub transport: Transport,
    pub message: Message,
    pub expect: Expect,
}

/// `e2e/conformance`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// Every vector: ours, then the upstream feature scenarios, then the upstream YAML events.
/// Panics, naming the file, when one cannot be read.
pub fn all() -> Vec<Vector> {
    let dir = dir();
    let mut vectors = own::load(&dir.join("fiso"));
    vectors.extend(gherkin::load(&dir.join("upstream/features")));
    vectors.extend(upstream::load(&dir.join("upstream/yaml")));
    let mut names = std::collections::BTreeSet::new();
    for v in &vectors {
        assert!(names.insert(&v.name), "two vectors are named {:?}", v.name);
    }
    vectors
}

/// Reads `path` as text, panicking with its name.
fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `path` relative to `e2e/conformance`, for vector names.
fn short_name(path: &std::path::Path) -> String {
    path.strip_prefix(dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The `.<ext>` files under `dir` (recursively), sorted.
fn files(dir: &std::path::Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_file_loads() {
        let vectors = all();
        let count = |t| vectors.iter().filter(|v| v.transport == t).count();
        assert!(count(Transport::Http) > 150, "{}", count(Transport::Http));
        assert_eq!(count(Transport::Kafka), 11 + 3);
        let upstream = vectors.iter().filter(|v| v.name.starts_with("upstream/"));
        assert_eq!(upstream.count(), 4 + 3 + 15);
    }

    #[test]
    fn upstream_yaml_is_sent_as_the_conformance_tool_sends_it() {
        let v1: Vec<Vector> = all()
            .into_iter()
            .filter(|v| v.name.starts_with("upstream/yaml/v1.yaml"))
            .collect();
        let binary = &v1[0].message;
        assert_eq!(binary.body, b"{\"world\":\"hello\"}\n");
        assert!(binary
            .headers
            .contains(&("ce-specversion".to_owned(), "1.0".to_owned())));
        assert!(binary.headers.contains(&(
            "ce-comexampleextension2".to_owned(),
            "{\"othervalue\": 5}".to_owned()
        )));
        assert!(!binary.headers.iter().any(|(k, _)| k == "Content-Type"));
        let structured = &v1[1].message;
        assert_eq!(
            String::from_utf8_lossy(&structured.body),
            r#"{"comexampleextension1":"value","comexampleextension2":"{\"othervalue\": 5}","data":{"world":"hello"},"id":"4321-4321-4321","source":"/mycontext/subcontext","specversion":"1.0","time":"2018-04-05T03:56:24Z","type":"com.example.someevent"}"#
        );
    }
}
