//! The upstream feature files (`upstream/features/*.feature`), read with the small part of
//! Gherkin they use: `Scenario` / `Scenario Outline` with `Examples`, steps with a doc string or
//! a table. Each scenario (each `Examples` row of an outline) is one vector:
//! - `Given an HTTP request` + doc string: the request (request line, headers, blank line, body;
//!   `Host` and `Content-Length` are left to the client);
//! - `Given a Kafka message with payload:` + doc string, `And Kafka headers:` + table: a record;
//! - `Then the attributes are:` + table and `And the data is equal to the following JSON:` + doc
//!   string: the expected event (attribute values are strings, data a JSON value).
//!
//! A step this reader does not know fails loudly, so a newer upstream file is never half-read.

use std::path::Path;

use serde_json::{Map, Value};

use super::{Expect, Message, Transport, Vector};

#[derive(Debug, Clone, Default)]
struct Step {
    text: String,
    doc: Option<String>,
    table: Vec<Vec<String>>,
}

#[derive(Debug, Default)]
struct Scenario {
    title: String,
    steps: Vec<Step>,
    /// The `Examples` table of an outline: a header row, then one row per instance.
    examples: Vec<Vec<String>>,
}

pub(super) fn load(dir: &Path) -> Vec<Vector> {
    super::files(dir, "feature")
        .iter()
        .flat_map(|path| {
            let short = super::short_name(path);
            let (feature, scenarios) = parse(&super::read(path));
            scenarios
                .into_iter()
                .flat_map(expand)
                .map(|s| {
                    to_vector(&s, &format!("{short}: {}", s.title), &feature)
                        .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), s.title))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The feature's title and its scenarios.
fn parse(text: &str) -> (String, Vec<Scenario>) {
    let mut feature = String::new();
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut in_examples = false;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(title) = trimmed.strip_prefix("Feature:") {
            feature = title.trim().to_owned();
        } else if let Some(title) = trimmed
            .strip_prefix("Scenario Outline:")
            .or_else(|| trimmed.strip_prefix("Scenario:"))
        {
            scenarios.push(Scenario {
                title: title.trim().to_owned(),
                ..Scenario::default()
            });
            in_examples = false;
        } else if trimmed.starts_with("Background:") {
            in_examples = false;
        } else if trimmed == "Examples:" {
            in_examples = true;
        } else if trimmed == "\"\"\"" {
            // Gherkin strips the doc string's own indentation: that of its opening quotes.
            let indent = line.len() - line.trim_start().len();
            let mut doc = Vec::new();
            for l in lines.by_ref() {
                if l.trim() == "\"\"\"" {
                    break;
                }
                let strip = l.len() - l.trim_start().len();
                doc.push(&l[strip.min(indent)..]);
            }
            if let Some(step) = scenarios.last_mut().and_then(|s| s.steps.last_mut()) {
                step.doc = Some(doc.join("\n"));
            }
        } else if trimmed.starts_with('|') {
            let row: Vec<String> = trimmed
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            if let Some(s) = scenarios.last_mut() {
                if in_examples {
                    s.examples.push(row);
                } else if let Some(step) = s.steps.last_mut() {
                    step.table.push(row);
                }
            }
        } else if let Some(step) = ["Given ", "When ", "Then ", "And ", "But "]
            .iter()
            .find_map(|k| trimmed.strip_prefix(k))
        {
            if let Some(s) = scenarios.last_mut() {
                s.steps.push(Step {
                    text: step.trim().to_owned(),
                    ..Step::default()
                });
            }
        }
    }
    (feature, scenarios)
}

/// A plain scenario, or one scenario per `Examples` row with `<name>` placeholders replaced.
fn expand(s: Scenario) -> Vec<Scenario> {
    let Some((header, rows)) = s.examples.split_first() else {
        return vec![s];
    };
    rows.iter()
        .map(|row| {
            let fill = |text: &str| {
                header
                    .iter()
                    .zip(row)
                    .fold(text.to_owned(), |t, (k, v)| t.replace(&format!("<{k}>"), v))
            };
            Scenario {
                title: fill(&s.title),
                steps: s
                    .steps
                    .iter()
                    .map(|step| Step {
                        text: fill(&step.text),
                        doc: step.doc.as_deref().map(fill),
                        table: step
                            .table
                            .iter()
                            .map(|r| r.iter().map(|c| fill(c)).collect())
                            .collect(),
                    })
                    .collect(),
                examples: Vec::new(),
            }
        })
        .collect()
}

fn to_vector(s: &Scenario, name: &str, feature: &str) -> Result<Vector, String> {
    let mut transport = None;
    let mut message = Message::default();
    let mut event = Map::new();
    for step in &s.steps {
        let doc = || {
            step.doc
                .clone()
                .ok_or(format!("step {:?} has no doc string", step.text))
        };
        match step.text.as_str() {
            "an HTTP request" => {
                transport = Some(Transport::Http);
                message = http_request(&doc()?)?;
            }
            "a Kafka message with payload:" => {
                transport = Some(Transport::Kafka);
                message.body = doc()?.into_bytes();
            }
            "Kafka headers:" => message.headers.extend(key_values(&step.table)?),
            "the attributes are:" => {
                for (k, v) in key_values(&step.table)? {
                    event.insert(k, Value::String(v));
                }
            }
            "the data is equal to the following JSON:" => {
                let data = serde_json::from_str(&doc()?).map_err(|e| format!("data: {e}"))?;
                event.insert("data".to_owned(), data);
            }
            "parsed as HTTP request" | "parsed as Kafka message" => {}
            other => return Err(format!("unknown step {other:?}")),
        }
    }
    Ok(Vector {
        name: name.to_owned(),
        clause: format!("upstream conformance: {feature}"),
        transport: transport.ok_or("no message step")?,
        message,
        expect: Expect::Valid(event),
    })
}

/// A `| key | value |` table (its first row is the header).
fn key_values(table: &[Vec<String>]) -> Result<Vec<(String, String)>, String> {
    table
        .iter()
        .skip(1)
        .map(|row| match row.as_slice() {
            [k, v] => Ok((k.clone(), v.clone())),
            _ => Err(format!("not a key/value row: {row:?}")),
        })
        .collect()
}

/// An HTTP/1.1 request as text: request line, headers, a blank line, the body.
fn http_request(text: &str) -> Result<Message, String> {
    let mut lines = text.split('\n');
    lines.next().ok_or("no request line")?;
    let mut headers = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or(format!("not a header: {line:?}"))?;
        let k = k.trim();
        if !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length") {
            headers.push((k.to_owned(), v.trim().to_owned()));
        }
    }
    let body = lines.collect::<Vec<_>>().join("\n").into_bytes();
    Ok(Message { headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outline_is_one_scenario_per_examples_row() {
        let text = "Feature: F\n  Scenario Outline: S (<x>)\n    Given an HTTP request\n      \"\"\"\n      POST / HTTP/1.1\n      Content-Type: <x>\n      Content-Length: 3\n\n      {\n        \"a\": 1\n      }\n      \"\"\"\n    Then the attributes are:\n      | key | value |\n      | datacontenttype | <x> |\n    Examples:\n    | x |\n    | a/b |\n    | c/d |\n";
        let (feature, scenarios) = parse(text);
        let all: Vec<Scenario> = scenarios.into_iter().flat_map(expand).collect();
        assert_eq!(all.len(), 2);
        let v = to_vector(&all[1], "n", &feature).unwrap();
        assert_eq!(
            v.message.headers,
            [("Content-Type".to_owned(), "c/d".to_owned())]
        );
        assert_eq!(v.message.body, b"{\n  \"a\": 1\n}");
        let Expect::Valid(event) = v.expect else {
            panic!("valid")
        };
        assert_eq!(event["datacontenttype"], "c/d");
    }
}
