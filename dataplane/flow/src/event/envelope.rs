//! The CloudEvents v1.0 envelope around the transformed payload.
//!
//! Every attribute the config sets (`cloudevents.*`) is a CEL expression evaluated against the
//! ORIGINAL input scope, before the transform, so the metadata describes the source event. An
//! attribute the config leaves alone is carried over from the input event: `id` (the incoming
//! CloudEvent's, or the id the source gave the payload), `source` and `type` (the incoming
//! CloudEvent's, or the flow's defaults `fiso-flow/<flow>` and `fiso.event`), `subject`, `time`
//! and the extensions (`traceparent`, ...). `data` is the transformed payload and
//! `datacontenttype` `application/json`, unless overridden; an input CloudEvent's
//! `datacontenttype` and `dataschema` are kept only when its data passes through unchanged.
//!
//! For compatibility, a value that is a bare identifier-like word (`order.created`,
//! `order-service`) whose root identifiers are not scope variables is taken as a string
//! literal, see [`literal_fallback`]; the config validator warns about it.

use bytes::Bytes;
use fiso_config::flow::CloudEventsConfig;
use serde_json::Value as Json;

use cel::common::types::{CelBytes, CelNull, CelString};
use cel::common::value::Val;

use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::cel::value::val_to_json;
use crate::event::cloudevent::{
    check_absolute_uri, check_text, check_uri_reference, CloudEvent, Data, EventError,
    CORE_ATTRIBUTES,
};
use crate::event::media_type::{self, MediaType};
use crate::event::payload_keys::Fields;
use crate::{FlowError, InputEvent, Scope};

/// `datacontenttype` unless overridden.
pub const DEFAULT_DATACONTENTTYPE: &str = "application/json";

/// The compatibility rule for bare identifier-like `cloudevents.*` values (`order.created`):
/// the validator's own rule, so `fiso validate` and a running flow never disagree.
pub use fiso_config::cel_check::literal_fallback;

/// An attribute override: a literal (the fallback above) or a CEL expression.
#[derive(Debug, Clone)]
enum Attribute {
    Literal(String),
    Expr(CompiledExpr),
}

/// The compiled `cloudevents` overrides of a flow.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    id: Option<Attribute>,
    type_: Option<Attribute>,
    source: Option<Attribute>,
    subject: Option<Attribute>,
    data: Option<Attribute>,
    datacontenttype: Option<Attribute>,
    dataschema: Option<Attribute>,
}

/// The overrides evaluated for one event; `None`: not set, or set to null / empty.
#[derive(Debug, Default)]
pub(crate) struct Overrides {
    id: Option<String>,
    type_: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    /// `subject` is overridden: even to nothing, which drops the input's subject.
    subject_set: bool,
    data: Option<Data>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
}

impl Envelope {
    /// Compiles the overrides, reporting every one that does not compile (paths
    /// `cloudevents.<attribute>`).
    pub fn compile(config: Option<&CloudEventsConfig>) -> Result<Envelope, Vec<FlowError>> {
        Envelope::compile_with(config, Budget::DEFAULT)
    }

    /// [`Envelope::compile`], folding constant attributes within `budget`.
    pub fn compile_with(
        config: Option<&CloudEventsConfig>,
        budget: Budget,
    ) -> Result<Envelope, Vec<FlowError>> {
        let mut envelope = Envelope::default();
        let mut errors = Vec::new();
        for (name, source) in config.into_iter().flat_map(CloudEventsConfig::entries) {
            match compile_attribute(name, source, budget) {
                Ok(attribute) => {
                    let slot = match name {
                        "id" => &mut envelope.id,
                        "type" => &mut envelope.type_,
                        "source" => &mut envelope.source,
                        "subject" => &mut envelope.subject,
                        "data" => &mut envelope.data,
                        "datacontenttype" => &mut envelope.datacontenttype,
                        _ => &mut envelope.dataschema,
                    };
                    *slot = Some(attribute);
                }
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok(envelope)
        } else {
            Err(errors)
        }
    }

    /// Wraps `transformed`, the transform's output for `input`, in a CloudEvent.
    pub fn build(&self, input: &InputEvent, transformed: Json) -> Result<CloudEvent, FlowError> {
        let overrides = self.resolve(&Scope::new(input))?;
        Self::assemble(overrides, input.clone(), Some(transformed))
    }

    /// Whether an override may take long to evaluate ([`CompiledExpr::is_heavy`]).
    pub fn is_heavy(&self) -> bool {
        self.exprs().any(CompiledExpr::is_heavy)
    }

    /// Adds what of `data` the overrides read ([`CompiledExpr::data_fields`]); `false` when one
    /// reads `data` whole.
    pub(crate) fn data_fields(&self, fields: &mut Fields) -> bool {
        self.exprs().all(|e| e.data_fields(fields))
    }

    fn exprs(&self) -> impl Iterator<Item = &CompiledExpr> {
        [
            &self.id,
            &self.type_,
            &self.source,
            &self.subject,
            &self.data,
            &self.datacontenttype,
            &self.dataschema,
        ]
        .into_iter()
        .filter_map(|a| match a {
            Some(Attribute::Expr(e)) => Some(e),
            _ => None,
        })
    }

    /// Whether `data` is overridden, so the envelope does not carry the transform's output.
    pub fn overrides_data(&self) -> bool {
        self.data.is_some()
    }

    pub(crate) fn resolve(&self, scope: &Scope<'_>) -> Result<Overrides, FlowError> {
        let mut overrides = Overrides::default();
        if let Some(attribute) = &self.id {
            overrides.id = Some(required_string("id", attribute, scope)?);
        }
        if let Some(attribute) = &self.type_ {
            overrides.type_ = Some(required_string("type", attribute, scope)?);
        }
        if let Some(attribute) = &self.source {
            overrides.source = Some(required_string("source", attribute, scope)?);
        }
        if let Some(attribute) = &self.subject {
            overrides.subject = optional_string("subject", attribute, scope)?;
            overrides.subject_set = true;
        }
        if let Some(attribute) = &self.data {
            overrides.data = Some(match attribute {
                Attribute::Literal(text) => Data::Json(Json::String(text.clone())),
                Attribute::Expr(expr) => eval_data(expr, scope)?,
            });
        }
        if let Some(attribute) = &self.datacontenttype {
            overrides.datacontenttype = optional_string("datacontenttype", attribute, scope)?;
        }
        if let Some(attribute) = &self.dataschema {
            overrides.dataschema = optional_string("dataschema", attribute, scope)?;
        }
        Ok(overrides)
    }

    /// The event: `overrides` over the attributes of `input`. `transformed` is the transform's
    /// output, `None` for a passthrough, which keeps the input's data and, unless `data` is
    /// overridden, its `datacontenttype` and `dataschema`.
    pub(crate) fn assemble(
        overrides: Overrides,
        input: InputEvent,
        transformed: Option<Json>,
    ) -> Result<CloudEvent, FlowError> {
        let mut event = input.into_event();
        let carried = transformed.is_none() && overrides.data.is_none();
        if let Some(id) = overrides.id {
            event.set_id(id);
        }
        if let Some(source) = overrides.source {
            event.set_source(source);
        }
        if let Some(type_) = overrides.type_ {
            event.set_type(type_);
        }
        if overrides.subject_set {
            event.set_subject(overrides.subject);
        }
        let data = match (overrides.data, transformed) {
            (Some(data), _) => Some(data),
            (None, Some(output)) => Some(Data::Json(output)),
            (None, None) => event.take_data(),
        };
        if carried {
            if let Some(ct) = overrides.datacontenttype {
                event.set_datacontenttype(Some(ct));
            }
            if let Some(schema) = overrides.dataschema {
                event.set_dataschema(Some(schema));
            }
        } else {
            // New data: the input's content attributes described the old.
            let json = data.as_ref().is_some_and(Data::is_json);
            event.set_datacontenttype(
                overrides
                    .datacontenttype
                    .or_else(|| json.then(|| DEFAULT_DATACONTENTTYPE.to_owned())),
            );
            event.set_dataschema(overrides.dataschema);
        }
        let text_type = event
            .datacontenttype()
            .and_then(|ct| MediaType::parse(ct).ok())
            .is_some_and(|ct| !ct.is_json());
        event.set_data(match data {
            Some(Data::Json(Json::String(text))) if text_type => Some(Data::Text(text)),
            other => other,
        });
        event.validate().map_err(wrap_error)?;
        Ok(event)
    }
}

/// A computed attribute that breaks a rule of the spec: the flow's error, not the sender's.
fn wrap_error(e: EventError) -> FlowError {
    let attribute = CORE_ATTRIBUTES
        .into_iter()
        .find(|a| *a == e.attribute)
        .unwrap_or("data");
    FlowError::wrap(attribute, e.message)
}

/// `cloudevents.data`: CEL bytes stay bytes, anything else is JSON.
fn eval_data(expr: &CompiledExpr, scope: &Scope<'_>) -> Result<Data, FlowError> {
    if let Some(json) = scope.known(expr) {
        return Ok(Data::Json(json));
    }
    scope
        .eval_with(expr, |val| match val.downcast_ref::<CelBytes>() {
            Some(bytes) => Ok(Data::Bytes(Bytes::copy_from_slice(bytes.inner()))),
            None => val_to_json(val).map(Data::Json).map_err(|e| e.to_string()),
        })
        .map_err(|e| {
            if e.exceeded_budget() {
                FlowError::Transform {
                    field: "cloudevents.data".to_owned(),
                    message: e.to_string(),
                }
            } else {
                FlowError::wrap("data", e.to_string())
            }
        })
}

fn compile_attribute(
    name: &'static str,
    source: &str,
    budget: Budget,
) -> Result<Attribute, FlowError> {
    let path = || format!("cloudevents.{name}");
    if source.trim().is_empty() {
        return Err(FlowError::compile(path(), "must not be empty"));
    }
    if let Some(literal) = literal_fallback(source) {
        check_constant(name, literal).map_err(|message| FlowError::compile(path(), message))?;
        return Ok(Attribute::Literal(literal.to_owned()));
    }
    let expr = CompiledExpr::compile_with(source, budget)
        .map_err(|message| FlowError::compile(path(), message))?;
    if let Some(Json::String(text)) = expr.constant() {
        check_constant(name, text).map_err(|message| FlowError::compile(path(), message))?;
    }
    Ok(Attribute::Expr(expr))
}

/// A constant attribute obeys, at load and in `fiso validate`, the rule every event would
/// check it against: otherwise each event would fail `CLOUDEVENT_WRAP_FAILED`.
fn check_constant(name: &'static str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return match name {
            "id" | "type" | "source" => Err("must not be empty".to_owned()),
            // Empty optional attributes are unset.
            _ => Ok(()),
        };
    }
    let checked = match name {
        "source" => check_uri_reference(name, text),
        "dataschema" => check_absolute_uri(name, text),
        "datacontenttype" => {
            media_type::check(text).map_err(|e| EventError::new(name, e.to_string()))
        }
        "data" => Ok(()),
        _ => check_text(name, text),
    };
    checked.map_err(|e| e.message)
}

/// A string attribute's value: a string, null, or what a non-string value reads as. Like
/// upstream, a number, bool, timestamp, duration, list or map becomes its string form (JSON
/// text for lists and maps) rather than failing every event; `fiso validate` warns where it can
/// tell. What has no string form (a type) keeps its type name for the error.
enum Text {
    String(String),
    Null,
    Other(String),
}

fn text_of(val: &dyn Val) -> Text {
    if let Some(s) = val.downcast_ref::<CelString>() {
        Text::String(s.inner().to_owned())
    } else if val.downcast_ref::<CelNull>().is_some() {
        Text::Null
    } else {
        match val_to_json(val) {
            Ok(json) => json_text(json),
            Err(_) => Text::Other(val.get_type().name().to_owned()),
        }
    }
}

fn eval_text(
    name: &'static str,
    attribute: &Attribute,
    scope: &Scope<'_>,
) -> Result<Text, FlowError> {
    match attribute {
        Attribute::Literal(text) => Ok(Text::String(text.clone())),
        Attribute::Expr(expr) => match scope.known(expr) {
            Some(json) => Ok(json_text(json)),
            None => scope.eval_with(expr, |val| Ok(text_of(val))).map_err(|e| {
                if e.exceeded_budget() {
                    FlowError::Transform {
                        field: format!("cloudevents.{name}"),
                        message: e.to_string(),
                    }
                } else {
                    FlowError::wrap(name, e.to_string())
                }
            }),
        },
    }
}

/// [`text_of`] for a JSON value (a field read straight from the event, or a CEL result).
fn json_text(json: Json) -> Text {
    match json {
        Json::String(text) => Text::String(text),
        Json::Null => Text::Null,
        other => Text::String(other.to_string()),
    }
}

fn not_a_string(name: &'static str, type_name: &str) -> FlowError {
    FlowError::wrap(
        name,
        format!("must be a string, not {type_name} (convert it with string(...))"),
    )
}

/// `id`, `type` and `source` must be non-empty strings.
fn required_string(
    name: &'static str,
    attribute: &Attribute,
    scope: &Scope<'_>,
) -> Result<String, FlowError> {
    match eval_text(name, attribute, scope)? {
        Text::String(text) if !text.is_empty() => Ok(text),
        Text::String(_) => Err(FlowError::wrap(name, "must not be empty")),
        Text::Null => Err(not_a_string(name, "null")),
        Text::Other(type_name) => Err(not_a_string(name, &type_name)),
    }
}

/// `subject`, `datacontenttype` and `dataschema` may be null or empty: then they are unset.
fn optional_string(
    name: &'static str,
    attribute: &Attribute,
    scope: &Scope<'_>,
) -> Result<Option<String>, FlowError> {
    match eval_text(name, attribute, scope)? {
        Text::String(text) if !text.is_empty() => Ok(Some(text)),
        Text::String(_) | Text::Null => Ok(None),
        Text::Other(type_name) => Err(not_a_string(name, &type_name)),
    }
}

#[cfg(test)]
mod tests;
