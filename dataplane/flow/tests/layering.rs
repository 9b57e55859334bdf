//! The crate's layering, checked from its sources: every file's references to other modules
//! of the crate (`use crate::…`, `super::…`, paths in code), resolved to the file that defines
//! what they name (following `pub use` re-exports), must respect DESIGN.md's rules:
//!
//! * `sources/` and `sinks/` never import each other; only `pipeline/` imports `sinks/`; only
//!   `topology/` imports `sources/`; nothing imports `topology/`;
//! * the shared vocabulary sits below them: `pipeline/delivery.rs`, `event/`, `cel/`, `kafka/`
//!   and the root modules import none of `pipeline/` (but `delivery.rs`), `sinks/`, `sources/`,
//!   `topology/`;
//! * no two files import each other, directly or through others.
//!
//! Test code (`tests.rs` files, `#[cfg(test)] mod tests { … }` blocks) may import anything and
//! is left out. The parsing is line-free but lexical: comments, strings and character literals
//! are removed first, inline `mod x { … }` blocks are tracked so `super::` resolves as rustc
//! does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// One source file of the crate.
struct File {
    /// Relative to `src/`, with `/`.
    name: String,
    module: ModPath,
    /// Code without comments, strings, character literals or test blocks.
    code: String,
}

/// A `use` path of a file, expanded from its tree, and the name it binds.
struct UseItem {
    /// Absolute module path of the item (`crate` stripped), or `None` for external crates.
    path: Option<ModPath>,
    binds: String,
    public: bool,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(rel: &str) -> ModPath {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// `text` without comments, string / character literals (their quotes kept empty).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            'r' if (c.get(i + 1) == Some(&'#') || c.get(i + 1) == Some(&'"'))
                && (i == 0
                    || !is_ident(c[i - 1])
                    || (c[i - 1] == 'b' && (i < 2 || !is_ident(c[i - 2])))) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                'raw: while j < c.len() {
                    if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break 'raw;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                if c.get(i + 1) == Some(&'\\') {
                    // The quote, the backslash and the escaped character; `\u{…}` runs on.
                    i += 3;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                    out.push_str("' '");
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// `code` without its `#[cfg(test)]` items (test modules, test-only functions).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at its first `;` outside braces, or at the `}` closing its body.
        let mut depth = 0;
        let mut end = after.len();
        for (k, ch) in after.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Expands a use tree (`a::{b, c::{self, d as e}, f::*}`) into (path, bound name) pairs.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let mut base = prefix.to_vec();
        base.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
        let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
        let mut depth = 0;
        let mut start = 0;
        for (k, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..k], &base, out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    full.extend(path.split("::").map(|s| s.trim().to_owned()));
    if full.last().map(String::as_str) == Some("self") {
        full.pop();
    }
    let binds = alias
        .map(String::from)
        .unwrap_or_else(|| full.last().cloned().unwrap_or_default());
    out.push((full, binds));
}

/// `path` (as written in module `here`) as an absolute module path, when it is the crate's.
fn absolute(path: &[String], here: &[String]) -> Option<ModPath> {
    let mut segments = path.iter().peekable();
    let mut base: ModPath = match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        Some("self") => {
            segments.next();
            here.to_vec()
        }
        Some("super") => here.to_vec(),
        _ => return None,
    };
    while segments.peek().map(|s| s.as_str()) == Some("super") {
        segments.next();
        base.pop()?;
    }
    base.extend(segments.cloned());
    Some(base)
}

struct Crate {
    files: Vec<File>,
    by_module: BTreeMap<ModPath, usize>,
    uses: Vec<Vec<UseItem>>,
    /// Per file, the absolute paths it references.
    refs: Vec<Vec<ModPath>>,
}

impl Crate {
    fn load() -> Crate {
        let src = src_dir();
        let mut paths = Vec::new();
        rust_files(&src, &mut paths);
        let mut files = Vec::new();
        for path in paths {
            let name = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let module = module_of(&name);
            let text = std::fs::read_to_string(&path).unwrap();
            let code = if module.last().map(String::as_str) == Some("tests") {
                String::new()
            } else {
                without_tests(&strip(&text))
            };
            files.push(File { name, module, code });
        }
        let by_module = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut krate = Crate {
            files,
            by_module,
            uses: Vec::new(),
            refs: Vec::new(),
        };
        for i in 0..krate.files.len() {
            let (uses, refs) = scan(&krate.files[i], |m| krate.by_module.contains_key(m));
            krate.uses.push(uses);
            krate.refs.push(refs);
        }
        krate
    }

    /// The file defining what `path` names, following `pub use` re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        let (len, &file) = (0..=path.len())
            .rev()
            .find_map(|n| self.by_module.get(&path[..n]).map(|f| (n, f)))?;
        if len < path.len() && depth < 8 {
            let name = &path[len];
            let reexport = self.uses[file]
                .iter()
                .find(|u| u.public && &u.binds == name)
                .and_then(|u| u.path.as_ref());
            if let Some(target) = reexport {
                let mut target = target.clone();
                target.extend(path[len + 1..].iter().cloned());
                return self.resolve(&target, depth + 1).or(Some(file));
            }
        }
        Some(file)
    }

    /// File → the files it imports.
    fn edges(&self) -> BTreeMap<usize, BTreeSet<usize>> {
        let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (i, refs) in self.refs.iter().enumerate() {
            let set = edges.entry(i).or_default();
            for r in refs {
                let target = self.resolve(r, 0).unwrap_or_else(|| {
                    panic!("{}: `{}` names no module", self.files[i].name, r.join("::"))
                });
                if target != i && !self.files[target].module.is_empty() {
                    set.insert(target);
                }
            }
        }
        edges
    }
}

/// The `use` items and every crate-relative path of a file, with inline modules tracked.
fn scan(file: &File, is_module: impl Fn(&[String]) -> bool) -> (Vec<UseItem>, Vec<ModPath>) {
    let code = &file.code;
    let bytes = code.as_bytes();
    let mut uses = Vec::new();
    let mut refs = Vec::new();
    // Inline modules open at brace depth `d`: (name, d).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    let here = |inline: &[(String, usize)]| {
        let mut m = file.module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    let word_at = |i: usize, w: &str| {
        code[i..].starts_with(w)
            && (i == 0 || !is_ident(code[..i].chars().next_back().unwrap()))
            && code[i + w.len()..]
                .chars()
                .next()
                .is_some_and(|c| !is_ident(c))
    };
    while i < bytes.len() {
        let ch = bytes[i] as char;
        if ch == '{' {
            depth += 1;
            if let Some(name) = pending_mod.take() {
                inline.push((name, depth));
            }
            i += 1;
            continue;
        }
        if ch == '}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if ch == ';' {
            pending_mod = None;
        }
        if word_at(i, "mod") {
            let rest = &code[i + 3..];
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| is_ident(*c))
                .collect();
            pending_mod = Some(name);
            i += 3;
            continue;
        }
        // `use<…>` is precise capturing, not an import.
        if word_at(i, "use") && code[i + 3..].starts_with(char::is_whitespace) {
            let end = i + code[i..].find(';').expect("use ends with `;`");
            let before = code[..i].trim_end();
            let public = ["pub", "pub(crate)", "pub(super)"]
                .iter()
                .any(|p| before.ends_with(p));
            let mut expanded = Vec::new();
            expand(&code[i + 3..end], &[], &mut expanded);
            let m = here(&inline);
            for (path, binds) in expanded {
                let abs = absolute(&path, &m).or_else(|| {
                    // `use child::…` names a module below this one.
                    let mut below = m.clone();
                    below.push(path.first()?.clone());
                    is_module(&below).then(|| {
                        let mut full = m.clone();
                        full.extend(path.iter().cloned());
                        full
                    })
                });
                if let Some(a) = &abs {
                    refs.push(a.clone());
                }
                uses.push(UseItem {
                    path: abs,
                    binds,
                    public,
                });
            }
            i = end + 1;
            continue;
        }
        // `child::item` in code: a path through a module declared below this one.
        if (i == 0 || !is_ident(code[..i].chars().next_back().unwrap()))
            && code[i..].starts_with(|c: char| c.is_alphabetic() || c == '_')
        {
            let len = code[i..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(code.len() - i);
            let path: Vec<String> = code[i..i + len]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let m = here(&inline);
            if path.len() > 1 && !["crate", "super", "self"].contains(&path[0].as_str()) {
                let mut below = m.clone();
                below.push(path[0].clone());
                if is_module(&below) {
                    let mut full = m;
                    full.extend(path);
                    refs.push(full);
                    i += len;
                    continue;
                }
            }
        }
        for root in ["crate", "super", "self"] {
            if word_at(i, root) && code[i + root.len()..].starts_with("::") {
                let len = code[i..]
                    .find(|c: char| !(is_ident(c) || c == ':'))
                    .unwrap_or(code.len() - i);
                let path: Vec<String> = code[i..i + len]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(a) = absolute(&path, &here(&inline)) {
                    refs.push(a);
                }
                i += len;
                break;
            }
        }
        i += code[i..].chars().next().map_or(1, char::len_utf8);
    }
    (uses, refs)
}

fn area(file: &File) -> &str {
    file.module.first().map_or("", String::as_str)
}

#[test]
fn the_import_rules_hold() {
    let krate = Crate::load();
    let edges = krate.edges();
    let mut broken = Vec::new();
    let upper = ["pipeline", "sinks", "sources", "topology"];
    for (&from, targets) in &edges {
        let f = &krate.files[from];
        for &to in targets {
            let t = &krate.files[to];
            let (a, b) = (area(f), area(t));
            if a == b && a != "pipeline" {
                continue;
            }
            let why = match (a, b) {
                ("sources", "sinks") | ("sinks", "sources") => {
                    Some("sources and sinks never import each other")
                }
                (_, "sinks") if a != "pipeline" => Some("only pipeline/ imports sinks/"),
                (_, "sources") if a != "topology" => Some("only topology/ imports sources/"),
                (_, "topology") => Some("nothing imports topology/"),
                ("pipeline", "pipeline") if f.name == "pipeline/delivery.rs" => {
                    Some("pipeline/delivery.rs is below the pipeline")
                }
                (_, "pipeline") if t.name != "pipeline/delivery.rs" && !upper.contains(&a) => {
                    Some("only sources/ and topology/ use the pipeline; below it, only delivery.rs")
                }
                _ if !upper.contains(&a)
                    && upper.contains(&b)
                    && t.name != "pipeline/delivery.rs" =>
                {
                    Some("the shared layers never import the ones above them")
                }
                _ => None,
            };
            if let Some(why) = why {
                broken.push(format!("{} imports {}: {why}", f.name, t.name));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn no_two_files_import_each_other() {
    let krate = Crate::load();
    let edges = krate.edges();
    // Depth-first search for a back edge; the path to it is the cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: usize,
        edges: &BTreeMap<usize, BTreeSet<usize>>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[n] = Mark::Open;
        stack.push(n);
        for &m in edges.get(&n).into_iter().flatten() {
            match marks[m] {
                Mark::Open => {
                    let from = stack.iter().position(|&s| s == m).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(m, edges, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[n] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; krate.files.len()];
    for n in 0..krate.files.len() {
        if marks[n] == Mark::New {
            if let Some(cycle) = visit(n, &edges, &mut marks, &mut Vec::new()) {
                let names: Vec<&str> = cycle
                    .iter()
                    .map(|&i| krate.files[i].name.as_str())
                    .collect();
                panic!("import cycle: {}", names.join(" -> "));
            }
        }
    }
}

#[test]
fn the_parser_sees_what_rustc_sees() {
    let krate = Crate::load();
    let edges = krate.edges();
    let file = |name: &str| {
        krate
            .files
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    if std::env::var_os("LAYERING_DUMP").is_some() {
        for (from, to) in &edges {
            let to: Vec<&str> = to.iter().map(|&t| krate.files[t].name.as_str()).collect();
            eprintln!("{} -> {}", krate.files[*from].name, to.join(", "));
        }
    }
    let imports = |from: &str, to: &str| edges[&file(from)].contains(&file(to));
    // A multi-line `use crate::{…}` block, followed through `lib.rs`'s re-exports.
    assert!(imports("pipeline/mod.rs", "sinks/mod.rs"));
    assert!(imports("pipeline/mod.rs", "error.rs"));
    assert!(imports("pipeline/mod.rs", "event/compiled.rs"));
    // A re-export of a mod.rs (`sinks::Sink` is `sinks/sink.rs`'s).
    assert!(imports("pipeline/mod.rs", "sinks/sink.rs"));
    // `super::` from a child file, and a path written in code rather than a `use`.
    assert!(imports("sinks/http.rs", "sinks/sink.rs"));
    assert!(imports("sources/mod.rs", "pipeline/mod.rs"));
    // `child::item` in the code of the module that declares `child`.
    assert!(imports("sinks/mod.rs", "sinks/http.rs"));
    // Test code is left out.
    assert!(!imports("sinks/kafka.rs", "sources/kafka/mod.rs"));
}
