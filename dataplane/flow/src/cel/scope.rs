//! The CEL scope of one event: the variables `data`, `id`, `source`, `type`, `subject` and
//! `time`, the same for `transform.fields`, `cloudevents.*`, a Kafka sink's `key` and Temporal
//! `params`.
//!
//! A scope borrows its event: per evaluation only a child of the process-wide root context
//! ([`env`](crate::cel::env)) is made, which resolves the six variables straight from the
//! [`InputEvent`] without copying it (see [`JsonRef`](crate::cel::value::JsonRef)). Plain
//! field mappings are read without running CEL at all. Every evaluation of one scope draws on
//! one [`Budget`].

use cel::common::types::{CelBytes, CelNull, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Value};
use serde_json::Value as Json;

use crate::cel::budget::{Account, Budget};
use crate::cel::env::{describe, EvalError, ROOT};
use crate::cel::expr::{CompiledExpr, Path, Root};
use crate::cel::value::{json_to_val, json_to_value, val_to_json};
use crate::event::carried_json::CarriedJson;
use crate::{Data, InputEvent};

/// The variables of one event, borrowed from it, and what its evaluations may still spend.
pub struct Scope<'a> {
    input: &'a InputEvent,
    vars: Variables<'a>,
    account: Account,
}

#[derive(Debug)]
struct Variables<'a> {
    /// `time`, whose text is made only for an expression that reads it.
    input: &'a InputEvent,
    data: Box<dyn Val + 'a>,
    /// Data carried as text, parsed only when an expression reads it: the flow's analysis
    /// carries only payloads no expression reads, so this is a safety net, not a path.
    carried: Option<&'a CarriedJson>,
    id: CelString<'a>,
    source: CelString<'a>,
    type_: CelString<'a>,
    subject: Option<CelString<'a>>,
}

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &dyn Val = match variable {
            "data" => match self.carried {
                Some(json) => {
                    let value = Box::<dyn Val>::try_from(json_to_value(&json.to_json())).ok()?;
                    return Some(CowVal::Owned(value));
                }
                None => self.data.as_ref(),
            },
            "id" => &self.id,
            "source" => &self.source,
            "type" => &self.type_,
            "subject" => match &self.subject {
                Some(subject) => subject,
                None => &CelNull,
            },
            "time" => {
                return Some(CowVal::Owned(Box::new(CelString::from(
                    self.input.time_text(),
                ))))
            }
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

/// `data` as CEL sees it: JSON as JSON, text as a `string`, bytes as `bytes`, no data as
/// `null`.
fn data_to_val(data: Option<&Data>) -> Box<dyn Val + '_> {
    match data {
        None => Box::new(CelNull),
        Some(Data::Json(json)) => json_to_val(json),
        // Read through `Variables::carried`.
        Some(Data::CarriedJson(_)) => Box::new(CelNull),
        Some(Data::Text(text)) => Box::new(CelString::from(text.as_str())),
        Some(Data::Bytes(bytes) | Data::Proto { value: bytes, .. }) => {
            Box::new(CelBytes::from(bytes.as_ref()))
        }
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
                input,
                data: data_to_val(input.data()),
                carried: match input.data() {
                    Some(Data::CarriedJson(json)) => Some(json),
                    _ => None,
                },
                id: CelString::from(input.id()),
                source: CelString::from(input.source()),
                type_: CelString::from(input.type_()),
                subject: input.subject().map(CelString::from),
            },
        }
    }

    /// The event this scope reads.
    pub fn input(&self) -> &'a InputEvent {
        self.input
    }

    /// Evaluates `expr` to JSON.
    pub fn eval(&self, expr: &CompiledExpr) -> Result<Json, EvalError> {
        if let Some(value) = self.known(expr) {
            return Ok(value);
        }
        self.eval_with(expr, |val| val_to_json(val).map_err(|e| e.to_string()))
    }

    /// The JSON CEL would produce, known without running it: a constant's (computed at load),
    /// or a plain field mapping's whose field exists.
    pub(crate) fn known(&self, expr: &CompiledExpr) -> Option<Json> {
        if let Some(value) = expr.constant() {
            return Some(value.clone());
        }
        expr.path().and_then(|path| self.read(path))
    }

    fn read(&self, path: &Path) -> Option<Json> {
        let text = |s: &str| Some(Json::String(s.to_owned()));
        match path.root {
            Root::Data => match self.input.data() {
                Some(Data::Json(json)) => {
                    let mut value = json;
                    for key in &path.keys {
                        value = value.as_object()?.get(key)?;
                    }
                    Some(value.clone())
                }
                Some(Data::Text(t)) if path.keys.is_empty() => text(t),
                None if path.keys.is_empty() => Some(Json::Null),
                // Bytes and fields of non-objects: CEL says what they are.
                _ => None,
            },
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

#[cfg(test)]
mod tests;
