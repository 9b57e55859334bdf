//! Compiling one CEL expression of a flow: parse, adapt, check.
//!
//! Compiling happens once per flow, when it is loaded; per event only evaluation runs (see
//! [`Scope`](crate::Scope)). Parsing is bounded (size, depth, parser panics: see
//! [`parse_bounded`]) the same way for `fiso validate`, and the adapted expression charges the
//! [`budget`](crate::cel::budget) as it runs. What is done to the parsed expression:
//!
//! * **Rewrites** that make CEL behave as users of the upstream (Go) Fiso expect, where JSON
//!   numbers are all doubles: `+ - * /` accept an `int` mixed with a `double` (the result is a
//!   `double`: `10.5 * 3` is `31.5`), and `==`, `!=` and `in` compare lists and maps
//!   structurally whatever their origin. Both become calls of functions registered in
//!   [`scope`](mod@crate::cel::scope); CEL's own semantics are kept for everything else (`int / int`
//!   stays an integer division). `greatest(..)` / `least(..)` are `math.greatest(..)` /
//!   `math.least(..)`.
//! * **Checks** that catch at load time what would fail on every event: an identifier that is
//!   none of the scope variables (`data`, `id`, `source`, `type`, `subject`, `time`), e.g. an
//!   unquoted string literal (`pending`) or a field without `data.` (`price`); an expression
//!   that reads no variable is evaluated once, here, so it cannot fail later (`'a' + 1`).
//! * **Shortcuts**: a field access on a value (`data.customer.name`) becomes an index
//!   (`data["customer"]["name"]`), which means the same but skips the interpreter's lookup of
//!   qualified names; a constant expression keeps its value; a plain field mapping
//!   (`data.customer.name`, `time`) is read straight from the event when the field exists
//!   (when it doesn't, CEL runs and reports the error).
//! * A helpful message for JSONPath (`$.x`), which v0.8 replaced by CEL (`data.x`).

use cel::common::ast::{
    operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue,
    MapExpr, StructExpr,
};
use cel::common::types::CelString;
use fiso_config::cel_check::{describe_syntax, parse_bounded};
use serde_json::Value as Json;

use crate::cel::budget::Budget;
use crate::cel::env::{self, ENV, VARIABLES};
use crate::cel::functions;
use crate::event::payload_keys::{Fields, Read};

/// How deep comprehensions (`map`, `filter`, `all`, `exists`, `exists_one`) may nest in one
/// another. Each level multiplies the work per event by the length of the list it iterates,
/// and an expression that reads no variable is evaluated at load time: found by fuzzing, a
/// 190-byte constant expression of six nested `map`s over ten numbers took 5 s to load (seven
/// take a minute), and four nested over a 30-element payload list ran out of memory. Three
/// levels cover real mappings (`data.orders.map(o, o.items.filter(i, i.tags.exists(..)))`).
const MAX_COMPREHENSION_NESTING: usize = 3;

use fiso_config::cel_check::{FUNCTION_NAMESPACES as NAMESPACES, TYPE_NAMES};

#[cfg(test)]
thread_local! {
    /// Expressions compiled by this thread (tests run one per thread).
    pub(crate) static COMPILATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A compiled CEL expression, ready to be evaluated in any event's [`Scope`](crate::Scope).
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    source: String,
    ast: IdedExpr,
    /// The value, computed once, of an expression that reads no variable.
    constant: Option<Json>,
    /// Set when the expression is a variable or a chain of field names on `data`.
    path: Option<Path>,
    /// Whether evaluating it may take long (loops, quadratic or regex functions): such an
    /// evaluation is moved off the async runtime's workers.
    heavy: bool,
}

/// A plain field mapping (`data.customer.name`, `time`), the most common expression, which
/// [`Scope::eval`](crate::Scope::eval) reads straight from the event while the path exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) root: Root,
    /// Object keys below `data`.
    pub(crate) keys: Vec<String>,
}

/// A scope variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Data,
    Id,
    Source,
    Type,
    Subject,
    Time,
}

impl Path {
    fn of(expr: &IdedExpr) -> Option<Path> {
        match &expr.expr {
            Expr::Ident(name) => {
                let root = match name.as_str() {
                    "data" => Root::Data,
                    "id" => Root::Id,
                    "source" => Root::Source,
                    "type" => Root::Type,
                    "subject" => Root::Subject,
                    "time" => Root::Time,
                    _ => return None,
                };
                Some(Path {
                    root,
                    keys: Vec::new(),
                })
            }
            Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
                let [operand, key] = call.args.as_slice() else {
                    return None;
                };
                let Expr::Literal(LiteralValue::String(key)) = &key.expr else {
                    return None;
                };
                let mut path = Path::of(operand).filter(|p| p.root == Root::Data)?;
                path.keys.push(key.inner().to_owned());
                Some(path)
            }
            _ => None,
        }
    }
}

impl CompiledExpr {
    /// Compiles `source` with the default [`Budget`] for constant folding; the error is a
    /// one-line message without the field path.
    pub fn compile(source: &str) -> Result<CompiledExpr, String> {
        CompiledExpr::compile_with(source, Budget::DEFAULT)
    }

    /// Compiles `source` within the bounds of [`parse_bounded`] (length, depth, parser
    /// panics); an expression that reads no variable is evaluated here, within `budget`.
    pub fn compile_with(source: &str, budget: Budget) -> Result<CompiledExpr, String> {
        #[cfg(test)]
        COMPILATIONS.with(|n| n.set(n.get() + 1));

        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Err("empty expression".to_owned());
        }
        if let Some(message) = jsonpath_message(trimmed) {
            return Err(message);
        }
        let mut ast = parse_bounded(
            source,
            |source| ENV.parser().parse(source).map_err(describe_syntax),
            |ast| ast,
        )
        .map_err(|e| e.to_string())?;
        let mut adapter = Adapter::default();
        adapter.adapt(&mut ast);
        if !adapter.problems.is_empty() {
            return Err(adapter.problems.join("; "));
        }
        // An expression that reads no variable has the same value for every event.
        let constant = if adapter.uses_scope {
            None
        } else {
            Some(env::eval_constant(&ast, budget).map_err(|e| format!("always fails: {e}"))?)
        };
        Ok(CompiledExpr {
            source: source.to_owned(),
            path: Path::of(&ast),
            heavy: adapter.heavy,
            ast,
            constant,
        })
    }

    /// The expression as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn ast(&self) -> &IdedExpr {
        &self.ast
    }

    pub(crate) fn constant(&self) -> Option<&Json> {
        self.constant.as_ref()
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_ref()
    }

    /// Whether an evaluation may take long (see the field); a constant never does.
    pub fn is_heavy(&self) -> bool {
        self.heavy && self.constant.is_none()
    }

    /// Adds to `fields` what of `data` this reads; `false` when it reads `data` other than
    /// through literal keys (`size(data)`, `data[k]`, `'a' in data`): all of it.
    pub(crate) fn data_fields(&self, fields: &mut Fields) -> bool {
        self.constant.is_some() || data_fields(&self.ast, fields)
    }
}

/// [`CompiledExpr::data_fields`] of an adapted expression, where `data.a` is `data["a"]`: a
/// path of literal keys from `data` is read whole, or only counted as the argument of `size`.
/// A comprehension variable named `data` counts as the variable: at worst a field too many is
/// read, or the whole payload.
fn data_fields(expr: &IdedExpr, fields: &mut Fields) -> bool {
    if let Some(path) = data_path(expr) {
        fields.add(&path, Read::Whole);
        return !path.is_empty();
    }
    match &expr.expr {
        Expr::Ident(_) => true,
        Expr::Call(call) => {
            if let Some(path) = sized(call).and_then(data_path) {
                fields.add(&path, Read::Count);
                return !path.is_empty();
            }
            all_data_fields(call.target.as_deref().into_iter().chain(&call.args), fields)
        }
        Expr::Select(select) => data_fields(&select.operand, fields),
        Expr::List(list) => all_data_fields(&list.elements, fields),
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
            entries.iter().all(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => {
                    data_fields(&e.key, fields) && data_fields(&e.value, fields)
                }
                EntryExpr::StructField(f) => data_fields(&f.value, fields),
            })
        }
        Expr::Comprehension(comp) => {
            let ComprehensionExpr {
                iter_range,
                accu_init,
                loop_cond,
                loop_step,
                result,
                ..
            } = &**comp;
            all_data_fields(
                [iter_range, accu_init, loop_cond, loop_step, result],
                fields,
            )
        }
        Expr::Literal(_) | Expr::Unspecified => true,
    }
}

fn all_data_fields<'a>(exprs: impl IntoIterator<Item = &'a IdedExpr>, fields: &mut Fields) -> bool {
    exprs.into_iter().all(|e| data_fields(e, fields))
}

/// The keys from `data` down of `data`, `data.a.b`, `data["a"]["b"]` or `has(data.a.b)`.
fn data_path(expr: &IdedExpr) -> Option<Vec<String>> {
    let (operand, key) = match &expr.expr {
        Expr::Ident(name) => return (name.trim_start_matches('.') == "data").then(Vec::new),
        Expr::Select(select) => (&*select.operand, select.field.clone()),
        Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
            match call.args.as_slice() {
                [operand, key] => match &key.expr {
                    Expr::Literal(LiteralValue::String(key)) => (operand, key.inner().to_owned()),
                    _ => return None,
                },
                _ => return None,
            }
        }
        _ => return None,
    };
    let mut path = data_path(operand)?;
    path.push(key);
    Some(path)
}

/// The argument of `size(x)` or `x.size()`.
fn sized(call: &CallExpr) -> Option<&IdedExpr> {
    if call.func_name != "size" {
        return None;
    }
    match (call.target.as_deref(), call.args.as_slice()) {
        (None, [arg]) | (Some(arg), []) => Some(arg),
        _ => None,
    }
}

/// v0.7 configs used JSONPath (`$.legacy_id`); say what replaced it rather than "syntax error".
fn jsonpath_message(source: &str) -> Option<String> {
    let rest = source.strip_prefix('$')?;
    Some(format!(
        "JSONPath `{source}` is not supported: JSONPath `$.x` was replaced by CEL `data.x` in \
         v0.8 (write `data{rest}`)"
    ))
}

/// Applies the rewrites and checks of the module documentation.
#[derive(Default)]
struct Adapter {
    /// Comprehension variables in scope.
    bound: Vec<String>,
    problems: Vec<String>,
    /// Whether a scope variable is read: if not, the expression is a constant.
    uses_scope: bool,
    /// Comprehension bodies the walk is inside.
    nesting: usize,
    /// A loop or a function whose cost grows faster than its input was seen.
    heavy: bool,
}

impl Adapter {
    fn adapt(&mut self, expr: &mut IdedExpr) {
        let id = expr.id;
        let replacement = match &mut expr.expr {
            Expr::Ident(name) => {
                if !self.is_known_ident(name) {
                    self.problems.push(undeclared(name));
                }
                self.uses_scope |= self.is_scope_variable(name);
                None
            }
            Expr::Select(select) => {
                self.adapt(&mut select.operand);
                // `data.a.b` makes the interpreter join and look up the names `data.a.b` and
                // `data.a` before `data` (they could be variables or types); `data["a"]["b"]`
                // means the same for maps and goes straight to the value.
                (!select.test && self.is_value(&select.operand)).then(|| {
                    let operand = std::mem::take(&mut *select.operand);
                    let field = IdedExpr {
                        id,
                        expr: Expr::Literal(LiteralValue::String(CelString::from(std::mem::take(
                            &mut select.field,
                        )))),
                    };
                    Expr::Call(CallExpr {
                        func_name: operators::INDEX.to_owned(),
                        target: None,
                        args: vec![operand, field],
                    })
                })
            }
            Expr::Call(call) => {
                if let Some(target) = call.target.as_deref_mut() {
                    let is_namespace = matches!(&target.expr, Expr::Ident(ns)
                        if NAMESPACES.contains(&ns.as_str()) && !self.is_known_ident(ns));
                    if !is_namespace {
                        self.adapt(target);
                    }
                }
                for arg in &mut call.args {
                    self.adapt(arg);
                }
                self.heavy |= HEAVY_FUNCTIONS.contains(&call.func_name.as_str());
                if call.target.is_none() {
                    rewrite_call(id, call, &mut self.problems);
                } else {
                    rewrite_member_call(id, call);
                }
                None
            }
            Expr::List(list) => {
                for element in &mut list.elements {
                    self.adapt(element);
                }
                None
            }
            Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
                for entry in entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(e) => {
                            self.adapt(&mut e.key);
                            self.adapt(&mut e.value);
                        }
                        EntryExpr::StructField(f) => self.adapt(&mut f.value),
                    }
                }
                None
            }
            Expr::Comprehension(comp) => {
                self.adapt(&mut comp.iter_range);
                self.adapt(&mut comp.accu_init);
                let depth = self.bound.len();
                self.bound.push(comp.iter_var.clone());
                self.bound.extend(comp.iter_var2.clone());
                self.bound.push(comp.accu_var.clone());
                // Only the loop body runs once per element; the range, the initial value and
                // the result don't multiply the cost.
                self.nesting += 1;
                if self.nesting == MAX_COMPREHENSION_NESTING + 1 {
                    self.problems.push(format!(
                        "comprehensions (map, filter, all, exists, exists_one) are nested more \
                         than {MAX_COMPREHENSION_NESTING} deep; each level multiplies the work \
                         per event, so split the mapping into several fields or flatten it"
                    ));
                }
                self.adapt(&mut comp.loop_cond);
                self.adapt(&mut comp.loop_step);
                self.nesting -= 1;
                self.adapt(&mut comp.result);
                self.bound.truncate(depth);
                self.heavy = true;
                count_iterations(comp);
                None
            }
            Expr::Literal(_) | Expr::Unspecified => None,
        };
        if let Some(replacement) = replacement {
            expr.expr = replacement;
        }
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|b| b == name)
    }

    fn is_scope_variable(&self, name: &str) -> bool {
        let name = name.strip_prefix('.').unwrap_or(name);
        VARIABLES.contains(&name) && !self.is_bound(name)
    }

    fn is_known_ident(&self, name: &str) -> bool {
        self.is_bound(name) || self.is_scope_variable(name) || TYPE_NAMES.contains(&name)
    }

    /// Whether `expr` is certainly a value rather than part of a qualified name (a type such
    /// as `google.protobuf.Timestamp`): a variable, or an index into something.
    fn is_value(&self, expr: &IdedExpr) -> bool {
        match &expr.expr {
            Expr::Ident(name) => self.is_bound(name) || VARIABLES.contains(&name.as_str()),
            Expr::Call(call) => call.func_name == operators::INDEX,
            _ => false,
        }
    }
}

fn undeclared(name: &str) -> String {
    format!(
        "undeclared reference `{name}` (the variables are {}; a field of the payload is \
         `data.{name}`, a string literal is quoted: '\"{name}\"')",
        VARIABLES.join(", ")
    )
}

/// Replaces an operator by Fiso's function, except where CEL's own provably gives the same
/// result (and is cheaper): `==` and `!=` with a scalar literal operand
/// (`data.type == "premium"`), `in` a literal list of scalars or a literal map. `+` is always
/// Fiso's (it charges the budget for what it concatenates) but in a comprehension's own
/// accumulation, which the interpreter appends in place and the loop's tick already counts.
fn rewrite_call(id: u64, call: &mut CallExpr, problems: &mut Vec<String>) {
    let args = call.args.as_slice();
    let replacement = match (call.func_name.as_str(), args.len()) {
        // Always Fiso's: it charges the budget for what a concatenation makes.
        (operators::ADD, 2) if !is_accumulator(&args[0]) => functions::ADD,
        (operators::SUBSTRACT, 2) => functions::SUB,
        (operators::MULTIPLY, 2) => functions::MUL,
        (operators::DIVIDE, 2) => functions::DIV,
        (operators::EQUALS, 2) if !args.iter().any(is_scalar_literal) => functions::EQ,
        (operators::NOT_EQUALS, 2) if !args.iter().any(is_scalar_literal) => functions::NE,
        (operators::IN, 2) if !is_plain_container(&args[1]) => functions::IN,
        ("greatest" | "least", 0) => {
            problems.push(format!("{}() needs at least one argument", call.func_name));
            return;
        }
        ("greatest", n) => {
            wrap_extreme(id, call, n);
            "math.@max"
        }
        ("least", n) => {
            wrap_extreme(id, call, n);
            "math.@min"
        }
        _ => return,
    };
    call.func_name = replacement.to_owned();
}

/// Functions whose cost grows faster than their input (`distinct` compares every pair, `sort`
/// sorts, `matches` compiles a regular expression per call).
const HEAVY_FUNCTIONS: [&str; 3] = ["distinct", "sort", "matches"];

/// Routes the member calls that can make far more than they are given through Fiso's
/// functions, which charge the budget before they allocate: `s.replace(a, b[, n])`,
/// `l.join([sep])` (a long replacement or separator multiplies its input), `l.distinct()`
/// (charged one iteration per pair it may compare).
fn rewrite_member_call(id: u64, call: &mut CallExpr) {
    let function = match (call.func_name.as_str(), call.args.len()) {
        ("replace", 2 | 3) => functions::REPLACE,
        ("join", 0 | 1) => functions::JOIN,
        ("distinct", 0) => {
            if let Some(target) = call.target.as_deref_mut() {
                let list = std::mem::take(target);
                *target = wrap(id, functions::PAIRS, list);
            }
            return;
        }
        _ => return,
    };
    let Some(target) = call.target.take() else {
        return;
    };
    call.args.insert(0, *target);
    call.func_name = function.to_owned();
}

/// `function(expr)`.
fn wrap(id: u64, function: &str, expr: IdedExpr) -> IdedExpr {
    IdedExpr {
        id,
        expr: Expr::Call(CallExpr {
            func_name: function.to_owned(),
            target: None,
            args: vec![expr],
        }),
    }
}

/// Makes every iteration of `comp` charge one iteration to the budget, through a call of
/// [`functions::TICK`] (which returns its argument) on an expression evaluated exactly once
/// per iteration. For `map` / `filter`, whose shape the interpreter recognises to append in
/// place (a literal condition, `@result + [e]` or `g ? @result + [e] : @result`), that is `g`,
/// else `e`, so the shape is kept; for every other loop it is the loop condition.
fn count_iterations(comp: &mut ComprehensionExpr) {
    let target = counted(comp);
    let inner = std::mem::take(target);
    *target = wrap(inner.id, functions::TICK, inner);
}

/// The shapes of a `map` / `filter` loop step.
enum Append {
    /// `@result + [e]`
    Plain,
    /// `g ? @result + [e] : @result`
    Guarded,
}

fn append_shape(comp: &ComprehensionExpr) -> Option<Append> {
    let accu = comp.accu_var.as_str();
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if name == accu);
    let appends = |e: &IdedExpr| match &e.expr {
        Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => {
            matches!(call.args.as_slice(), [lhs, rhs] if is_accu(lhs)
                && matches!(&rhs.expr, Expr::List(l) if l.elements.len() == 1))
        }
        _ => false,
    };
    if !is_accu(&comp.result) || !matches!(comp.loop_cond.expr, Expr::Literal(_)) {
        return None;
    }
    match &comp.loop_step.expr {
        Expr::Call(step) if step.func_name == operators::CONDITIONAL && step.target.is_none() => {
            match step.args.as_slice() {
                [_, then, otherwise] if is_accu(otherwise) && appends(then) => {
                    Some(Append::Guarded)
                }
                _ => None,
            }
        }
        _ if appends(&comp.loop_step) => Some(Append::Plain),
        _ => None,
    }
}

/// The expression of `comp` evaluated once per iteration (see [`count_iterations`]).
fn counted(comp: &mut ComprehensionExpr) -> &mut IdedExpr {
    let shape = append_shape(comp);
    let step = match (&mut comp.loop_step.expr, shape) {
        (Expr::Call(step), Some(Append::Guarded)) => return &mut step.args[0],
        (Expr::Call(step), Some(Append::Plain)) => step,
        _ => return &mut comp.loop_cond,
    };
    match &mut step.args[1].expr {
        Expr::List(list) => &mut list.elements[0],
        _ => &mut comp.loop_cond,
    }
}

/// The accumulator of a comprehension (`@result`, a name CEL source cannot spell): its `+` is
/// the interpreter's in-place append, charged per iteration already.
fn is_accumulator(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, Expr::Ident(name) if name.starts_with('@'))
}

/// A scalar literal: its own equality is symmetric with every value, lists and maps included.
fn is_scalar_literal(expr: &IdedExpr) -> bool {
    matches!(expr.expr, Expr::Literal(_))
}

/// A map literal (`in` looks keys up), or a list literal of scalar literals (`in` compares
/// them with their own symmetric equality).
fn is_plain_container(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Map(_) => true,
        Expr::List(list) => list.elements.iter().all(is_scalar_literal),
        _ => false,
    }
}

/// `math.@max` / `math.@min` take one number, two numbers, or a list: as `math.greatest`
/// expands, more than two arguments become a list.
fn wrap_extreme(id: u64, call: &mut CallExpr, n: usize) {
    if n > 2 {
        let elements = std::mem::take(&mut call.args);
        call.args = vec![IdedExpr {
            id,
            expr: Expr::List(ListExpr::new(elements)),
        }];
    }
}

#[cfg(test)]
mod tests;
