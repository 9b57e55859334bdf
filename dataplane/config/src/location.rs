//! Maps field paths (`sink.config.url`, `targets[0].host`) to line:column in YAML text, so
//! findings point at the text to edit: the value for a finding about a value, the key for an
//! unknown key.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diagnostic::join_path;

/// Line (1-based) and column (1-based) of every key, sequence item and value written on one
/// line (a scalar, an alias, a `{...}` / `[...]` collection) in a YAML document.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    keys: HashMap<String, (usize, usize)>,
    values: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// Indexes `text`; text that does not parse yields an empty index (parse errors carry their
    /// own location).
    pub fn index(text: &str) -> Self {
        let mut rx = Receiver {
            lines: text.lines().collect(),
            ..Receiver::default()
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut rx, false).is_err() {
            return Locations::default();
        }
        Locations {
            keys: rx.keys,
            values: rx.values,
        }
    }

    /// Where to point for a finding about `path`: its value when that is written on one line
    /// (`url: not a url` points at `not`), else its key, else the key of its nearest ancestor
    /// in the text (the document itself is located only for the empty path: its first key).
    pub fn lookup(&self, path: &str) -> Option<(usize, usize)> {
        self.values.get(path).copied().or_else(|| self.key(path))
    }

    /// Where the value at `path` starts, when it is written on one line.
    pub fn value(&self, path: &str) -> Option<(usize, usize)> {
        self.values.get(path).copied()
    }

    /// Where the key of `path` is (a sequence item: where the item starts), or the key of its
    /// nearest ancestor in the text.
    pub fn key(&self, path: &str) -> Option<(usize, usize)> {
        if let Some(found) = self.keys.get(path) {
            return Some(*found);
        }
        let mut p = path;
        loop {
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if let Some(found) = self.keys.get(p).filter(|_| !p.is_empty()) {
                return Some(*found);
            }
        }
    }

    /// The path of the value that starts at `line`:`column`, if one does.
    pub fn path_at(&self, line: usize, column: usize) -> Option<&str> {
        self.values
            .iter()
            .find(|(_, at)| **at == (line, column))
            .map(|(path, _)| path.as_str())
    }
}

enum Frame {
    Mapping {
        path: String,
        key: Option<String>,
        /// A sequence item (or the document) whose location is its first key (the start mark
        /// of a block mapping points elsewhere).
        item_pending: bool,
    },
    Sequence {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Receiver<'a> {
    lines: Vec<&'a str>,
    stack: Vec<Frame>,
    keys: HashMap<String, (usize, usize)>,
    values: HashMap<String, (usize, usize)>,
}

fn at(mark: Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl Receiver<'_> {
    fn record_key(&mut self, path: String, mark: Marker) {
        self.keys.entry(path).or_insert(at(mark));
    }

    fn record_value(&mut self, mark: Marker) {
        if let Some(p) = self.value_path() {
            self.values.entry(p).or_insert(at(mark));
        }
    }

    /// Whether a collection starting at `mark` is written in flow style (`{` / `[` there); a
    /// block collection's start mark is not where its text starts.
    fn is_flow(&self, mark: Marker) -> bool {
        self.lines
            .get(mark.line().wrapping_sub(1))
            .and_then(|l| l.chars().nth(mark.col()))
            .is_some_and(|c| c == '{' || c == '[')
    }

    /// A scalar (or alias) value: sequence items are recorded where they stand.
    fn scalar_value(&mut self, mark: Marker) {
        if matches!(self.stack.last(), Some(Frame::Sequence { .. })) {
            if let Some(p) = self.value_path() {
                self.record_key(p, mark);
            }
        }
        self.record_value(mark);
        self.value_done();
    }

    /// Path of the value about to start at the top of the stack (root: empty).
    fn value_path(&self) -> Option<String> {
        let path = match self.stack.last()? {
            Frame::Mapping { path, key, .. } => join_path(path, key.as_deref()?),
            Frame::Sequence { path, index } => format!("{path}[{index}]"),
        };
        Some(path)
    }

    /// A value finished: the parent moves on to its next key or item.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key, .. }) => *key = None,
            Some(Frame::Sequence { index, .. }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Receiver<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Mapping {
                    path,
                    key: key @ None,
                    item_pending,
                }) = self.stack.last_mut()
                {
                    let full = join_path(path, &value);
                    let item = std::mem::take(item_pending).then(|| path.clone());
                    *key = Some(value);
                    if let Some(item) = item {
                        self.record_key(item, mark);
                    }
                    self.record_key(full, mark);
                } else {
                    self.scalar_value(mark);
                }
            }
            Event::Alias(_) => self.scalar_value(mark),
            Event::MappingStart(..) => {
                let item_pending = self.stack.is_empty()
                    || matches!(self.stack.last(), Some(Frame::Sequence { .. }));
                if self.is_flow(mark) {
                    self.record_value(mark);
                }
                let path = self.value_path().unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    item_pending,
                });
            }
            Event::SequenceStart(..) => {
                if matches!(self.stack.last(), Some(Frame::Sequence { .. })) {
                    if let Some(p) = self.value_path() {
                        self.record_key(p, mark);
                    }
                }
                if self.is_flow(mark) {
                    self.record_value(mark);
                }
                let path = self.value_path().unwrap_or_default();
                self.stack.push(Frame::Sequence { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ntargets:\n  - name: crm\n    host: x\n  - name: b\n    tags: [p, q]\n    extra: {k: v}\n  - plain\n";

    #[test]
    fn values_where_they_stand_keys_for_block_collections() {
        let loc = Locations::index(DOC);
        assert_eq!(loc.lookup("name"), Some((1, 7)));
        assert_eq!(loc.lookup("source.config.listenAddr"), Some((5, 17)));
        assert_eq!(loc.key("source.config.listenAddr"), Some((5, 5)));
        assert_eq!(loc.lookup("source.config"), Some((4, 3)));
        assert_eq!(loc.lookup("targets[1]"), Some((9, 5)));
        assert_eq!(loc.lookup("targets[1].name"), Some((9, 11)));
        assert_eq!(loc.lookup("targets[0].host"), Some((8, 11)));
        assert_eq!(loc.lookup("targets[1].tags"), Some((10, 11)));
        assert_eq!(loc.lookup("targets[1].tags[1]"), Some((10, 15)));
        assert_eq!(loc.lookup("targets[1].extra"), Some((11, 12)));
        assert_eq!(loc.lookup("targets[2]"), Some((12, 5)));
        assert_eq!(loc.path_at(8, 11), Some("targets[0].host"));
    }

    #[test]
    fn falls_back_to_the_key_of_the_nearest_ancestor() {
        let loc = Locations::index(DOC);
        assert_eq!(loc.lookup("source.config.path"), Some((4, 3)));
        assert_eq!(loc.lookup("targets[0].retry.jitter"), Some((7, 5)));
        assert_eq!(loc.lookup("nothing.here"), None);
        // The document itself: its first key.
        assert_eq!(loc.lookup(""), Some((1, 1)));
    }
}
