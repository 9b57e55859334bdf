//! The Prometheus / OpenMetrics text of `/metrics`, parsed into samples so that tests select
//! by name and labels, independent of label order.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of the sample called `name` whose labels include all of `labels`; `None` when
    /// there is none. Panics when several samples match (the selector is ambiguous).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        });
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "several samples match {name}{labels:?}:\n{self}"
        );
        Some(first.value)
    }

    /// Like [`Metrics::get`], treating a missing sample as 0 (counters not yet created).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(brace) => (&line[..brace], &line[brace..]),
        None => line.split_once(' ')?,
    };
    let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
        let end = closing_brace(body)?;
        (parse_labels(&body[..end])?, body[end + 1..].trim())
    } else {
        (BTreeMap::new(), rest.trim())
    };
    // `value [timestamp]`; OpenMetrics exemplars follow ` # `.
    let value = value.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Index of the `}` closing a label set, skipping quoted values.
fn closing_brace(body: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if s.is_empty() {
            return Some(labels);
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_histograms_and_label_sets() {
        let m = Metrics::parse(
            "# TYPE fiso_flow_events_total counter\n\
             fiso_flow_events_total{flow=\"m\",status=\"success\"} 2\n\
             fiso_flow_event_duration_seconds_bucket{le=\"+Inf\",flow=\"m\",phase=\"total\"} 4\n\
             fiso_flow_event_duration_seconds_count{flow=\"m\",phase=\"total\"} 4\n\
             odd{v=\"a,b}\\\"c\"} 1.5\n\
             plain 7\n\
             # EOF\n",
        );
        assert_eq!(
            m.get(
                "fiso_flow_events_total",
                &[("status", "success"), ("flow", "m")]
            ),
            Some(2.0)
        );
        assert_eq!(
            m.get("fiso_flow_event_duration_seconds_bucket", &[("le", "+Inf")]),
            Some(4.0)
        );
        assert_eq!(m.get("odd", &[("v", "a,b}\"c")]), Some(1.5));
        assert_eq!(m.get("plain", &[]), Some(7.0));
        assert_eq!(m.get("fiso_flow_events_total", &[("flow", "x")]), None);
        assert_eq!(m.value("fiso_flow_events_total", &[("flow", "x")]), 0.0);
    }
}
