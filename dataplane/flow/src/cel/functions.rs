//! Functions the rewrites of [`expr`](crate::cel::expr) call instead of CEL's operators. Their
//! names start with `@`, which no CEL identifier can, so expressions cannot call them
//! directly.

use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelString, CelUInt, Kind, DYN_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError, Value};

use crate::cel::budget::{self, Resource};
use crate::cel::json_val::deep_equals;

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

fn arithmetic<'b, 'v>(op: Op, args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
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
            let overflow = || ExecutionError::Overflow(op.symbol(), value_of(lhs), value_of(rhs));
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
