//! `workflowIdExpr`: literal text with `{{.path}}` placeholders resolved against the CloudEvent.

use serde_json::Value as Json;

use crate::event::json;

/// A parsed `workflowIdExpr`: literal text and `{{.path}}` placeholders (the syntax
/// `fiso validate` checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowIdTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Path(Vec<String>),
}

impl WorkflowIdTemplate {
    pub fn parse(expr: &str) -> Result<Self, String> {
        if expr.trim().is_empty() {
            return Err("workflow id template is empty".into());
        }
        let mut parts = Vec::new();
        let mut rest = expr;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in `{expr}`"))?;
            let inner = after[..end].trim();
            let path: Option<Vec<String>> = inner.strip_prefix('.').and_then(|p| {
                p.split('.')
                    .map(|seg| {
                        (!seg.is_empty()
                            && seg
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                        .then(|| seg.to_owned())
                    })
                    .collect()
            });
            let path =
                path.ok_or_else(|| format!("`{{{{{inner}}}}}` is not a field placeholder"))?;
            parts.push(Part::Path(path));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("stray `}}}}` in `{expr}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(WorkflowIdTemplate { parts })
    }

    /// The id for `envelope` (the structured CloudEvent). A missing or null field, or one that
    /// is an object or array, is an error: never an empty id segment.
    pub fn render(&self, envelope: &Json) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Path(path) => {
                    let shown = || format!("{{{{.{}}}}}", path.join("."));
                    let value = path
                        .iter()
                        .try_fold(envelope, |v, seg| match v {
                            Json::Object(m) => m.get(seg),
                            Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                            _ => None,
                        })
                        .ok_or_else(|| format!("{}: no such field in the event", shown()))?;
                    match value {
                        Json::String(s) if s.is_empty() => {
                            return Err(format!("{}: the field is empty", shown()))
                        }
                        Json::String(s) => out.push_str(s),
                        Json::Number(_) | Json::Bool(_) => {
                            out.push_str(&json::to_string_plain(value).map_err(|e| e.to_string())?)
                        }
                        Json::Null => return Err(format!("{}: the field is null", shown())),
                        Json::Object(_) | Json::Array(_) => {
                            return Err(format!("{}: not a string, number or bool", shown()))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
