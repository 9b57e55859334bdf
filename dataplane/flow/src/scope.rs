//! The CEL scope of one event: the variables `data`, `id`, `source`, `type`, `subject` and
//! `time`, the same for `transform.fields`, `cloudevents.*` and (later) Temporal `params`.
//!
//! Building a CEL environment registers every function and costs tens of microseconds, so it
//! happens once per process: one [`Env`] (the standard library; the `strings`, `math` and
//! `encoders` extensions, as upstream Fiso's; `lists`; Fiso's own functions below) and one
//! root [`Context`] over it. Nothing flow-specific lives in them, so all flows share them. Per
//! evaluation only a child context is made, which resolves the six variables straight from
//! the [`InputEvent`] without copying it (see [`JsonRef`](crate::cel_value::JsonRef)).
//!
//! What `cel` 0.15 lacks and Fiso adds (see [`expr`](crate::expr) for how calls reach them):
//! `int` / `double` mixed in `+ - * /`, and `==`, `!=`, `in` between lists or maps of different
//! implementations. `upperAscii()`, `lowerAscii()`, `math.greatest` / `math.least` come from
//! the extensions; `greatest(..)` / `least(..)` are accepted as short forms.

use std::sync::{Arc, LazyLock};

use cel::common::types::{CelNull, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{extensions, Context, Env, ExecutionError, Value};
use serde_json::Value as Json;

use crate::budget::{Account, Budget};
use crate::cel_value::{json_to_val, val_to_json};
use crate::expr::{CompiledExpr, Path, Root};
use crate::InputEvent;

/// The variables of every scope, in the order error messages list them.
pub(crate) const VARIABLES: [&str; 6] = ["data", "id", "source", "type", "subject", "time"];

pub(crate) static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    let added = env
        .add_extension(extensions::strings)
        .and_then(|()| env.add_extension(extensions::math))
        .and_then(|()| env.add_extension(extensions::lists))
        .and_then(|()| env.add_extension(extensions::encoders))
        .and_then(|()| functions::register(&mut env));
    // The declarations are fixed at build time; a clash is a bug caught by every test.
    if let Err(e) = added {
        panic!("the CEL environment is inconsistent: {e}");
    }
    Arc::new(env)
});

static ROOT: LazyLock<Context<'static, 'static>> =
    LazyLock::new(|| Context::with_env(Arc::clone(&ENV)));

/// Why an expression failed for an event: a missing field, a wrong type, a result with no
/// JSON form, ...
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(String);

impl EvalError {
    /// Whether the evaluation ran out of its [`Budget`]: the event's cost, whichever
    /// expression hit it, so a `TRANSFORM_FAILED`.
    pub fn exceeded_budget(&self) -> bool {
        self.0.starts_with(crate::budget::EXCEEDED)
    }

    #[cfg(test)]
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EvalError(message.into())
    }
}

/// The variables of one event, borrowed from it, and what its evaluations may still spend.
pub struct Scope<'a> {
    input: &'a InputEvent,
    vars: Variables<'a>,
    account: Account,
}

#[derive(Debug)]
struct Variables<'a> {
    data: Box<dyn Val + 'a>,
    id: CelString<'a>,
    source: CelString<'a>,
    type_: CelString<'a>,
    subject: Option<CelString<'a>>,
    time: CelString<'a>,
}

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &dyn Val = match variable {
            "data" => self.data.as_ref(),
            "id" => &self.id,
            "source" => &self.source,
            "type" => &self.type_,
            "subject" => match &self.subject {
                Some(subject) => subject,
                None => &CelNull,
            },
            "time" => &self.time,
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

impl<'a> Scope<'a> {
    /// The scope of `input` with the default [`Budget`].
    pub fn new(input: &'a InputEvent) -> Self {
        Scope::with_budget(input, Budget::DEFAULT)
    }

    /// The scope of `input`, whose evaluations together may spend `budget`.
    pub fn with_budget(input: &'a InputEvent, budget: Budget) -> Self {
        Scope {
            input,
            account: Account::new(budget),
            vars: Variables {
                data: json_to_val(input.data()),
                id: CelString::from(input.id()),
                source: CelString::from(input.source()),
                type_: CelString::from(input.type_()),
                subject: input.subject().map(CelString::from),
                time: CelString::from(input.time_text()),
            },
        }
    }

    /// The event this scope reads.
    pub fn input(&self) -> &'a InputEvent {
        self.input
    }

    /// Evaluates `expr` to JSON.
    pub fn eval(&self, expr: &CompiledExpr) -> Result<Json, EvalError> {
        if let Some(value) = expr.constant() {
            return Ok(value.clone());
        }
        if let Some(value) = self.read_path(expr) {
            return Ok(value);
        }
        self.eval_with(expr, |val| val_to_json(val).map_err(|e| e.to_string()))
    }

    /// The value of a plain field mapping whose field exists: the JSON CEL would produce,
    /// without running it.
    pub(crate) fn read_path(&self, expr: &CompiledExpr) -> Option<Json> {
        expr.path().and_then(|path| self.read(path))
    }

    fn read(&self, path: &Path) -> Option<Json> {
        let text = |s: &str| Some(Json::String(s.to_owned()));
        match path.root {
            Root::Data => {
                let mut value = self.input.data();
                for key in &path.keys {
                    value = value.as_object()?.get(key)?;
                }
                Some(value.clone())
            }
            Root::Id => text(self.input.id()),
            Root::Source => text(self.input.source()),
            Root::Type => text(self.input.type_()),
            Root::Subject => Some(
                self.input
                    .subject()
                    .map_or(Json::Null, |s| Json::String(s.to_owned())),
            ),
            Root::Time => text(self.input.time_text()),
        }
    }

    /// Evaluates `expr` and hands the CEL result to `f`, which must not keep it: it borrows
    /// the scope. Both run within the scope's budget.
    pub(crate) fn eval_with<R>(
        &self,
        expr: &CompiledExpr,
        f: impl FnOnce(&dyn Val) -> Result<R, String>,
    ) -> Result<R, EvalError> {
        self.account
            .run(|| {
                let root: &Context<'_, '_> = &ROOT;
                let mut ctx = root.new_inner_scope();
                ctx.set_variable_resolver(&self.vars);
                let value = Value::resolve_val(expr.ast(), &ctx).map_err(|e| describe(&e))?;
                f(value.as_ref())
            })
            .map_err(EvalError)
    }
}

/// The value of an expression that reads no variable, computed within `budget`.
pub(crate) fn eval_constant(ast: &cel::IdedExpr, budget: Budget) -> Result<Json, EvalError> {
    Account::new(budget)
        .run(|| {
            let value = Value::resolve_val(ast, &ROOT).map_err(|e| describe(&e))?;
            val_to_json(value.as_ref()).map_err(|e| e.to_string())
        })
        .map_err(EvalError)
}

/// `cel`'s messages, in the lowercase style of the rest of Fiso's.
fn describe(error: &ExecutionError) -> String {
    match error {
        ExecutionError::NoSuchKey(key) => format!("no such key: {key}"),
        ExecutionError::UndeclaredReference(name) => format!("undeclared reference `{name}`"),
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "remainder by zero".to_owned(),
        // Said the way Fiso's own operators say it, see `functions`.
        ExecutionError::UnsupportedBinaryOperator(op, lhs, rhs) => {
            let symbol = match *op {
                "add" => "_+_",
                "sub" => "_-_",
                "mul" => "_*_",
                "div" => "_/_",
                "rem" => "_%_",
                other => other,
            };
            ExecutionError::no_such_overload(
                symbol,
                vec![type_name(lhs).to_owned(), type_name(rhs).to_owned()],
            )
            .to_string()
        }
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

/// CEL's name of the type of `value`.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Null => "null_type",
        Value::Function(..) | Value::Opaque(_) | Value::Struct(_) => "dyn",
    }
}

/// Functions the rewrites of [`expr`](crate::expr) call instead of CEL's operators. Their
/// names start with `@`, which no CEL identifier can, so expressions cannot call them
/// directly.
pub(crate) mod functions {
    use cel::common::types::{
        CelBool, CelBytes, CelDouble, CelInt, CelString, CelUInt, Kind, DYN_TYPE,
    };
    use cel::common::value::{CowVal, Val};
    use cel::{DeclarationError, Env, ExecutionError, Value};

    use crate::budget::{self, Resource};
    use crate::json_val::deep_equals;

    pub(crate) const ADD: &str = "@fiso_add";
    pub(crate) const SUB: &str = "@fiso_sub";
    pub(crate) const MUL: &str = "@fiso_mul";
    pub(crate) const DIV: &str = "@fiso_div";
    pub(crate) const EQ: &str = "@fiso_eq";
    pub(crate) const NE: &str = "@fiso_ne";
    pub(crate) const IN: &str = "@fiso_in";
    /// Charges one comprehension iteration; returns its argument.
    pub(crate) const TICK: &str = "@fiso_tick";
    /// Charges the pairs `distinct` may compare; returns its argument.
    pub(crate) const PAIRS: &str = "@fiso_pairs";
    /// `s.replace(old, new[, n])`, charged before it allocates.
    pub(crate) const REPLACE: &str = "@fiso_replace";
    /// `list.join([separator])`, charged before it allocates.
    pub(crate) const JOIN: &str = "@fiso_join";

    pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
        let table: [(&str, cel::common::functions::Function); 7] = [
            (ADD, add),
            (SUB, sub),
            (MUL, mul),
            (DIV, div),
            (EQ, eq),
            (NE, ne),
            (IN, contains),
        ];
        for (name, function) in table {
            env.add_overload(name, name, vec![DYN_TYPE, DYN_TYPE], function)?;
        }
        let charged: [(&str, usize, cel::common::functions::Function); 6] = [
            (TICK, 1, tick),
            (PAIRS, 1, pairs),
            (REPLACE, 3, replace),
            (REPLACE, 4, replace),
            (JOIN, 1, join),
            (JOIN, 2, join),
        ];
        for (name, arity, function) in charged {
            let id = format!("{name}/{arity}");
            env.add_overload(name, &id, (0..arity).map(|_| DYN_TYPE).collect(), function)?;
        }
        Ok(())
    }

    fn over_budget(message: String) -> ExecutionError {
        ExecutionError::function_error("budget", message)
    }

    fn charge(resource: Resource, amount: usize) -> Result<(), ExecutionError> {
        budget::charge(resource, u64::try_from(amount).unwrap_or(u64::MAX)).map_err(over_budget)
    }

    fn tick<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        charge(Resource::Iterations, 1)?;
        args.pop()
            .ok_or_else(|| ExecutionError::invalid_argument_count(1, 0))
    }

    fn pairs<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let list = args
            .pop()
            .ok_or_else(|| ExecutionError::invalid_argument_count(1, 0))?;
        let n = list.as_sizer().map_or(0, |s| {
            usize::try_from(*s.size().inner()).unwrap_or(usize::MAX)
        });
        charge(
            Resource::Iterations,
            n.saturating_mul(n.saturating_sub(1)) / 2,
        )?;
        Ok(list)
    }

    fn string<'a>(
        function: &str,
        val: &'a dyn Val,
        args: &[CowVal<'_, '_>],
    ) -> Result<&'a str, ExecutionError> {
        match val.downcast_ref::<CelString>() {
            Some(s) => Ok(s.inner()),
            None => Err(ExecutionError::no_such_overload(
                function,
                args.iter()
                    .map(|a| a.get_type().name().to_owned())
                    .collect(),
            )),
        }
    }

    fn replace<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let (text, old, new) = match args.as_slice() {
            [t, o, n] | [t, o, n, _] => (
                string("replace", t.as_ref(), &args)?,
                string("replace", o.as_ref(), &args)?,
                string("replace", n.as_ref(), &args)?,
            ),
            _ => return Err(ExecutionError::invalid_argument_count(3, args.len())),
        };
        // cel-go: a negative count replaces every occurrence.
        let limit = match args.get(3) {
            None => None,
            Some(n) => match n.downcast_ref::<CelInt>() {
                Some(n) => usize::try_from(*n.inner()).ok(),
                None => {
                    return Err(ExecutionError::no_such_overload(
                        "replace",
                        args.iter()
                            .map(|a| a.get_type().name().to_owned())
                            .collect(),
                    ))
                }
            },
        };
        let occurrences = if old.is_empty() {
            text.chars().count() + 1
        } else {
            text.matches(old).count()
        };
        let replaced = limit.map_or(occurrences, |n| n.min(occurrences));
        charge(
            Resource::Bytes,
            text.len()
                .saturating_add(replaced.saturating_mul(new.len())),
        )?;
        let result = match limit {
            Some(n) => text.replacen(old, new, n),
            None => text.replace(old, new),
        };
        Ok(CowVal::owned(CelString::from(result)))
    }

    fn join<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let separator = match args.get(1) {
            Some(sep) => string("join", sep.as_ref(), &args)?,
            None => "",
        };
        let list = args
            .first()
            .ok_or_else(|| ExecutionError::invalid_argument_count(1, 0))?;
        let items = list.as_iterable().ok_or_else(|| {
            ExecutionError::no_such_overload(
                "join",
                args.iter()
                    .map(|a| a.get_type().name().to_owned())
                    .collect(),
            )
        })?;
        let mut parts = Vec::new();
        let mut iter = items.iter();
        while let Some(item) = iter.next() {
            match item.downcast_ref::<CelString>() {
                Some(s) => parts.push(s.inner()),
                None => {
                    return Err(ExecutionError::function_error(
                        "join",
                        format!("list contains a {}, not a string", item.get_type().name()),
                    ))
                }
            }
        }
        let length = parts
            .iter()
            .map(|p| p.len())
            .fold(0usize, usize::saturating_add);
        let separators = parts
            .len()
            .saturating_sub(1)
            .saturating_mul(separator.len());
        charge(Resource::Bytes, length.saturating_add(separators))?;
        Ok(CowVal::owned(CelString::from(parts.join(separator))))
    }

    /// What a `+` of strings, bytes or lists makes: charged before it is built.
    fn concatenation(lhs: &dyn Val, rhs: &dyn Val) -> Option<(Resource, usize)> {
        let size = |val: &dyn Val| -> Option<(Resource, usize)> {
            if let Some(s) = val.downcast_ref::<CelString>() {
                Some((Resource::Bytes, s.inner().len()))
            } else if let Some(b) = val.downcast_ref::<CelBytes>() {
                Some((Resource::Bytes, b.inner().len()))
            } else if val.get_type().kind() == Kind::List {
                let n = val.as_sizer()?.size();
                Some((
                    Resource::Elements,
                    usize::try_from(*n.inner()).unwrap_or(usize::MAX),
                ))
            } else {
                None
            }
        };
        match (size(lhs)?, size(rhs)?) {
            ((a, x), (b, y)) if a == b => Some((a, x.saturating_add(y))),
            _ => None,
        }
    }

    #[derive(Clone, Copy)]
    enum Op {
        Add,
        Sub,
        Mul,
        Div,
    }

    impl Op {
        fn symbol(self) -> &'static str {
            match self {
                Op::Add => "_+_",
                Op::Sub => "_-_",
                Op::Mul => "_*_",
                Op::Div => "_/_",
            }
        }
    }

    #[derive(Clone, Copy)]
    enum Num {
        Int(i64),
        UInt(u64),
        Double(f64),
    }

    fn num(val: &dyn Val) -> Option<Num> {
        if let Some(i) = val.downcast_ref::<CelInt>() {
            Some(Num::Int(*i.inner()))
        } else if let Some(u) = val.downcast_ref::<CelUInt>() {
            Some(Num::UInt(*u.inner()))
        } else {
            val.downcast_ref::<CelDouble>()
                .map(|d| Num::Double(*d.inner()))
        }
    }

    fn add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        arithmetic(Op::Add, args)
    }

    fn sub<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        arithmetic(Op::Sub, args)
    }

    fn mul<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        arithmetic(Op::Mul, args)
    }

    fn div<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        arithmetic(Op::Div, args)
    }

    fn eq<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let [a, b] = two(&args)?;
        Ok(CowVal::owned(CelBool::from(deep_equals(a, b))))
    }

    fn ne<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let [a, b] = two(&args)?;
        Ok(CowVal::owned(CelBool::from(!deep_equals(a, b))))
    }

    /// `item in container`, comparing list elements as `==` does.
    fn contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let [item, container] = two(&args)?;
        let overload = || {
            ExecutionError::no_such_overload(
                "@in",
                vec![
                    item.get_type().name().to_owned(),
                    container.get_type().name().to_owned(),
                ],
            )
        };
        if container.get_type().kind() == Kind::List {
            if let Some(items) = container.as_iterable() {
                let mut items = items.iter();
                while let Some(candidate) = items.next() {
                    if deep_equals(candidate, item) {
                        return Ok(CowVal::owned(CelBool::from(true)));
                    }
                }
                return Ok(CowVal::owned(CelBool::from(false)));
            }
        }
        match container
            .as_container()
            .ok_or_else(overload)?
            .contains(item)
        {
            Ok(found) => Ok(CowVal::owned(CelBool::from(found))),
            Err(
                ExecutionError::NoSuchOverload(_)
                | ExecutionError::ValuesNotComparable(..)
                | ExecutionError::UnsupportedKeyType(_)
                | ExecutionError::UnexpectedType { .. },
            ) => Err(overload()),
            Err(other) => Err(other),
        }
    }

    fn two<'a, 'v>(args: &'a [CowVal<'_, 'v>]) -> Result<[&'a (dyn Val + 'v); 2], ExecutionError> {
        match args {
            [a, b] => Ok([a.as_ref(), b.as_ref()]),
            _ => Err(ExecutionError::invalid_argument_count(2, args.len())),
        }
    }

    fn arithmetic<'b, 'v>(
        op: Op,
        args: Vec<CowVal<'b, 'v>>,
    ) -> Result<CowVal<'b, 'v>, ExecutionError> {
        let [lhs, rhs] = two(&args)?;
        if let (Op::Add, Some((resource, size))) = (op, concatenation(lhs, rhs)) {
            charge(resource, size)?;
        }
        if let (Some(a), Some(b)) = (num(lhs), num(rhs)) {
            if let Some(result) = mixed(op, a, b, lhs, rhs)? {
                return Ok(result);
            }
        }
        // Not a mix of number types: CEL's own operator, with CEL's own errors.
        let overload = || {
            ExecutionError::no_such_overload(
                op.symbol(),
                vec![
                    lhs.get_type().name().to_owned(),
                    rhs.get_type().name().to_owned(),
                ],
            )
        };
        let result = match op {
            Op::Add => lhs.as_adder().ok_or_else(overload)?.add(rhs),
            Op::Sub => lhs.as_subtractor().ok_or_else(overload)?.sub(rhs),
            Op::Mul => lhs.as_multiplier().ok_or_else(overload)?.mul(rhs),
            Op::Div => lhs.as_divider().ok_or_else(overload)?.div(rhs),
        };
        match result {
            Ok(value) => Ok(CowVal::Owned(value.into_owned())),
            Err(ExecutionError::UnsupportedBinaryOperator(..)) => Err(overload()),
            Err(other) => Err(other),
        }
    }

    /// `int`/`uint` with `double` computes in `double`; `int` with `uint` computes exactly
    /// and yields an `int` when the result fits, else a `uint`. Same-type operands are left to
    /// CEL (`None`).
    fn mixed<'b, 'v>(
        op: Op,
        a: Num,
        b: Num,
        lhs: &dyn Val,
        rhs: &dyn Val,
    ) -> Result<Option<CowVal<'b, 'v>>, ExecutionError> {
        let as_f64 = |n: Num| match n {
            Num::Int(i) => i as f64,
            Num::UInt(u) => u as f64,
            Num::Double(d) => d,
        };
        let as_i128 = |n: Num| match n {
            Num::Int(i) => i128::from(i),
            Num::UInt(u) => i128::from(u),
            Num::Double(_) => 0,
        };
        match (a, b) {
            (Num::Int(_), Num::Int(_))
            | (Num::UInt(_), Num::UInt(_))
            | (Num::Double(_), Num::Double(_)) => Ok(None),
            (Num::Double(_), _) | (_, Num::Double(_)) => {
                let (x, y) = (as_f64(a), as_f64(b));
                let result = match op {
                    Op::Add => x + y,
                    Op::Sub => x - y,
                    Op::Mul => x * y,
                    Op::Div => x / y,
                };
                Ok(Some(CowVal::owned(CelDouble::from(result))))
            }
            _ => {
                let (x, y) = (as_i128(a), as_i128(b));
                let result = match op {
                    Op::Add => x.checked_add(y),
                    Op::Sub => x.checked_sub(y),
                    Op::Mul => x.checked_mul(y),
                    Op::Div if y == 0 => {
                        return Err(ExecutionError::DivisionByZero(value_of(lhs)));
                    }
                    Op::Div => x.checked_div(y),
                };
                let overflow =
                    || ExecutionError::Overflow(op.symbol(), value_of(lhs), value_of(rhs));
                let result = result.ok_or_else(overflow)?;
                if let Ok(i) = i64::try_from(result) {
                    Ok(Some(CowVal::owned(CelInt::from(i))))
                } else {
                    let u = u64::try_from(result).map_err(|_| overflow())?;
                    Ok(Some(CowVal::owned(CelUInt::from(u))))
                }
            }
        }
    }

    fn value_of(val: &dyn Val) -> Value {
        Value::try_from(val).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowDefaults;
    use serde_json::json;

    fn input(data: Json) -> InputEvent {
        let flow = FlowDefaults::new("test");
        let at = chrono::DateTime::parse_from_rfc3339("2026-02-06T22:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        InputEvent::from_json(data, flow.event().with_id("evt-1").received_at(at)).expect("input")
    }

    fn eval(expr: &str, data: Json) -> Result<Json, String> {
        let event = input(data);
        let compiled = CompiledExpr::compile(expr)?;
        let result = Scope::new(&event).eval(&compiled);
        result.map_err(|e| e.to_string())
    }

    #[test]
    fn the_six_variables() {
        let data = json!({"k": 1});
        assert_eq!(eval("data", data.clone()), Ok(data.clone()));
        assert_eq!(eval("id", data.clone()), Ok(json!("evt-1")));
        assert_eq!(eval("source", data.clone()), Ok(json!("fiso-flow/test")));
        assert_eq!(eval("type", data.clone()), Ok(json!("fiso.event")));
        assert_eq!(eval("subject", data.clone()), Ok(json!(null)));
        assert_eq!(
            eval("time", data.clone()),
            Ok(json!("2026-02-06T22:00:00Z"))
        );
        assert_eq!(
            eval("timestamp(time) > timestamp('2026-01-01T00:00:00Z')", data),
            Ok(json!(true))
        );
    }

    #[test]
    fn mixed_int_and_double_arithmetic() {
        let data = json!({"price": 10.5, "quantity": 3, "a": 2.5, "amount": 99.99, "n": 7, "big": u64::MAX});
        assert_eq!(
            eval("data.price * data.quantity", data.clone()),
            Ok(json!(31.5))
        );
        assert_eq!(
            eval("data.quantity * data.price", data.clone()),
            Ok(json!(31.5))
        );
        assert_eq!(
            eval("data.price * data.quantity * 0.9", data.clone()),
            Ok(json!(28.35))
        );
        assert_eq!(eval("data.a + 1", data.clone()), Ok(json!(3.5)));
        assert_eq!(eval("1 + data.a", data.clone()), Ok(json!(3.5)));
        assert_eq!(eval("data.a - 1", data.clone()), Ok(json!(1.5)));
        assert_eq!(eval("data.n / 2.0", data.clone()), Ok(json!(3.5)));
        assert_eq!(eval("data.amount > 1000", data.clone()), Ok(json!(false)));
        assert_eq!(eval("data.amount < 100", data.clone()), Ok(json!(true)));
        assert_eq!(eval("data.quantity == 3.0", data.clone()), Ok(json!(true)));
        // Same-type arithmetic keeps CEL's semantics.
        assert_eq!(eval("data.n / 2", data.clone()), Ok(json!(3)));
        assert_eq!(eval("data.n + 1", data.clone()), Ok(json!(8)));
        assert_eq!(eval("data.big - 1", data.clone()), Ok(json!(u64::MAX - 1)));
        assert_eq!(eval("data.big - data.big", data.clone()), Ok(json!(0)));
        assert_eq!(
            eval("data.big + 1", data.clone()).map_err(|e| e.contains("overflow")),
            Err(true)
        );
        assert_eq!(
            eval("data.n / 0", data.clone()),
            Err("division by zero".to_owned())
        );
        assert_eq!(eval("'a' + 'b'", data.clone()), Ok(json!("ab")));
        assert_eq!(eval("[1] + [2.5]", data.clone()), Ok(json!([1, 2.5])));
        assert_eq!(
            eval("'a' + data.n", data),
            Err("found no matching overload for '_+_' applied to '(string, int)'".to_owned())
        );
    }

    #[test]
    fn functions_users_expect() {
        let data = json!({"s": "MiXed", "xs": [3, 1.5, 2],
                          "items": [{"price": 10.5, "qty": 2}, {"price": 2, "qty": 1}]});
        let cases = [
            ("data.s.upperAscii()", json!("MIXED")),
            ("data.s.lowerAscii()", json!("mixed")),
            ("size(data.s)", json!(5)),
            (
                "data.s.contains('Xe') && data.s.startsWith('Mi') && data.s.endsWith('ed')",
                json!(true),
            ),
            ("data.s.matches('^M.*d$')", json!(true)),
            ("string(42) + string(1.5)", json!("421.5")),
            ("int('7') + int(2.9)", json!(9)),
            ("double(3)", json!(3.0)),
            ("has(data.s) && !has(data.nope)", json!(true)),
            ("least(3, 1.5, 2)", json!(1.5)),
            ("greatest(3, 1.5)", json!(3)),
            ("greatest(data.xs)", json!(3)),
            ("math.least(data.xs[0], data.xs[1])", json!(1.5)),
            ("math.greatest(1, 2, 3)", json!(3)),
            ("data.s.replace('X', 'x')", json!("Mixed")),
            ("'a,b'.split(',')", json!(["a", "b"])),
            ("data.xs.map(x, x * 2)", json!([6, 3.0, 4])),
            ("data.items.map(i, i.price * i.qty)", json!([21.0, 2])),
            ("data.items.filter(i, i.qty > 1).size()", json!(1)),
            ("base64.encode(b'hi')", json!("aGk=")),
        ];
        for (expr, expected) in cases {
            assert_eq!(eval(expr, data.clone()), Ok(expected), "{expr}");
        }
    }

    #[test]
    fn equality_of_lists_and_maps_is_symmetric() {
        let data = json!({"tags": ["a", "b"], "o": {"k": 1}});
        for expr in [
            "data.tags == ['a', 'b']",
            "['a', 'b'] == data.tags",
            "{'k': 1} == data.o",
            "data.o == {'k': 1.0}",
            "['a'] != data.tags",
            "data.o in [{'k': 1}]",
            "{'k': 1} in [data.o]",
            "'a' in data.tags",
            "'k' in data.o",
            "!('z' in data.o)",
        ] {
            assert_eq!(eval(expr, data.clone()), Ok(json!(true)), "{expr}");
        }
    }

    #[test]
    fn missing_fields_are_errors_unless_guarded() {
        let data = json!({"a": {"b": 1}});
        assert_eq!(
            eval("data.nope", data.clone()),
            Err("no such key: nope".to_owned())
        );
        assert_eq!(
            eval("data.a.c", data.clone()),
            Err("no such key: c".to_owned())
        );
        assert_eq!(
            eval("has(data.x) ? data.x : 'none'", data),
            Ok(json!("none"))
        );
    }

    #[test]
    fn field_mappings_read_directly_give_what_cel_gives() {
        let data = json!({"a": {"b": [1, 2.5, "x"], "n": null, "u": u64::MAX, "f": 1.0}, "s": "t"});
        let event = input(data);
        let scope = Scope::new(&event);
        for expr in [
            "data",
            "data.a",
            "data.a.b",
            "data.a.n",
            "data.a.u",
            "data.a.f",
            "data['a']['b']",
            "data.s",
            "id",
            "source",
            "type",
            "subject",
            "time",
            // Paths that don't resolve: CEL reports the error.
            "data.nope",
            "data.a.nope.x",
            "data.s.x",
            "data.a.b.x",
        ] {
            let compiled = CompiledExpr::compile(expr).expect("compiles");
            assert!(compiled.path().is_some(), "{expr}");
            let via_cel =
                scope.eval_with(&compiled, |val| val_to_json(val).map_err(|e| e.to_string()));
            assert_eq!(scope.eval(&compiled), via_cel, "{expr}");
            if let Ok(value) = &via_cel {
                assert_eq!(
                    crate::json::to_string_plain(value).ok(),
                    scope
                        .read(compiled.path().expect("path"))
                        .and_then(|v| crate::json::to_string_plain(&v).ok()),
                    "{expr}"
                );
            }
        }
        assert_eq!(
            scope.eval(&CompiledExpr::compile("data.nope").expect("compiles")),
            Err(EvalError::new("no such key: nope"))
        );
        for not_a_path in [
            "data.a.b[0]",
            "data.s + ''",
            "[1].map(data, data)",
            "time.x",
        ] {
            let compiled = CompiledExpr::compile(not_a_path).expect("compiles");
            assert!(compiled.path().is_none(), "{not_a_path}");
        }
    }

    fn eval_within(expr: &str, data: Json, budget: Budget) -> Result<Json, String> {
        let event = input(data);
        let compiled = CompiledExpr::compile(expr)?;
        let result = Scope::with_budget(&event, budget).eval(&compiled);
        result.map_err(|e| e.to_string())
    }

    fn budget(iterations: u64, elements: u64, bytes: u64) -> Budget {
        Budget {
            iterations,
            elements,
            bytes,
        }
    }

    /// The finding: 2,500 × 2,500 iterations per event took 5–10 s on a worker.
    #[test]
    fn loops_stop_at_the_iteration_budget() {
        let data = json!({"l": (0..2_500).collect::<Vec<_>>()});
        let message = eval("size(data.l.map(x, data.l.map(y, x + y)))", data.clone())
            .expect_err("over budget");
        assert_eq!(
            message,
            "CEL budget exceeded: more than 100000 comprehension iterations for one event \
             (celBudget.iterations)"
        );
        // Every kind of loop is counted, filters' and quantifiers' too.
        for expr in [
            "data.l.filter(x, data.l.exists(y, y == x + 2500))",
            "data.l.all(x, data.l.all(y, y >= 0))",
            "data.l.exists_one(x, data.l.exists_one(y, y == -1))",
            "data.l.exists(x, data.l.exists(y, y < 0)) || true",
        ] {
            assert!(
                eval(expr, data.clone()).is_err_and(|e| e.contains("celBudget.iterations")),
                "{expr}"
            );
        }
        // Within the budget the same loops give CEL's answers.
        let small = json!({"l": [1, 2, 3]});
        assert_eq!(
            eval(
                "data.l.map(x, data.l.filter(y, y > x).size())",
                small.clone()
            ),
            Ok(json!([2, 1, 0]))
        );
        assert_eq!(eval("data.l.all(x, x > 0)", small), Ok(json!(true)));
        // A raised budget lets a loop over the default finish (400 × 400 > 100000).
        let data = json!({"l": (0..400).collect::<Vec<_>>()});
        let expr = "size(data.l.map(x, data.l.map(y, x + y)))";
        assert!(eval(expr, data.clone()).is_err());
        assert_eq!(
            eval_within(expr, data, budget(200_000, 200_000, 1 << 20)),
            Ok(json!(400))
        );
    }

    #[test]
    fn what_strings_and_lists_grow_to_is_charged_before_it_is_made() {
        let data = json!({"s": "x".repeat(1000), "l": ["a", "b", "c"], "n": [1, 1, 2]});
        let tight = budget(1_000, 1_000, 10_000);
        let over = |expr: &str, data: Json| eval_within(expr, data, tight).expect_err(expr);
        // A replacement of every position by a long string multiplies the input.
        assert!(over("data.s.replace('', data.s)", data.clone()).contains("celBudget.bytes"));
        assert!(over(
            "data.l.join(data.s + data.s + data.s + data.s)",
            data.clone()
        )
        .contains("celBudget.bytes"));
        let chain = ["data.s"; 11].join(" + ");
        assert!(over(&chain, data.clone()).contains("celBudget.bytes"));
        // The result is charged as it becomes JSON: a cheap expression, a large output.
        let big_list = json!({"l": (0..2_000).collect::<Vec<_>>()});
        assert!(over("data.l + data.l", big_list.clone()).contains("celBudget.elements"));
        // `distinct` compares every pair it keeps.
        assert!(over("data.l.distinct()", big_list).contains("celBudget.iterations"));
        // Within the budget they behave as CEL's own.
        assert_eq!(
            eval_within("'a-b'.replace('-', '+')", data.clone(), tight),
            Ok(json!("a+b"))
        );
        assert_eq!(
            eval_within("'aaa'.replace('a', 'b', 2)", data.clone(), tight),
            Ok(json!("bba"))
        );
        assert_eq!(
            eval_within("'ab'.replace('', '.')", data.clone(), tight),
            Ok(json!(".a.b."))
        );
        assert_eq!(
            eval_within("data.l.join()", data.clone(), tight),
            Ok(json!("abc"))
        );
        assert_eq!(
            eval_within("data.l.join(', ')", data.clone(), tight),
            Ok(json!("a, b, c"))
        );
        assert_eq!(
            eval_within("data.n.distinct()", data.clone(), tight),
            Ok(json!([1, 2]))
        );
        assert!(eval_within("[1].join()", data, tight).is_err_and(|e| e.contains("not a string")));
    }

    #[test]
    fn constants_are_folded_within_the_budget() {
        let l = format!(
            "[{}]",
            (0..250)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let expr = format!("{l}.map(x, {l}.map(y, {l}.map(z, x + y + z)))");
        let message = CompiledExpr::compile(&expr).expect_err("over budget");
        assert!(
            message.starts_with("always fails: CEL budget exceeded"),
            "{message}"
        );
        let within =
            CompiledExpr::compile_with("[1, 2].map(x, [3, 4].map(y, x * y))", Budget::DEFAULT)
                .expect("compiles");
        assert_eq!(within.constant(), Some(&json!([[3, 4], [6, 8]])));
        assert!(
            CompiledExpr::compile_with("[1, 2, 3].map(x, x)", budget(2, 100, 100))
                .is_err_and(|e| e.contains("celBudget.iterations"))
        );
    }

    #[test]
    fn scopes_are_independent_and_borrow_the_event() {
        let first = input(json!({"n": 1}));
        let second = input(json!({"n": 2}));
        let expr = CompiledExpr::compile("data.n * 10").expect("compiles");
        assert_eq!(Scope::new(&first).eval(&expr), Ok(json!(10)));
        assert_eq!(Scope::new(&second).eval(&expr), Ok(json!(20)));
    }
}
