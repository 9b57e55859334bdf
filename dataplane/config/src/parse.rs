//! YAML text → config types, with file, line:column, field path and a hint on every finding.
//!
//! A file with mistakes is read to its end all the same: every unknown field, wrong type,
//! unknown variant and missing field is reported where it stands ([`recover`]); a value YAML
//! cannot read as written (`priority: data.urgent ? 1 : 2`) is reported and read quoted
//! ([`quote`]); and what remains is still a config the semantic checks can run on.

mod quote;
mod recover;

use std::cell::OnceCell;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, Diagnostics, MAX_PER_FILE, MORE_NOT_LISTED};
use crate::flow::FlowConfig;
use crate::link::LinkConfig;
use crate::location::Locations;
use crate::reference;
use recover::{render, Finding, Problem, Seg};

/// A file read: the config, every finding, and which values were set aside to read it.
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    /// The config, each part a finding is about set aside (removed, or replaced by a neutral
    /// value where its type needs one); `None` when no config could be read from the file.
    pub config: Option<T>,
    /// What reading found, located and sorted; at most [`MAX_PER_FILE`] and a note.
    pub diagnostics: Diagnostics,
    file: String,
    locations: Locations,
    set_aside: Vec<String>,
}

impl<T> Parsed<T> {
    /// `file` before anything of it is read: no config, no findings.
    fn nothing_read(file: &str) -> Self {
        Parsed {
            config: None,
            diagnostics: Diagnostics::default(),
            file: file.to_owned(),
            locations: Locations::default(),
            set_aside: Vec::new(),
        }
    }

    /// The file, as named to [`parse_file`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Read without a finding.
    pub fn is_clean(&self) -> bool {
        self.config.is_some() && self.diagnostics.is_empty()
    }

    /// A semantic finding about this file, with file and line:column; `None` when it is about
    /// a value that was set aside (not what the file says: the finding about it is made).
    pub fn locate(&self, mut d: Diagnostic) -> Option<Diagnostic> {
        if self.set_aside.iter().any(|p| is_under(&d.path, p)) {
            return None;
        }
        d.file = Some(self.file.clone());
        if let Some((line, column)) = self.locations.lookup(&d.path) {
            d.line = Some(line);
            d.column = Some(column);
        }
        Some(d)
    }

    /// Whether a value at, above or under `path` was set aside: checks that read `path` would
    /// read a stand-in.
    pub fn set_aside_near(&self, path: &str) -> bool {
        self.set_aside
            .iter()
            .any(|p| is_under(p, path) || is_under(path, p))
    }

    /// The config, or every finding.
    pub fn into_result(self) -> Result<T, Diagnostics> {
        match self.config {
            Some(config) if self.diagnostics.is_empty() => Ok(config),
            _ => Err(self.diagnostics),
        }
    }

    fn push(&mut self, mut d: Diagnostic, at: Option<(usize, usize)>) {
        d.file = Some(self.file.clone());
        d.line = at.map(|(line, _)| line);
        d.column = at.map(|(_, column)| column);
        self.diagnostics.push(d);
    }
}

/// `path` is `prefix` or lies under it.
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| prefix.is_empty() || rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Parses a flow file.
pub fn parse_flow(file: &str, text: &str) -> Result<FlowConfig, Diagnostics> {
    parse(file, text)
}

/// Parses a link config file.
pub fn parse_link(file: &str, text: &str) -> Result<LinkConfig, Diagnostics> {
    parse(file, text)
}

/// Parses any config type with `deny_unknown_fields` semantics: the config, or every finding.
pub fn parse<T: DeserializeOwned + JsonSchema>(file: &str, text: &str) -> Result<T, Diagnostics> {
    parse_file(file, text).into_result()
}

/// Reads a config given as a JSON value, such as a custom resource's spec as the API server
/// sends it, exactly as [`parse_file`] reads a file (named `file`); line:column are those of the
/// value written as YAML.
pub fn parse_value<T: DeserializeOwned + JsonSchema>(
    file: &str,
    value: &serde_json::Value,
) -> Parsed<T> {
    match crate::crd::yaml_text(value.clone()) {
        Ok(text) => parse_file(file, &text),
        Err(e) => {
            let mut parsed = Parsed::nothing_read(file);
            parsed.push(Diagnostic::error("", e.to_string()), None);
            parsed
        }
    }
}

/// Reads a config file, reporting every mistake in it at once, each at its own line:column
/// (an unknown key at the key, anything else at the value).
pub fn parse_file<T: DeserializeOwned + JsonSchema>(file: &str, text: &str) -> Parsed<T> {
    let mut parsed = Parsed::nothing_read(file);
    if text.trim().is_empty() {
        let empty =
            Diagnostic::error("", "file is empty").hint("see `fiso init` for a complete example");
        parsed.push(empty, None);
        return parsed;
    }
    let first = match recover::deserialize::<T>(text) {
        Ok(config) => {
            parsed.locations = Locations::index(text);
            parsed.config = Some(config);
            return parsed;
        }
        Err(err) => err,
    };
    let (text, unquoted, tree) = quote::read(text, MAX_PER_FILE);
    parsed.locations = Locations::index(&text);
    for u in &unquoted {
        let path = parsed
            .locations
            .path_at(u.line, u.column)
            .unwrap_or_default()
            .to_owned();
        let d = Diagnostic::error(
            path,
            format!(
                "`{}` is not one YAML value as written: {}",
                u.value, u.problem
            ),
        )
        .hint(format!(
            "quote it: {}: {}",
            u.key,
            quote::single_quoted(&u.value)
        ));
        parsed.push(d, Some((u.line, u.column)));
    }
    let tree = match tree {
        Ok(tree) => tree,
        Err(err) => {
            let d = syntax_error(&text, &err);
            let at = err.location().map(|l| (l.line(), l.column()));
            parsed.push(d, at);
            parsed.diagnostics.sort();
            return parsed;
        }
    };
    let outcome = recover::read::<T>(tree, MAX_PER_FILE - unquoted.len(), |parent, message| {
        let field = between(message, "unknown field `", "`")?;
        meant_field(&render(parent), field, message).map(str::to_owned)
    });
    let schema = OnceCell::new();
    for finding in &outcome.findings {
        let (d, at) = describe(finding, &parsed.locations, &text, || {
            schema.get_or_init(reference::schema::<T>)
        });
        parsed.push(d, at);
    }
    if outcome.truncated {
        parsed.push(Diagnostic::error("", MORE_NOT_LISTED), None);
    }
    if parsed.diagnostics.is_empty() {
        // The file does not read, yet nothing in its tree is wrong (something only its text
        // has, such as a limit on aliases): say what reading it said.
        let path = clean_path(&first.path().to_string());
        let at = first.inner().location().map(|l| (l.line(), l.column()));
        let message = clean_message(&first.inner().to_string(), &first.path().to_string());
        parsed.push(Diagnostic::error(path, message), at);
        return parsed;
    }
    parsed.set_aside = outcome.set_aside.iter().map(|p| render(p)).collect();
    parsed.config = outcome.config;
    parsed.diagnostics.sort();
    parsed.diagnostics.bound_per_file();
    parsed
}

/// A syntax error: where in the document it is, in YAML's words.
fn syntax_error(text: &str, err: &serde_yaml_ng::Error) -> Diagnostic {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let path = serde_path_to_error::deserialize::<_, serde_yaml_ng::Value>(de)
        .err()
        .map(|e| clean_path(&e.path().to_string()))
        .unwrap_or_default();
    Diagnostic::error(path, strip_location(&err.to_string()))
}

/// The diagnostic of a finding, and where it points: an unknown key or a missing field at a
/// key (the mapping that lacks it), anything else at the value.
fn describe<'s>(
    finding: &Finding,
    locations: &Locations,
    text: &str,
    schema: impl FnOnce() -> &'s serde_json::Value,
) -> (Diagnostic, Option<(usize, usize)>) {
    let path = render(&finding.path);
    let message = &finding.message;
    let (at, hint) = match &finding.problem {
        Problem::UnknownField | Problem::MissingField(_) | Problem::UnknownVariant => {
            let at = if finding.problem == Problem::UnknownVariant {
                locations.lookup(&path)
            } else {
                locations.key(&path)
            };
            (at, hint_for(&path, message))
        }
        Problem::BadValue => {
            let at = locations.lookup(&path);
            let written = locations
                .value(&path)
                .and_then(|(line, column)| one_line_value(text, line, column));
            (
                at,
                Some(value_hint(&finding.path, message, written, schema)),
            )
        }
    };
    let mut d = Diagnostic::error(path, message.clone());
    d.hint = hint;
    (d, at)
}

/// The value written at `line`:`column` when it ends on that line (without a comment).
fn one_line_value(text: &str, line: usize, column: usize) -> Option<&str> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let from = l.char_indices().nth(column.checked_sub(1)?)?.0;
    let rest = &l[from..];
    let value = match rest.find(" #") {
        Some(i) => &rest[..i],
        None => rest,
    }
    .trim_end();
    let balanced =
        |open: char, close: char| value.matches(open).count() == value.matches(close).count();
    (!value.is_empty() && balanced('{', '}') && balanced('[', ']')).then_some(value)
}

/// Fields whose values are CEL expressions (DESIGN.md, "CEL scope"): one string each.
fn is_cel_field(path: &[Seg]) -> bool {
    let key = |i: usize| match path.get(i) {
        Some(Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    match (key(0), key(1), key(2)) {
        (Some("transform"), Some("fields"), Some(_)) => path.len() == 3,
        (Some("cloudevents"), Some(_), None) => true,
        (Some("sink"), Some("config"), Some("key")) => path.len() == 3,
        (Some("sink"), Some("config"), Some("params")) => path.len() == 5 && key(4) == Some("expr"),
        _ => false,
    }
}

/// How to write a value of the right type: a CEL expression that YAML read as a list or a
/// mapping is quoted; anything else gets what the reference says of the field.
fn value_hint<'s>(
    path: &[Seg],
    message: &str,
    written: Option<&str>,
    schema: impl FnOnce() -> &'s serde_json::Value,
) -> String {
    let field = match path.last() {
        Some(Seg::Key(k)) => k.clone(),
        _ => render(path),
    };
    let structured =
        message.starts_with("invalid type: map") || message.starts_with("invalid type: sequence");
    if is_cel_field(path) && structured {
        return match written {
            Some(text) => format!("quote it: {field}: {}", quote::single_quoted(text)),
            None => "a CEL expression is one string: write it on one line, in quotes".into(),
        };
    }
    let reference = "the README's “Configuration reference” lists every field and its type";
    let steps = path.iter().map(|s| match s {
        Seg::Key(k) => Some(k.as_str()),
        Seg::Index(_) => None,
    });
    let Some(doc) = reference::describe(schema(), steps).filter(|d| d.ty != "any") else {
        return format!("{reference}, for `{}`", render(path));
    };
    // Union fields start with the variants they belong to (`[http, grpc] ...`).
    let description = match doc.description.strip_prefix('[') {
        Some(tagged) => tagged.split_once(']').map_or("", |(_, rest)| rest.trim()),
        None => doc.description.as_str(),
    };
    let sentence = description
        .split_once(". ")
        .map_or(description, |(first, _)| first)
        .trim_end_matches('.');
    let what = if sentence.is_empty() || sentence.len() > 120 {
        String::new()
    } else {
        format!(": {sentence}")
    };
    format!(
        "`{field}` takes {}{what}; {reference}",
        with_article(&doc.ty)
    )
}

/// `string` → `a string`, as the type reads in a sentence.
fn with_article(ty: &str) -> String {
    if ty.starts_with('`') {
        return format!("one of {ty}");
    }
    let article = if ty.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {ty}")
}

/// serde_path_to_error renders the root as `.`; and `?` for untracked segments.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.replace(".?", "").trim_start_matches('?').to_owned()
    }
}

/// serde's message without the location and path serde_yaml adds (the diagnostic has both).
fn clean_message(message: &str, path: &str) -> String {
    strip_path_prefix(&strip_location(message), &clean_path(path))
}

/// serde_yaml appends ` at line L column C`, which the diagnostic already carries.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// serde_yaml also prefixes the path of the enclosing map (`source.config: unknown field ..`).
fn strip_path_prefix(msg: &str, path: &str) -> String {
    match msg.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') && path.starts_with(p) => rest.to_owned(),
        _ => msg.to_owned(),
    }
}

/// The field an unknown `field` at `parent` most likely meant, from serde's list of the
/// allowed ones (or the v0.8 rename of `transform.cel` / `transform.mapping`).
fn meant_field<'m>(parent: &str, field: &str, message: &'m str) -> Option<&'m str> {
    if (field == "cel" || field == "mapping") && parent.ends_with("transform") {
        return Some("fields");
    }
    let (_, expected) = message.split_once("expected ")?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|c| {
            (
                strsim::jaro_winkler(&field.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn hint_for(path: &str, message: &str) -> Option<String> {
    if let Some(field) = between(message, "unknown field `", "`") {
        if (field == "cel" || field == "mapping") && path.ends_with(&format!("transform.{field}")) {
            return Some(format!(
                "v0.8 replaced `transform.{field}` with `transform.fields` (one CEL expression per output field; `$.x` becomes `data.x`, string literals are quoted)"
            ));
        }
        if (field == "phase" || field == "maxInputSize") && path.starts_with("interceptors[") {
            return Some(format!(
                "`{field}` applies to a link target's interceptors only; a flow's interceptors run on each event before the sink"
            ));
        }
        // serde lists them as "expected `a`", "expected `a` or `b`" or
        // "expected one of `a`, `b`, `c`": every other piece between backticks is a name.
        let (_, expected) = message.split_once("expected ")?;
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let parent = path
            .strip_suffix(field)
            .unwrap_or(path)
            .trim_end_matches('.');
        return Some(match meant_field(parent, field, message) {
            Some(c) => format!("did you mean `{c}`?"),
            None if candidates.is_empty() => format!("remove `{field}`"),
            None => format!(
                "remove `{field}`; allowed here: `{}`",
                candidates.join("`, `")
            ),
        });
    }
    if let Some(field) = between(message, "missing field `", "`") {
        return Some(format!("add `{field}:` here"));
    }
    if between(message, "unknown variant `", "`").is_some() {
        return Some("use one of the values listed".into());
    }
    None
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> Diagnostic {
        parse_flow("f.yaml", text).unwrap_err().0.remove(0)
    }

    const SINK: &str = "sink:\n  type: http\n  config:\n    url: http://x\n";

    #[test]
    fn unknown_field_has_path_location_and_suggestion() {
        let d = err(&format!(
            "name: a\nsource:\n  type: http\n  config:\n    listenAdr: \":8081\"\n{SINK}"
        ));
        assert_eq!(d.path, "source.config.listenAdr");
        assert_eq!(d.line, Some(5));
        assert!(d.message.contains("unknown field `listenAdr`"), "{d}");
        assert_eq!(d.hint.as_deref(), Some("did you mean `listenAddr`?"));
    }

    #[test]
    fn v07_transform_syntax_gets_migration_hint() {
        let d = err(&format!(
            "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":1\"\ntransform:\n  cel: 'x'\n{SINK}"
        ));
        assert_eq!(d.path, "transform.cel");
        assert!(d.hint.unwrap().contains("transform.fields"));
    }

    #[test]
    fn a_flow_interceptor_has_no_phase() {
        let d = err(&format!(
            "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":1\"\ninterceptors:\n  - type: wasm\n    config: {{module: m.wasm, phase: inbound}}\n{SINK}"
        ));
        assert_eq!(d.path, "interceptors[0].config.phase");
        assert!(
            d.hint
                .as_deref()
                .unwrap()
                .contains("link target's interceptors only"),
            "{d}"
        );
    }

    #[test]
    fn runtime_wazero_is_accepted_with_a_warning() {
        let flow = parse_flow(
            "f.yaml",
            &format!("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":1\"\ninterceptors:\n  - type: wasm\n    config: {{module: m.wasm, runtime: wazero}}\n{SINK}"),
        )
        .unwrap();
        let flow_diags = crate::validate::validate_flow(&flow, crate::validate::Origin::File);
        let link = parse_link(
            "l.yaml",
            "targets:\n  - name: t\n    host: h.example\n    interceptors:\n      - type: wasm\n        config: {module: m.wasm, runtime: wazero, phase: inbound}\n",
        )
        .unwrap();
        let link_diags = crate::validate::validate_link(&link);
        for (diags, path) in [
            (flow_diags, "interceptors[0].config.runtime"),
            (link_diags, "targets[0].interceptors[0].config.runtime"),
        ] {
            assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
            let warning = diags.iter().find(|d| d.path == path).expect("a warning");
            assert!(warning.message.contains("runs on wasmtime"), "{warning}");
        }
    }

    #[test]
    fn wrong_type_and_missing_field() {
        let d = err(&format!(
            "name: a\nsource:\n  type: http\n  config:\n    listenAddr: [1]\n{SINK}"
        ));
        assert_eq!(d.path, "source.config.listenAddr");
        assert_eq!((d.line, d.column), (Some(5), Some(17)), "at the value: {d}");
        assert!(d.message.contains("invalid type"), "{d}");
        let all =
            parse_flow("f.yaml", "name: a\nsource:\n  type: http\n  config: {}\n").unwrap_err();
        let found: Vec<_> = all
            .iter()
            .map(|d| (d.line, d.column, d.path.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (Some(1), Some(1), "", "missing field `sink`"),
                (
                    Some(4),
                    Some(3),
                    "source.config",
                    "missing field `listenAddr`"
                ),
            ]
        );
    }

    /// One file, one run: every kind of mistake, each at its own line:column, in line order.
    #[test]
    fn every_mistake_of_a_file_at_once() {
        let text = "\
name: orders
source:
  config:
    maxBodySize: [1]
    listenAddr: \":8081\"
    readHeaderTimeout: soon
  type: http
transform:
  fields:
    priority: data.urgent ? 1 : 2
    tags: [data.a, data.b]
cloudevents:
  subjct: data.id
interceptors:
  - type: wasmtime
    config: {module: m.wasm}
sink:
  type: http
  config:
    method: POST
";
        let parsed = parse_file::<FlowConfig>("f.yaml", text);
        let found: Vec<String> = parsed
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {} | {}",
                    d.line.unwrap(),
                    d.column.unwrap(),
                    d.path,
                    d.hint.as_deref().unwrap_or_default()
                )
            })
            .collect();
        pretty_assertions::assert_eq!(
            found,
            [
                "4:18 source.config.maxBodySize | `maxBodySize` takes an int or string: Largest accepted request body (default 1MiB); larger requests get 413; the README's “Configuration reference” lists every field and its type",
                "6:24 source.config.readHeaderTimeout | `readHeaderTimeout` takes a string; the README's “Configuration reference” lists every field and its type",
                "10:15 transform.fields.priority | quote it: priority: 'data.urgent ? 1 : 2'",
                "11:11 transform.fields.tags | quote it: tags: '[data.a, data.b]'",
                "13:3 cloudevents.subjct | did you mean `subject`?",
                "15:11 interceptors[0].type | use one of the values listed",
                "19:3 sink.config | add `url:` here",
            ]
        );
        assert!(parsed
            .diagnostics
            .iter()
            .all(|d| d.file.as_deref() == Some("f.yaml")));
        // What is left still reads, for the semantic checks; the values set aside are not
        // theirs to judge.
        let config = parsed.config.as_ref().expect("the rest reads");
        assert_eq!(config.name.as_deref(), Some("orders"));
        assert_eq!(
            config.transform.as_ref().unwrap().fields["priority"],
            "data.urgent ? 1 : 2"
        );
        for aside in [
            "source.config.maxBodySize",
            "interceptors[0].config.module",
            "sink.config.url",
        ] {
            assert!(
                parsed.locate(Diagnostic::error(aside, "x")).is_none(),
                "{aside}"
            );
        }
        let kept = parsed
            .locate(Diagnostic::error("source.config.listenAddr", "x"))
            .expect("not set aside");
        assert_eq!((kept.line, kept.column), (Some(5), Some(17)));
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_replaced_so_the_rest_is_read() {
        // `source: 3` cannot stand in for a source; everything after it is still read.
        let all = parse_flow(
            "f.yaml",
            "name: a\nsource: 3\nsink:\n  type: http\n  config: {url: http://x, retries: 2}\n",
        )
        .unwrap_err();
        let found: Vec<_> = all.iter().map(|d| (d.line, d.path.as_str())).collect();
        assert_eq!(
            found,
            [(Some(2), "source"), (Some(5), "sink.config.retries")],
            "{all}"
        );
    }

    #[test]
    fn findings_per_file_are_bounded() {
        let mut text =
            String::from("name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":1\"\n");
        text.push_str(SINK);
        for i in 0..150 {
            text.push_str(&format!("extra{i}: 1\n"));
        }
        let all = parse_flow("f.yaml", &text).unwrap_err();
        assert_eq!(all.0.len(), MAX_PER_FILE + 1);
        assert!(all.0[..MAX_PER_FILE]
            .iter()
            .all(|d| d.message.starts_with("unknown field `extra")));
        assert_eq!(all.0[MAX_PER_FILE].message, MORE_NOT_LISTED);
        // Exactly at the bound: all of them, no note.
        let at_bound: String = text.split_inclusive('\n').take(9 + MAX_PER_FILE).collect();
        let all = parse_flow("f.yaml", &at_bound).unwrap_err();
        assert_eq!(all.0.len(), MAX_PER_FILE);
        assert!(all.iter().all(|d| d.message != MORE_NOT_LISTED));
    }

    const TEMPORAL: &str = "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":1\"\nsink:\n  type: temporal\n  config:\n    hostPort: t:7233\n    taskQueue: q\n    workflowType: W\n";

    #[test]
    fn unknown_auth_field_lists_the_allowed_ones_in_backticks() {
        let d = err(&format!("{TEMPORAL}    auth:\n      token: x\n"));
        assert_eq!(d.path, "sink.config.auth.token");
        assert_eq!(
            d.hint.as_deref(),
            Some("remove `token`; allowed here: `apiKeyEnv`, `apiKeyFile`, `oidc`")
        );
        let d = err(&format!(
            "{TEMPORAL}    auth:\n      oidc:\n        tokenURL: http://idp/token\n        clientID: c\n        secret: x\n"
        ));
        assert_eq!(d.path, "sink.config.auth.oidc.secret");
        assert_eq!(
            d.hint.as_deref(),
            Some("remove `secret`; allowed here: `tokenURL`, `clientID`, `clientSecretEnv`, `clientSecretFile`, `scopes`")
        );
    }

    #[test]
    fn two_allowed_fields_are_listed_in_backticks() {
        // serde words a two-field list "expected `a` or `b`".
        assert_eq!(
            hint_for(
                "x.y",
                "unknown field `zzz`, expected `apiKeyEnv` or `apiKeyFile`"
            )
            .as_deref(),
            Some("remove `zzz`; allowed here: `apiKeyEnv`, `apiKeyFile`")
        );
        assert_eq!(
            hint_for(
                "x.y",
                "unknown field `apiKeyFle`, expected `apiKeyEnv` or `apiKeyFile`"
            )
            .as_deref(),
            Some("did you mean `apiKeyFile`?")
        );
        assert_eq!(
            hint_for("x.y", "unknown field `zzz`, there are no fields").as_deref(),
            None
        );
    }

    #[test]
    fn a_json_value_reads_like_a_file() {
        // A string that looks like a number stays a string, a number stays a number.
        let value = serde_json::json!({
            "name": "a",
            "source": {"type": "http", "config": {"listenAddr": "8081", "maxBodySize": 1024}},
            "sink": {"type": "http", "config": {"url": "http://x"}},
        });
        let parsed = parse_value::<FlowConfig>("spec", &value);
        assert!(parsed.is_clean(), "{}", parsed.diagnostics);
        let text = "name: a\nsource:\n  type: http\n  config:\n    listenAddr: '8081'\n    maxBodySize: 1024\n{SINK}";
        assert_eq!(
            parsed.config.unwrap(),
            parse_flow("f.yaml", &text.replace("{SINK}", SINK)).unwrap()
        );

        let mut value = value;
        value["source"]["config"]["listenAdr"] = ":1".into();
        let parsed = parse_value::<FlowConfig>("spec", &value);
        let d = &parsed.diagnostics.0[0];
        assert_eq!(d.path, "source.config.listenAdr");
        assert_eq!(d.hint.as_deref(), Some("did you mean `listenAddr`?"));
    }

    #[test]
    fn unknown_source_type() {
        let d = err(&format!(
            "name: a\nsource:\n  type: amqp\n  config: {{}}\n{SINK}"
        ));
        assert_eq!(d.path, "source.type");
        assert!(d.message.contains("unknown variant `amqp`"), "{d}");
    }
}
