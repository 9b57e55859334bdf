//! The one CEL environment of the process: the standard library, the `strings`, `math`,
//! `lists` and `encoders` extensions (as upstream Fiso's) and Fiso's own `functions`,
//! declared once because building it registers every function and costs tens of microseconds.
//! Nothing flow-specific lives in it, so all flows share it and its root [`Context`]; per
//! evaluation only a child context is made. Also how evaluation errors read.

use std::sync::{Arc, LazyLock};

use cel::{extensions, Context, Env, ExecutionError, Value};
use serde_json::Value as Json;

use crate::cel::budget::{Account, Budget};
use crate::cel::functions;
use crate::cel::value::val_to_json;

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

pub(crate) static ROOT: LazyLock<Context<'static, 'static>> =
    LazyLock::new(|| Context::with_env(Arc::clone(&ENV)));

/// Why an expression failed for an event: a missing field, a wrong type, a result with no
/// JSON form, ...
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub(crate) String);

impl EvalError {
    /// Whether the evaluation ran out of its [`Budget`]: the event's cost, whichever
    /// expression hit it, so a `TRANSFORM_FAILED`.
    pub fn exceeded_budget(&self) -> bool {
        self.0.starts_with(crate::cel::budget::EXCEEDED)
    }

    #[cfg(test)]
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EvalError(message.into())
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
pub(crate) fn describe(error: &ExecutionError) -> String {
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
