//! Reading a config whose text has mistakes: each mistake is reported once and set aside, and
//! the rest is read again, until it reads or a bound is reached.
//!
//! A pass deserialises the whole YAML tree (written back as text, so scalars resolve exactly as
//! in a normal read: `port: 8080` is still a valid string) and stops at its first problem. That
//! problem's node is then removed from the tree, or replaced by a neutral value where the type
//! needs one, and its path is *set aside*: what serde says next about it or anything under it is
//! a consequence of the mistake already reported, not a finding of its own, and so are the
//! semantic findings there (see [`Parsed::locate`](super::Parsed::locate)).

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml_ng::{Mapping, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[0].c`, as everywhere else (diagnostics, validation).
pub(super) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k)
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// What a pass stopped at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    UnknownField,
    /// The struct at the path lacks this field.
    MissingField(String),
    UnknownVariant,
    /// Wrong type, or a value its type refuses (`30 seconds` for a duration).
    BadValue,
}

/// A mistake found: where, serde's words (without its own location), and its kind.
#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub path: Vec<Seg>,
    pub message: String,
    pub problem: Problem,
}

/// The end of a recovery.
pub(super) struct Outcome<T> {
    /// The config with every mistake set aside, when the tree could be made to read.
    pub config: Option<T>,
    pub findings: Vec<Finding>,
    pub set_aside: Vec<Vec<Seg>>,
    /// Stopped at a bound: more findings may follow.
    pub truncated: bool,
}

/// Passes stop here, or once they have read this much text in all, whichever comes first: a
/// large file full of mistakes costs a bounded time.
const MAX_PASSES: usize = 500;
const MAX_TEXT_READ: usize = 16 * 1024 * 1024;

/// Values tried, in turn, where the type needs a value that was set aside (or never given).
fn neutral(i: usize) -> Option<Value> {
    Some(match i {
        0 => Value::String(String::new()),
        1 => Value::Number(0.into()),
        2 => Value::Bool(false),
        3 => Value::Mapping(Mapping::new()),
        4 => Value::Sequence(Vec::new()),
        _ => return None,
    })
}

/// Reads `tree` as a `T`, reporting at most `max_findings` mistakes. `suggest` gives the field an
/// unknown field was probably meant to be (its absence is then no finding of its own).
pub(super) fn read<T: DeserializeOwned>(
    mut tree: Value,
    max_findings: usize,
    suggest: impl Fn(&[Seg], &str) -> Option<String>,
) -> Outcome<T> {
    let mut state = State::default();
    type_first(&mut tree);
    let mut read_so_far = 0;
    for _ in 0..MAX_PASSES {
        let Ok(text) = serde_yaml_ng::to_string(&tree) else {
            break;
        };
        read_so_far += text.len();
        if read_so_far > MAX_TEXT_READ {
            break;
        }
        let err = match deserialize::<T>(&text) {
            Ok(config) => return state.finish(Some(config), false),
            Err(err) => err,
        };
        let message = super::clean_message(&err.inner().to_string(), &err.path().to_string());
        let Some(path) = segments(err.path()) else {
            // A path serde could not follow: report it as it is, nothing more can be told.
            state.record(Vec::new(), message, Problem::BadValue);
            return state.finish(None, false);
        };
        if state.last.as_ref() == Some(&(path.clone(), message.clone())) {
            // Setting it aside changed nothing: stop rather than say it twice.
            return state.finish(None, false);
        }
        state.last = Some((path.clone(), message.clone()));
        if !state.step(&mut tree, path, message, &suggest) {
            return state.finish(None, false);
        }
        if state.findings.len() > max_findings {
            return state.finish(None, true);
        }
        type_first(&mut tree);
    }
    state.finish(None, true)
}

#[derive(Default)]
struct State {
    findings: Vec<Finding>,
    set_aside: Vec<Vec<Seg>>,
    /// Paths holding a neutral value of ours: the index of the next one to try.
    neutral_at: HashMap<Vec<Seg>, usize>,
    /// Paths where no neutral value fits: removed, and a type that needs them cannot be read.
    exhausted: Vec<Vec<Seg>>,
    last: Option<(Vec<Seg>, String)>,
}

impl State {
    fn is_set_aside(&self, path: &[Seg]) -> bool {
        self.set_aside.iter().any(|p| path.starts_with(p))
    }

    fn record(&mut self, path: Vec<Seg>, message: String, problem: Problem) {
        self.findings.push(Finding {
            path,
            message,
            problem,
        });
    }

    fn finish<T>(self, config: Option<T>, truncated: bool) -> Outcome<T> {
        Outcome {
            config,
            findings: self.findings,
            set_aside: self.set_aside,
            truncated,
        }
    }

    /// Reports the problem at `path` (unless it follows from one already reported) and changes
    /// the tree so the next pass gets past it. `false` when the tree cannot be changed so.
    fn step(
        &mut self,
        tree: &mut Value,
        path: Vec<Seg>,
        message: String,
        suggest: &impl Fn(&[Seg], &str) -> Option<String>,
    ) -> bool {
        let consequence = self.is_set_aside(&path);
        match classify(&message) {
            Problem::UnknownField => {
                if !consequence {
                    let parent = &path[..path.len() - 1];
                    if let Some(meant) = suggest(parent, &message) {
                        let mut meant_path = parent.to_vec();
                        meant_path.push(Seg::Key(meant));
                        self.set_aside.push(meant_path);
                    }
                    self.record(path.clone(), message, Problem::UnknownField);
                }
                remove(tree, &path)
            }
            Problem::MissingField(field) => {
                let mut field_path = path.clone();
                field_path.push(Seg::Key(field.clone()));
                if self.exhausted.contains(&field_path) {
                    return false;
                }
                if !self.is_set_aside(&field_path) {
                    self.record(path.clone(), message, Problem::MissingField(field.clone()));
                    self.set_aside.push(field_path.clone());
                }
                let Some(Value::Mapping(m)) = node_mut(tree, &path) else {
                    return false;
                };
                m.insert(
                    Value::String(field),
                    neutral(0).expect("a first neutral value"),
                );
                self.neutral_at.insert(field_path, 1);
                true
            }
            Problem::UnknownVariant => {
                let Some(first) = first_expected(&message) else {
                    return false;
                };
                if !consequence {
                    // The tag of a `{type, config}` union: its config is read as another type
                    // now, so what is said about it is no finding either.
                    let aside = match path.last() {
                        Some(Seg::Key(k)) if k == "type" => path[..path.len() - 1].to_vec(),
                        _ => path.clone(),
                    };
                    self.record(path.clone(), message, Problem::UnknownVariant);
                    self.set_aside.push(aside);
                }
                set(tree, &path, Value::String(first))
            }
            Problem::BadValue => {
                if let Some(next) = self.neutral_at.get(&path).copied() {
                    // A neutral value of ours does not fit: the next one, or none at all.
                    return match neutral(next) {
                        Some(v) => {
                            self.neutral_at.insert(path.clone(), next + 1);
                            set(tree, &path, v)
                        }
                        None => {
                            self.exhausted.push(path.clone());
                            matches!(path.last(), Some(Seg::Key(_))) && remove(tree, &path)
                        }
                    };
                }
                if !consequence {
                    self.record(path.clone(), message, Problem::BadValue);
                    self.set_aside.push(path.clone());
                }
                match path.last() {
                    // Optional fields read without it; a required one is then missing, and
                    // gets a neutral value.
                    Some(Seg::Key(_)) => remove(tree, &path),
                    // A list item cannot go without moving the items after it.
                    Some(Seg::Index(_)) => {
                        self.neutral_at.insert(path.clone(), 1);
                        set(tree, &path, neutral(0).expect("a first neutral value"))
                    }
                    None => false,
                }
            }
        }
    }
}

pub(super) fn deserialize<T: DeserializeOwned>(
    text: &str,
) -> Result<T, serde_path_to_error::Error<serde_yaml_ng::Error>> {
    serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
}

fn segments(path: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    path.iter()
        .map(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn classify(message: &str) -> Problem {
    if message.starts_with("unknown field `") {
        Problem::UnknownField
    } else if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        Problem::MissingField(field.to_owned())
    } else if message.starts_with("unknown variant `") {
        Problem::UnknownVariant
    } else {
        Problem::BadValue
    }
}

/// The first value serde lists after "expected" (`expected one of `http`, `kafka``).
fn first_expected(message: &str) -> Option<String> {
    let (_, expected) = message.split_once(", expected ")?;
    expected.split('`').nth(1).map(str::to_owned)
}

/// A mapping key as a field path names it.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn untag(mut v: &mut Value) -> &mut Value {
    while let Value::Tagged(t) = v {
        v = &mut t.value;
    }
    v
}

fn key_in(m: &Mapping, key: &str) -> Option<Value> {
    m.keys()
        .find(|k| key_text(k).as_deref() == Some(key))
        .cloned()
}

fn node_mut<'a>(tree: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut node = untag(tree);
    for seg in path {
        node = match (seg, node) {
            (Seg::Key(k), Value::Mapping(m)) => {
                let key = key_in(m, k)?;
                untag(m.get_mut(&key)?)
            }
            (Seg::Index(i), Value::Sequence(s)) => untag(s.get_mut(*i)?),
            _ => return None,
        };
    }
    Some(node)
}

fn remove(tree: &mut Value, path: &[Seg]) -> bool {
    let Some((Seg::Key(k), parent)) = path.split_last() else {
        return false;
    };
    let Some(Value::Mapping(m)) = node_mut(tree, parent) else {
        return false;
    };
    key_in(m, k).is_some_and(|key| m.shift_remove(&key).is_some())
}

fn set(tree: &mut Value, path: &[Seg], value: Value) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match (last, node_mut(tree, parent)) {
        (Seg::Key(k), Some(Value::Mapping(m))) => {
            let key = key_in(m, k).unwrap_or_else(|| Value::String(k.clone()));
            m.insert(key, value);
            true
        }
        (Seg::Index(i), Some(Value::Sequence(s))) if *i < s.len() => {
            s[*i] = value;
            true
        }
        _ => false,
    }
}

/// Puts `type` before `config` in every `{type, config}` mapping: serde reads a `config` that
/// comes first into a buffer, and mistakes inside it would then be reported at the mapping
/// instead of at their own path.
fn type_first(tree: &mut Value) {
    match untag(tree) {
        Value::Mapping(m) => {
            let type_key = key_in(m, "type");
            if let (Some(type_key), true) = (type_key, key_in(m, "config").is_some()) {
                if m.keys().next() != Some(&type_key) {
                    let value = m.shift_remove(&type_key).expect("the key is there");
                    let rest = std::mem::take(m);
                    m.insert(type_key, value);
                    m.extend(rest);
                }
            }
            m.values_mut().for_each(type_first);
        }
        Value::Sequence(s) => s.iter_mut().for_each(type_first),
        _ => {}
    }
}
