//! Maps field paths (`sink.config.url`, `targets[0].host`) to line:column in YAML text, so
//! semantic findings point at the line to edit.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diagnostic::join_path;

/// Line (1-based) and column (1-based) of every key and sequence item in a YAML document.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    by_path: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// Indexes `text`; text that does not parse yields an empty index (parse errors carry their
    /// own location).
    pub fn index(text: &str) -> Self {
        let mut rx = Receiver::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut rx, false).is_err() {
            return Locations::default();
        }
        Locations { by_path: rx.found }
    }

    /// Location of `path`, or of its nearest ancestor that exists in the text.
    pub fn lookup(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(found) = self.by_path.get(p) {
                return Some(*found);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Mapping {
        path: String,
        key: Option<String>,
        /// A sequence item whose location is its first key (the start mark points elsewhere).
        item_pending: bool,
    },
    Sequence {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    found: HashMap<String, (usize, usize)>,
}

impl Receiver {
    fn record(&mut self, path: String, mark: Marker) {
        self.found
            .entry(path)
            .or_insert((mark.line(), mark.col() + 1));
    }

    /// A scalar (or alias) value: sequence items are recorded where they stand.
    fn scalar_value(&mut self, mark: Marker) {
        if matches!(self.stack.last(), Some(Frame::Sequence { .. })) {
            if let Some(p) = self.value_path() {
                self.record(p, mark);
            }
        }
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

impl MarkedEventReceiver for Receiver {
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
                        self.record(item, mark);
                    }
                    self.record(full, mark);
                } else {
                    self.scalar_value(mark);
                }
            }
            Event::Alias(_) => self.scalar_value(mark),
            Event::MappingStart(..) => {
                let item_pending = matches!(self.stack.last(), Some(Frame::Sequence { .. }));
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
                        self.record(p, mark);
                    }
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

    const DOC: &str = "name: a\nsource:\n  type: http\n  config:\n    listenAddr: \":8081\"\ntargets:\n  - name: crm\n    host: x\n  - name: b\n";

    #[test]
    fn finds_keys_and_items() {
        let loc = Locations::index(DOC);
        assert_eq!(loc.lookup("name"), Some((1, 1)));
        assert_eq!(loc.lookup("source.config.listenAddr"), Some((5, 5)));
        assert_eq!(loc.lookup("targets[1]"), Some((9, 5)));
        assert_eq!(loc.lookup("targets[1].name"), Some((9, 5)));
        assert_eq!(loc.lookup("targets[0].host"), Some((8, 5)));
    }

    #[test]
    fn falls_back_to_nearest_ancestor() {
        let loc = Locations::index(DOC);
        assert_eq!(loc.lookup("source.config.path"), Some((4, 3)));
        assert_eq!(loc.lookup("targets[0].retry.jitter"), Some((7, 5)));
        assert_eq!(loc.lookup("nothing.here"), None);
    }
}
