//! Values YAML cannot read as written. A CEL expression such as `data.urgent ? 1 : 2` holds
//! `: `, which YAML takes for a nested key; `"order." + data.kind` starts as a quoted string and
//! goes on after it; `@`, `` ` `` and `%` cannot start a plain value and `*x` names an anchor.
//! Such a value on a `key: value` line is reported and read as if it were quoted, so the rest
//! of the file is still read and checked.

use serde_yaml_ng::Value;

/// A value that had to be quoted to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unquoted {
    /// Where the value starts (1-based line and column).
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub value: String,
    /// What YAML said about it.
    pub problem: String,
}

/// The YAML tree of `text`, with every value YAML could not read as written read quoted (at
/// most `max` of them): the text as read, those values, and the tree or the syntax error that
/// quoting cannot explain.
pub(super) fn read(
    text: &str,
    max: usize,
) -> (String, Vec<Unquoted>, Result<Value, serde_yaml_ng::Error>) {
    let mut text = text.to_owned();
    let mut quoted: Vec<Unquoted> = Vec::new();
    loop {
        let err = match serde_yaml_ng::from_str::<Value>(&text) {
            Ok(tree) => return (text, quoted, Ok(tree)),
            Err(err) => err,
        };
        let repair = err
            .location()
            .filter(|_| quoted.len() < max)
            // A line quoted once and still wrong is not about quoting.
            .filter(|at| quoted.iter().all(|q| q.line != at.line()))
            .and_then(|at| quote_line(&text, at.line(), at.column()));
        let Some((repaired, mut found)) = repair else {
            return (text, quoted, Err(err));
        };
        found.problem = super::strip_location(&err.to_string());
        quoted.push(found);
        text = repaired;
    }
}

/// `text` with the value of the `key: value` on `line` quoted, when the error at `column` is
/// inside that value.
fn quote_line(text: &str, line: usize, column: usize) -> Option<(String, Unquoted)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let full = *lines.get(line.checked_sub(1)?)?;
    let body = full.trim_end_matches(['\n', '\r']);
    let ending = &full[body.len()..];
    let (key, value_start) = key_of(body)?;
    let rest = &body[value_start..];
    let value_len = comment_start(rest).unwrap_or(rest.len());
    let value = rest[..value_len].trim_end();
    if value.is_empty() || value.starts_with(['|', '>']) {
        return None;
    }
    let value_column = body[..value_start].chars().count() + 1;
    if column < value_column {
        return None;
    }
    let quoted_line = format!(
        "{}{}{}{ending}",
        &body[..value_start],
        single_quoted(value),
        &rest[value.len()..]
    );
    let mut out = String::with_capacity(text.len() + 2);
    for (i, l) in lines.iter().enumerate() {
        out.push_str(if i + 1 == line { &quoted_line } else { l });
    }
    Some((
        out,
        Unquoted {
            line,
            column: value_column,
            key: key.to_owned(),
            value: value.to_owned(),
            problem: String::new(),
        },
    ))
}

/// The key of a `key: value` line (also `- key: value`) and the byte offset its value starts at.
fn key_of(body: &str) -> Option<(&str, usize)> {
    let mut start = body.len() - body.trim_start().len();
    while body[start..].starts_with("- ") {
        start = body.len() - body[start + 1..].trim_start().len();
    }
    let rest = &body[start..];
    let key_len = match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].find(q)? + 2,
        _ => rest.find(": ")?,
    };
    let key = &rest[..key_len];
    if key.is_empty()
        || key.starts_with(['?', '-', '#'])
        || key.contains([
            '{', '}', '[', ']', ',', '&', '*', '!', '|', '>', '%', '@', '`',
        ])
    {
        return None;
    }
    let after = &rest[key_len..];
    let after_colon = after.strip_prefix(':')?;
    let spaces = after_colon.len() - after_colon.trim_start().len();
    if spaces == 0 {
        return None;
    }
    Some((key, start + key_len + 1 + spaces))
}

/// Where a ` #` comment starts in a value, outside quotes.
fn comment_start(value: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in value.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() && i > 0 => return Some(i),
            None => {}
        }
        prev = c;
    }
    None
}

/// `value` as a YAML single-quoted scalar (a quote inside is doubled).
pub(super) fn single_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> (String, Vec<Unquoted>) {
        let (text, found, tree) = read(text, 10);
        tree.expect("the repaired text reads");
        (text, found)
    }

    #[test]
    fn values_yaml_misreads_are_read_quoted() {
        let (text, found) = quoted(
            "fields:\n  priority: data.urgent ? 1 : 2   # first\n  t: \"order.\" + data.kind\n  at: @x\n  who: 'it''s' + data.b\nlist:\n  - ref: *x\n",
        );
        assert_eq!(
            text,
            "fields:\n  priority: 'data.urgent ? 1 : 2'   # first\n  t: '\"order.\" + data.kind'\n  at: '@x'\n  who: '''it''''s'' + data.b'\nlist:\n  - ref: '*x'\n"
        );
        let at: Vec<_> = found
            .iter()
            .map(|f| (f.line, f.column, f.key.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(at[0], (2, 13, "priority", "data.urgent ? 1 : 2"));
        assert_eq!(at[1], (3, 6, "t", "\"order.\" + data.kind"));
        assert_eq!(at[4], (7, 10, "ref", "*x"));
        assert!(found[0].problem.contains("mapping values"), "{found:?}");
    }

    #[test]
    fn structural_errors_are_not_quoting_problems() {
        // A key indented too far: the error is at its colon, before any value.
        let (_, found, tree) = read("a:\n  b: 1\n   c: 2\n", 10);
        assert!(tree.is_err());
        assert!(found.is_empty(), "{found:?}");
    }
}
