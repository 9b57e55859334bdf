//! YAML text → config types, with file, line:column, field path and a hint on failure.

use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::flow::FlowConfig;
use crate::link::LinkConfig;

/// Parses a flow file.
pub fn parse_flow(file: &str, text: &str) -> Result<FlowConfig, Diagnostics> {
    parse(file, text)
}

/// Parses a link config file.
pub fn parse_link(file: &str, text: &str) -> Result<LinkConfig, Diagnostics> {
    parse(file, text)
}

/// Parses any config type with `deny_unknown_fields` semantics and located errors.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostics> {
    if text.trim().is_empty() {
        let mut d =
            Diagnostic::error("", "file is empty").hint("see `fiso init` for a complete example");
        d.file = Some(file.to_owned());
        return Err(Diagnostics(vec![d]));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = clean_path(&err.path().to_string());
        let inner = err.into_inner();
        let location = inner.location();
        let message = strip_path_prefix(&strip_location(&inner.to_string()), &path);
        let mut d = Diagnostic::error(path.clone(), message.clone());
        if let Some(hint) = hint_for(&path, &message) {
            d = d.hint(hint);
        }
        d.file = Some(file.to_owned());
        d.line = location.as_ref().map(|l| l.line());
        d.column = location.as_ref().map(|l| l.column());
        Diagnostics(vec![d])
    })
}

/// serde_path_to_error renders the root as `.`; and `?` for untracked segments.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.replace(".?", "").trim_start_matches('?').to_owned()
    }
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
        let best = candidates
            .iter()
            .map(|c| {
                (
                    strsim::jaro_winkler(&field.to_lowercase(), &c.to_lowercase()),
                    c,
                )
            })
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        return Some(match best {
            Some((_, c)) => format!("did you mean `{c}`?"),
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
    if message.contains("invalid type") {
        return Some(
            "check the value's type against `fiso validate --help` / the config reference".into(),
        );
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
        assert!(d.message.contains("invalid type"), "{d}");
        let d = err("name: a\nsource:\n  type: http\n  config: {}\n");
        assert!(d.message.contains("missing field `listenAddr`"), "{d}");
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
    fn unknown_source_type() {
        let d = err(&format!(
            "name: a\nsource:\n  type: amqp\n  config: {{}}\n{SINK}"
        ));
        assert_eq!(d.path, "source.type");
        assert!(d.message.contains("unknown variant `amqp`"), "{d}");
    }
}
