//! What a PromQL expression (a dashboard panel's, an alert's) uses: the metric names with their
//! label matchers, and the labels it aggregates or joins by. Enough of PromQL to check those
//! names against a real scrape; not a parser (it never rejects an expression Prometheus
//! accepts, and skips what carries no name: numbers, strings, ranges, Grafana variables).

use std::collections::BTreeSet;

/// `label op "value"` inside a selector's braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    pub value: String,
}

/// `metric{matchers}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

/// Everything one expression names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uses {
    pub selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    pub grouping: BTreeSet<String>,
}

/// Aggregation and vector-matching modifiers whose parenthesised list holds label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Binary operators, modifiers and aggregations (which may be followed by `by (...)` rather
/// than their argument) that read like names.
const KEYWORDS: [&str; 18] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The selectors and grouping labels of `expr`.
pub fn uses(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Uses::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = string_end(&chars, i).1;
        } else if c == '[' {
            // A range or subquery duration.
            i = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .map_or(chars.len(), |p| i + p + 1);
        } else if c == '$' {
            // A Grafana variable ($__rate_interval, $namespace) outside a string.
            i = ident_end(&chars, i + 1);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let end = ident_end(&chars, i);
            let word: String = chars[i..end].iter().collect();
            let next = skip_space(&chars, end);
            if LABEL_LISTS.contains(&word.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let close = chars[next..]
                        .iter()
                        .position(|&c| c == ')')
                        .map_or(chars.len(), |p| next + p);
                    let list: String = chars[next + 1..close].iter().collect();
                    out.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = close + 1;
                } else {
                    i = end;
                }
            } else if KEYWORDS.contains(&word.as_str()) || chars.get(next) == Some(&'(') {
                // An operator, or a function / aggregation call.
                i = end;
            } else if chars.get(next) == Some(&'{') {
                let (matchers, after) = matchers(&chars, next + 1);
                out.selectors.push(Selector {
                    metric: word,
                    matchers,
                });
                i = after;
            } else {
                out.selectors.push(Selector {
                    metric: word,
                    matchers: Vec::new(),
                });
                i = end;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Grafana's `label_values(<selector>, <label>)` variable query: the selector's uses, and the
/// label the variable lists.
pub fn label_values(query: &str) -> Option<(Uses, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((uses(selector), label.trim().to_owned()))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_end(chars: &[char], mut i: usize) -> usize {
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
    {
        i += 1;
    }
    i
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The unescaped content of the string starting at `start`, and the index after it.
fn string_end(chars: &[char], start: usize) -> (String, usize) {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' && i + 1 < chars.len() => {
                value.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return (value, i + 1),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (value, i)
}

/// The matchers from just after `{` up to the closing `}`, and the index after it.
fn matchers(chars: &[char], mut i: usize) -> (Vec<Matcher>, usize) {
    let mut out = Vec::new();
    loop {
        i = skip_space(chars, i);
        match chars.get(i) {
            None => return (out, i),
            Some('}') => return (out, i + 1),
            Some(',') => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let end = ident_end(chars, i);
        let label: String = chars[i..end].iter().collect();
        i = skip_space(chars, end);
        let op_end = chars[i..]
            .iter()
            .position(|&c| !matches!(c, '=' | '!' | '~'))
            .map_or(chars.len(), |p| i + p);
        let op: String = chars[i..op_end].iter().collect();
        i = skip_space(chars, op_end);
        let (value, after) = match chars.get(i) {
            Some('"' | '\'' | '`') => string_end(chars, i),
            _ => (String::new(), i + 1),
        };
        i = after;
        if label.is_empty() {
            // Not a matcher we understand: stop rather than loop.
            return (out, i);
        }
        out.push(Matcher { label, op, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(u: &Uses) -> Vec<&str> {
        u.selectors.iter().map(|s| s.metric.as_str()).collect()
    }

    #[test]
    fn finds_selectors_matchers_and_grouping_labels() {
        let u = uses(
            r#"histogram_quantile(0.95, sum by (le, phase) (rate(fiso_flow_event_duration_seconds_bucket{namespace=~"$namespace", flow="a\"b", status!="success"}[$__rate_interval])))"#,
        );
        assert_eq!(names(&u), ["fiso_flow_event_duration_seconds_bucket"]);
        let m = &u.selectors[0].matchers;
        assert_eq!(
            m.iter()
                .map(|m| (m.label.as_str(), m.op.as_str(), m.value.as_str()))
                .collect::<Vec<_>>(),
            [
                ("namespace", "=~", "$namespace"),
                ("flow", "=", "a\"b"),
                ("status", "!=", "success"),
            ]
        );
        assert_eq!(u.grouping, ["le", "phase"].map(String::from).into());

        let u = uses(
            "increase(fiso_link_auth_refresh_total{status=\"failure\"}[15m]) > 0\nunless ignoring (status)\nincrease(fiso_link_auth_refresh_total{status='success'}[15m]) > 0",
        );
        assert_eq!(
            names(&u),
            [
                "fiso_link_auth_refresh_total",
                "fiso_link_auth_refresh_total"
            ]
        );
        assert_eq!(u.selectors[1].matchers[0].value, "success");
        assert_eq!(u.grouping, ["status".to_owned()].into());

        let u =
            uses("fiso_flow_up == 0 and on(flow) sum without (pod) (fiso_flow_dlq_total) > 1e3");
        assert_eq!(names(&u), ["fiso_flow_up", "fiso_flow_dlq_total"]);
        assert_eq!(u.grouping, ["flow", "pod"].map(String::from).into());
    }

    #[test]
    fn reads_grafana_label_values_queries() {
        let (u, label) =
            label_values(r#"label_values(fiso_flow_up{namespace=~"$namespace"}, pod)"#).unwrap();
        assert_eq!(names(&u), ["fiso_flow_up"]);
        assert_eq!(label, "pod");
        assert!(label_values("fiso_flow_up").is_none());
    }
}
