//! Config-time checks of CEL expressions: they must compile and only use the scope's variables.
//!
//! The runtime (`fiso-flow`) compiles the same expressions again and relies on these rules
//! (notably [`literal_fallback`]) so `fiso validate` and a running flow never disagree.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Variables every flow expression can use (DESIGN.md, "CEL scope").
pub const SCOPE_VARIABLES: [&str; 6] = ["data", "id", "source", "type", "subject", "time"];

/// Macros that bind their own variables (`data.items.map(i, i.price)`).
const BINDING_MACROS: [&str; 5] = [".map(", ".filter(", ".all(", ".exists(", ".exists_one("];

/// Why an expression is unusable, with a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelProblem {
    pub message: String,
    pub hint: Option<String>,
}

/// Compiles `expr` (panics inside the parser are turned into errors: config must never crash us).
pub fn compile(expr: &str) -> Result<cel::Program, String> {
    match catch_unwind(AssertUnwindSafe(|| cel::Program::compile(expr))) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string().trim().to_owned()),
        Err(_) => Err("the CEL parser could not handle this expression".to_owned()),
    }
}

/// Checks that `expr` compiles and references only [`SCOPE_VARIABLES`].
pub fn check(expr: &str) -> Result<(), CelProblem> {
    if let Some(path) = jsonpath(expr) {
        return Err(CelProblem {
            message: format!("`{expr}` is JSONPath, which v0.8 replaced with CEL"),
            hint: Some(format!("write `data.{path}` instead")),
        });
    }
    let program = compile(expr).map_err(|e| CelProblem {
        message: format!("invalid CEL expression `{expr}`: {e}"),
        hint: Some(
            "string literals must be quoted inside the YAML value, e.g. '\"pending\"'".into(),
        ),
    })?;
    if BINDING_MACROS.iter().any(|m| expr.contains(m)) {
        return Ok(());
    }
    let refs = program.references();
    let mut unknown: Vec<&str> = refs
        .variables()
        .into_iter()
        .filter(|v| !SCOPE_VARIABLES.contains(v))
        .collect();
    unknown.sort_unstable();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(CelProblem {
            message: format!(
                "`{expr}` uses unknown variable{} {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
            ),
            hint: Some(format!(
                "available variables: {}; payload fields are under `data` (e.g. `data.{}`); quote string literals",
                SCOPE_VARIABLES.join(", "),
                unknown[0]
            )),
        })
    }
}

/// CEL's reserved words and literals: never part of an identifier-like literal.
const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The compatibility rule for `cloudevents.*` values: `Some(literal)` when `expr` is a bare
/// identifier-like word (identifiers joined by `.` or `-`, like `order.created` or
/// `order-service`) none of whose root identifiers is a scope variable. Such a value would fail
/// on every event as CEL, so it is read as the string it spells; the validator warns that it
/// should be quoted (`'"order.created"'`). The runtime uses this same function.
pub fn literal_fallback(expr: &str) -> Option<&str> {
    let text = expr.trim();
    for part in text.split('-') {
        let mut segments = part.split('.');
        let root = segments.next()?;
        if !is_word(root) || SCOPE_VARIABLES.contains(&root) || !segments.all(is_word) {
            return None;
        }
    }
    Some(text)
}

fn is_word(segment: &str) -> bool {
    let mut bytes = segment.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !RESERVED.contains(&segment)
}

fn jsonpath(expr: &str) -> Option<&str> {
    expr.trim().strip_prefix("$.").or_else(|| {
        expr.trim()
            .strip_prefix('$')
            .filter(|r| r.is_empty() || r.starts_with('['))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_scope_expressions() {
        for e in [
            "data.legacy_id",
            "data.price * data.quantity",
            "'\"pending\"'".trim_matches('\''),
            "time",
            r#"data.type == "premium" ? "gold" : "standard""#,
            r#"{"id": data.id, "name": data.name}"#,
            "[data.tag1, data.tag2]",
            "has(data.x) ? data.x : 0",
            "data.items.map(i, i.price)",
        ] {
            assert_eq!(check(e), Ok(()), "{e}");
        }
    }

    #[test]
    fn rejects_unknown_variables_and_syntax() {
        let p = check("legacy_id").unwrap_err();
        assert!(p.message.contains("unknown variable `legacy_id`"), "{p:?}");
        assert!(p.hint.unwrap().contains("data.legacy_id"));
        assert!(check("data.a +")
            .unwrap_err()
            .message
            .contains("invalid CEL"));
        let p = check("$.legacy_id").unwrap_err();
        assert!(p.message.contains("JSONPath"));
        assert_eq!(p.hint.as_deref(), Some("write `data.legacy_id` instead"));
    }

    #[test]
    fn literal_fallback_only_for_bare_unresolved_identifiers() {
        assert_eq!(literal_fallback("order.created"), Some("order.created"));
        assert_eq!(literal_fallback("order-service"), Some("order-service"));
        assert_eq!(
            literal_fallback("payment.processed"),
            Some("payment.processed")
        );
        assert_eq!(literal_fallback("data.type"), None);
        assert_eq!(literal_fallback("data"), None);
        assert_eq!(literal_fallback("\"x\""), None);
        assert_eq!(literal_fallback("$.legacy_id"), None);
        assert_eq!(literal_fallback("true"), None);
    }
}
