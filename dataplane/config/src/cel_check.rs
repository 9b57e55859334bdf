//! Config-time checks of CEL expressions: they must compile and only use the scope's variables.
//!
//! The runtime (`fiso-flow`) compiles the same expressions again and relies on these rules
//! (notably [`literal_fallback`]) so `fiso validate` and a running flow never disagree.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Variables every flow expression can use (DESIGN.md, "CEL scope").
pub const SCOPE_VARIABLES: [&str; 6] = ["data", "id", "source", "type", "subject", "time"];

/// Namespaces of qualified functions (`math.ceil(x)`, `base64.encode(b)`), which are not
/// variables: the runtime registers them (`strings` and `math` extensions, `base64`,
/// `optional`).
pub const FUNCTION_NAMESPACES: [&str; 4] = ["math", "strings", "base64", "optional"];

/// Identifiers that name types (`type(x) == int`), not variables.
pub const TYPE_NAMES: [&str; 13] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "optional_type",
    "google",
];

/// Macros that bind their own variables (`data.items.map(i, i.price)`).
const BINDING_MACROS: [&str; 5] = [".map(", ".filter(", ".all(", ".exists(", ".exists_one("];

/// Why an expression is unusable, with a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelProblem {
    pub message: String,
    pub hint: Option<String>,
}

/// Longest expression accepted, in bytes. Real mappings are a few hundred bytes; the bound keeps
/// parse time and memory small, and stays below the parser's 65,535-column position limit (a
/// syntax error beyond it panics inside the `cel` parser).
pub const MAX_EXPRESSION_BYTES: usize = 32 * 1024;

/// Deepest expression tree accepted (after macro expansion): `data.a.b` is 3 deep, each
/// operand of a `+` chain one more. The interpreter recurses once per level, so this bound is
/// what lets an evaluation fit the [`EVAL_STACK_SIZE`] stack (a test evaluates an expression
/// at the bound on such a stack).
pub const MAX_EXPRESSION_DEPTH: usize = 128;

/// Stack of every thread that evaluates CEL: the data plane's runtime threads, and the thread
/// `fiso transform test` and `fiso validate` evaluate on, so an expression that runs there runs
/// in a flow. Measured: an expression at [`MAX_EXPRESSION_DEPTH`] (`+`, `-`, method and index
/// chains alike) needs about 6 MiB in a debug build, far less in release; only the pages used
/// are committed.
pub const EVAL_STACK_SIZE: usize = 16 * 1024 * 1024;

/// Runs `f` on a thread with the [`EVAL_STACK_SIZE`] stack: how the CLI evaluates CEL (and
/// folds constants while compiling) on the stack a flow would, whatever the main thread's is.
pub fn on_eval_stack<R: Send>(f: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("cel-eval".to_owned())
            .stack_size(EVAL_STACK_SIZE)
            .spawn_scoped(scope, f)?;
        Ok(thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// Stack of the thread a parse runs on. The parser and its parse tree recurse once per level
/// before the depth is known: the deepest tree [`MAX_EXPRESSION_BYTES`] can spell must fit.
const PARSE_STACK_SIZE: usize = 256 * 1024 * 1024;

/// Parses `source` with `parse` within the bounds above, on a thread with a stack large enough
/// for any expression of [`MAX_EXPRESSION_BYTES`]: too long, too deep, or a parser panic is an
/// error, never a crash. `parse` reports syntax errors in its own words; `tree` gives the
/// expression of what it parsed, whose depth is checked (and which is dropped on the parse
/// thread when too deep: dropping is recursive too).
pub fn parse_bounded<T: Send>(
    source: &str,
    parse: impl FnOnce(&str) -> Result<T, String> + Send,
    tree: impl Fn(&T) -> &cel::IdedExpr + Send,
) -> Result<T, ParseFailure> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(ParseFailure::Bound(format!(
            "the expression is {} bytes long; the limit is {MAX_EXPRESSION_BYTES} bytes",
            source.len()
        )));
    }
    let parser_failed = || ParseFailure::Bound("the CEL parser could not handle it".to_owned());
    let on_parse_thread = move || {
        let parsed = catch_unwind(AssertUnwindSafe(|| parse(source)))
            .map_err(|_| parser_failed())?
            .map_err(ParseFailure::Syntax)?;
        let depth = depth(tree(&parsed));
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(ParseFailure::Bound(format!(
                "the expression nests {depth} levels deep; the limit is {MAX_EXPRESSION_DEPTH}"
            )));
        }
        Ok(parsed)
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel-parse".to_owned())
            .stack_size(PARSE_STACK_SIZE)
            .spawn_scoped(scope, on_parse_thread)
            .map_err(|e| ParseFailure::Bound(format!("cannot start a thread to parse it: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(parser_failed()))
    })
}

/// The parser's errors, each with its position and in words rather than the grammar's token
/// list, without quoting the source (which may be long); at most the first three.
pub fn describe_syntax(errors: cel::ParseErrors) -> String {
    let messages: Vec<String> = errors
        .errors
        .iter()
        .take(3)
        .map(|e| {
            let (line, column) = e.pos;
            let msg = explain_syntax(&e.msg);
            if line > 1 {
                format!("invalid CEL at line {line}, column {column}: {msg}")
            } else {
                format!("invalid CEL at column {column}: {msg}")
            }
        })
        .collect();
    if messages.is_empty() {
        "invalid CEL".to_owned()
    } else {
        messages.join("; ")
    }
}

/// One message of the CEL parser (ANTLR's words) as a person would say it: what was found
/// where, and what kind of thing was expected, without the grammar's token names.
fn explain_syntax(msg: &str) -> String {
    let msg = msg.strip_prefix("Syntax error: ").unwrap_or(msg);
    let (head, expecting) = match msg.split_once(" expecting ") {
        Some((head, expected)) => (head, Some(expected)),
        None => (msg, None),
    };
    let quoted = |prefix: &str| {
        head.strip_prefix(prefix)
            .map(|rest| rest.trim_matches('\''))
            .map(str::to_owned)
    };
    let found = quoted("mismatched input ")
        .or_else(|| quoted("extraneous input "))
        .or_else(|| quoted("no viable alternative at input "))
        .or_else(|| quoted("token recognition error at: "));
    let wanted = match expecting {
        Some(set) if set.contains("IDENTIFIER") => Some(
            "a value (a field like data.x, a literal or a parenthesised expression)".to_owned(),
        ),
        Some(set) => {
            let tokens: Vec<&str> = set
                .trim_matches(|c| c == '{' || c == '}')
                .split(", ")
                .filter(|t| t.starts_with('\''))
                .map(|t| t.trim_matches('\''))
                .collect();
            (!tokens.is_empty()).then(|| {
                tokens
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            })
        }
        None => None,
    };
    match (found.as_deref(), wanted) {
        (Some("<EOF>"), Some(wanted)) => {
            format!("the expression ends where {wanted} should follow")
        }
        (Some("<EOF>"), None) => "the expression ends too early".to_owned(),
        (Some(found), Some(wanted)) => format!("unexpected `{found}`; expected {wanted}"),
        (Some(found), None) => format!("unexpected `{found}`"),
        (None, _) => msg.to_owned(),
    }
}

/// Why [`parse_bounded`] refused an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseFailure {
    /// Beyond a bound of every expression (or one the parser cannot handle).
    #[error("{0}")]
    Bound(String),
    /// Not valid CEL, in the words of the parse function.
    #[error("{0}")]
    Syntax(String),
}

/// Depth of an expression tree, without recursion (it may be far deeper than the bound).
pub fn depth(root: &cel::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr};
    let mut deepest = 0;
    let mut pending = vec![(root, 1)];
    while let Some((node, level)) = pending.pop() {
        deepest = deepest.max(level);
        let below = level + 1;
        match &node.expr {
            Expr::Call(call) => {
                pending.extend(call.target.as_deref().map(|t| (t, below)));
                pending.extend(call.args.iter().map(|a| (a, below)));
            }
            Expr::Select(select) => pending.push((&select.operand, below)),
            Expr::List(list) => pending.extend(list.elements.iter().map(|e| (e, below))),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        pending.extend([(&e.key, below), (&e.value, below)]);
                    }
                }
            }
            Expr::Struct(strct) => {
                for entry in &strct.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => pending.push((&f.value, below)),
                        EntryExpr::MapEntry(e) => {
                            pending.extend([(&e.key, below), (&e.value, below)])
                        }
                    }
                }
            }
            Expr::Comprehension(c) => pending.extend(
                [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]
                .map(|e| (e, below)),
            ),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    deepest
}

/// Compiles `expr` within the bounds of [`parse_bounded`] (config must never crash us).
pub fn compile(expr: &str) -> Result<cel::Program, ParseFailure> {
    parse_bounded(
        expr,
        |source| cel::Program::compile(source).map_err(describe_syntax),
        cel::Program::expression,
    )
}

/// Checks that `expr` compiles and references only [`SCOPE_VARIABLES`].
pub fn check(expr: &str) -> Result<(), CelProblem> {
    if let Some(path) = jsonpath(expr) {
        return Err(CelProblem {
            message: format!("`{expr}` is JSONPath, which v0.8 replaced with CEL"),
            hint: Some(format!("write `data.{path}` instead")),
        });
    }
    let program = compile(expr).map_err(|e| match e {
        ParseFailure::Bound(message) => CelProblem {
            message,
            hint: Some("split it into several fields, or simplify it".into()),
        },
        ParseFailure::Syntax(e) => CelProblem {
            message: format!("invalid CEL expression `{}`: {e}", excerpt(expr)),
            hint: Some(syntax_hint(expr).into()),
        },
    })?;
    if BINDING_MACROS.iter().any(|m| expr.contains(m)) {
        return Ok(());
    }
    let refs = program.references();
    let mut unknown: Vec<&str> = refs
        .variables()
        .into_iter()
        .filter(|v| !SCOPE_VARIABLES.contains(v) && !TYPE_NAMES.contains(v))
        .filter(|v| !(FUNCTION_NAMESPACES.contains(v) && expr.contains(&format!("{v}."))))
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

/// What `expr` evidently gives when that is not a string: a number, bool or bytes literal, an
/// arithmetic, comparison or logical operator, or a conversion to a non-string type. `None`
/// when it may well be a string (a field read, a concatenation, a ternary, a call) or does not
/// compile. A CloudEvent string attribute gets the string form of such a value, as upstream.
pub fn evident_non_string(expr: &str) -> Option<&'static str> {
    use cel::common::ast::{operators, Expr, LiteralValue};
    let program = compile(expr).ok()?;
    match &program.expression().expr {
        Expr::Literal(LiteralValue::Int(_)) => Some("int"),
        Expr::Literal(LiteralValue::UInt(_)) => Some("uint"),
        Expr::Literal(LiteralValue::Double(_)) => Some("double"),
        Expr::Literal(LiteralValue::Boolean(_)) => Some("bool"),
        Expr::Literal(LiteralValue::Bytes(_)) => Some("bytes"),
        Expr::List(_) => Some("list"),
        Expr::Map(_) => Some("map"),
        Expr::Call(call) => match call.func_name.as_str() {
            operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE => Some("number"),
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::IN
            | operators::HAS => Some("bool"),
            "size" | "int" => Some("int"),
            "uint" => Some("uint"),
            "double" => Some("double"),
            "bool" => Some("bool"),
            "timestamp" => Some("timestamp"),
            "duration" => Some("duration"),
            _ => None,
        },
        _ => None,
    }
}

/// The likely fix for an expression that does not parse: quoting, when it reads like text
/// written bare (words separated by spaces, or characters CEL has no use for); else where the
/// syntax is described.
fn syntax_hint(expr: &str) -> &'static str {
    let text_like = expr.split_whitespace().count() > 1
        && expr.split_whitespace().all(|w| {
            w.chars()
                .all(|c| c.is_alphanumeric() || "_.,:;'!?".contains(c))
        })
        || expr.contains(['#', '@', '$', '`']);
    if text_like {
        "a string literal must be quoted inside the YAML value, e.g. '\"pending review\"'"
    } else {
        "CEL syntax: operators + - * / % == != < <= > >= && || ! ?:, fields data.x or data[\"x-y\"], calls size(data.items); see the README's \"Transforms and CloudEvents\""
    }
}

/// `expr`, cut to what a message can quote.
fn excerpt(expr: &str) -> String {
    const SHOWN: usize = 80;
    match expr.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &expr[..end]),
        None => expr.to_owned(),
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
/// identifier-like word (identifiers joined by `.` or `-`, like `order.created`,
/// `order-service` or `custom-subject`) with at least one root identifier that is not a scope
/// variable. As CEL such a value reads an unknown variable and would fail on every event, so it
/// is read as the string it spells, as upstream did; the validator warns that it should be
/// quoted (`'"order.created"'`). The runtime uses this same function.
pub fn literal_fallback(expr: &str) -> Option<&str> {
    let text = expr.trim();
    let mut unknown_root = false;
    for part in text.split('-') {
        let mut segments = part.split('.');
        let root = segments.next()?;
        if !is_word(root) || !segments.all(is_word) {
            return None;
        }
        unknown_root |= !SCOPE_VARIABLES.contains(&root);
    }
    unknown_root.then_some(text)
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
    fn syntax_errors_are_said_in_words() {
        let p = check("data.price *").unwrap_err();
        assert_eq!(
            p.message,
            "invalid CEL expression `data.price *`: invalid CEL at column 13: the expression ends where a value (a field like data.x, a literal or a parenthesised expression) should follow"
        );
        assert!(p.hint.unwrap().starts_with("CEL syntax"));
        let p = check("data.a == )").unwrap_err();
        assert!(p.message.ends_with("unexpected `)`; expected a value (a field like data.x, a literal or a parenthesised expression)"), "{}", p.message);
        for e in [
            "data.price *",
            "data.a ++ 1",
            "data.a == )",
            "(data.a",
            "pending review",
        ] {
            let p = check(e).unwrap_err();
            assert!(
                !p.message.contains("NUM_FLOAT") && !p.message.contains("IDENTIFIER"),
                "{}",
                p.message
            );
        }
        let p = check("pending review").unwrap_err();
        assert!(
            p.hint.unwrap().contains("quoted"),
            "text written bare gets the quoting hint"
        );
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
        // Hyphenated words whose parts include scope variables, as upstream files write them.
        assert_eq!(literal_fallback("custom-subject"), Some("custom-subject"));
        assert_eq!(literal_fallback("new-source"), Some("new-source"));
        assert_eq!(literal_fallback("subject-source"), None);
        assert_eq!(literal_fallback("data - 1"), None);
    }

    #[test]
    fn extension_namespaces_and_type_names_are_not_variables() {
        for e in [
            "math.greatest(data.a, data.b)",
            "base64.encode(bytes(data.s))",
            "strings.quote(data.s)",
            "type(data.n) == int",
            "data.name.upperAscii()",
        ] {
            assert_eq!(check(e), Ok(()), "{e}");
        }
        // A namespace alone is still an unknown variable.
        assert!(check("math + 1").is_err());
    }
}
