//! Validation findings: where (file, line:column, field path), what, and how to fix it.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// File the problem is in, when the config came from a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Field path such as `sink.config.url` or `targets[0].retry.jitter`; empty for the document.
    pub path: String,
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: None,
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Prefixes the field path (`sink.config` + `url`), e.g. to nest a target under `targets[2]`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self
    }
}

/// `a` + `b` → `a.b`; indexes (`[0]`) attach without a dot.
pub fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            write!(f, ": ")?;
        }
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Most findings listed for one file (`fiso validate`, a reload, a resource's status): a file
/// broken throughout (say, the wrong file) would otherwise bury everything else.
pub const MAX_PER_FILE: usize = 100;

/// What [`Diagnostics::bound_per_file`] says in place of the findings it leaves out.
pub const MORE_NOT_LISTED: &str =
    "more findings in this file are not listed (at most 100 per file): fix these and check again";

/// All findings of one validation run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(ds);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Orders the findings by file, then line and column; findings about a whole file (no
    /// line) come last in their file. Findings at the same place keep their order.
    pub fn sort(&mut self) {
        self.0.sort_by(place_order);
    }

    /// Keeps the first [`MAX_PER_FILE`] findings of each file (sort first) and says so in
    /// one finding more when some were left out.
    pub fn bound_per_file(&mut self) {
        let mut kept: Vec<Diagnostic> = Vec::with_capacity(self.0.len());
        let mut count = 0;
        for d in std::mem::take(&mut self.0) {
            let same_file = kept.last().is_some_and(|last| last.file == d.file);
            if !same_file {
                count = 0;
            }
            count += 1;
            match count.cmp(&(MAX_PER_FILE + 1)) {
                Ordering::Less => kept.push(d),
                Ordering::Equal => {
                    let mut note = Diagnostic::error("", MORE_NOT_LISTED);
                    note.file = d.file;
                    kept.push(note);
                }
                Ordering::Greater => {}
            }
        }
        self.0 = kept;
    }
}

fn place_order(a: &Diagnostic, b: &Diagnostic) -> Ordering {
    let place = |d: &Diagnostic| (d.line.is_none(), d.line, d.column);
    a.file.cmp(&b.file).then_with(|| place(a).cmp(&place(b)))
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
