//! Our own vectors, `e2e/conformance/fiso/*.yaml` (format: the README beside them).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::{Expect, Message, Transport, Vector};

/// The content type of a structured-mode input unless the vector names another.
const STRUCTURED: &str = "application/cloudevents+json";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    transport: Transport,
    vectors: Vec<RawVector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVector {
    name: String,
    clause: String,
    structured: Option<Value>,
    structured_text: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    body_base64: Option<String>,
    valid: Option<Value>,
    invalid: Option<String>,
}

pub(super) fn load(dir: &Path) -> Vec<Vector> {
    super::files(dir, "yaml")
        .iter()
        .flat_map(|path| {
            let file: File = serde_yaml_ng::from_str(&super::read(path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let short = super::short_name(path);
            file.vectors.into_iter().map(move |raw| {
                let name = format!("{short}: {}", raw.name);
                raw.into_vector(name, file.transport)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            })
        })
        .collect()
}

impl RawVector {
    fn into_vector(self, name: String, transport: Transport) -> Result<Vector, String> {
        let structured_body = match (self.structured, self.structured_text) {
            (Some(event), None) => Some(serde_json::to_vec(&event).map_err(|e| e.to_string())?),
            (None, Some(text)) => Some(text.into_bytes()),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(format!("{name}: structured and structured_text")),
        };
        let binary_body = match (self.body, self.body_base64) {
            (Some(text), None) => Some(text.into_bytes()),
            (None, Some(b64)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("{name}: body_base64: {e}"))?,
            ),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(format!("{name}: body and body_base64")),
        };
        let mut headers: Vec<(String, String)> = self.headers.into_iter().collect();
        let body = match (structured_body, binary_body) {
            (Some(body), None) => {
                let content_type = self.content_type.unwrap_or_else(|| STRUCTURED.to_owned());
                headers.push(("content-type".to_owned(), content_type));
                body
            }
            (Some(_), Some(_)) => return Err(format!("{name}: a structured input with a body")),
            (None, _) if self.content_type.is_some() => {
                return Err(format!(
                    "{name}: content_type is for structured inputs (binary: a header)"
                ))
            }
            (None, body) => body.unwrap_or_default(),
        };
        let expect = match (self.valid, self.invalid) {
            (Some(Value::Object(event)), None) => Expect::Valid(event),
            (None, Some(word)) => Expect::Invalid(word),
            _ => {
                return Err(format!(
                    "{name}: exactly one of valid (an object) or invalid"
                ))
            }
        };
        Ok(Vector {
            name,
            clause: self.clause,
            transport,
            message: Message { headers, body },
            expect,
        })
    }
}
