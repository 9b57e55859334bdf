//! `transform.fields`: an output object with one key per field, each the value of a CEL
//! expression over the input scope.

use indexmap::IndexMap;
use serde_json::{Map, Value as Json};

use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::event::payload_keys::Fields;
use crate::{FlowError, Scope};

/// The compiled `transform.fields` of a flow.
#[derive(Debug, Clone, Default)]
pub struct Transformer {
    /// Output key (literal: `-`, `.` and `:` are just characters) and its expression, in
    /// config order. Empty: the payload passes through unchanged.
    fields: Vec<(String, CompiledExpr)>,
}

impl Transformer {
    /// No transform: the output is the input's `data`.
    pub fn passthrough() -> Self {
        Transformer::default()
    }

    /// Compiles every field, reporting every field that does not compile (paths
    /// `transform.fields.<key>`). No fields at all means passthrough.
    pub fn compile(fields: &IndexMap<String, String>) -> Result<Transformer, Vec<FlowError>> {
        Transformer::compile_with(fields, Budget::DEFAULT)
    }

    /// [`Transformer::compile`], folding constant fields within `budget`.
    pub fn compile_with(
        fields: &IndexMap<String, String>,
        budget: Budget,
    ) -> Result<Transformer, Vec<FlowError>> {
        let mut compiled = Vec::with_capacity(fields.len());
        let mut errors = Vec::new();
        for (key, source) in fields {
            match CompiledExpr::compile_with(source, budget) {
                Ok(expr) => compiled.push((key.clone(), expr)),
                Err(message) => errors.push(FlowError::compile(
                    format!("transform.fields.{key}"),
                    message,
                )),
            }
        }
        if errors.is_empty() {
            Ok(Transformer { fields: compiled })
        } else {
            Err(errors)
        }
    }

    /// Whether a field may take long to evaluate ([`CompiledExpr::is_heavy`]).
    pub fn is_heavy(&self) -> bool {
        self.fields.iter().any(|(_, expr)| expr.is_heavy())
    }

    /// Adds what of `data` the fields read ([`CompiledExpr::data_fields`]); `false` when one
    /// reads `data` whole.
    pub(crate) fn data_fields(&self, fields: &mut Fields) -> bool {
        self.fields.iter().all(|(_, expr)| expr.data_fields(fields))
    }

    pub fn is_passthrough(&self) -> bool {
        self.fields.is_empty()
    }

    /// Output keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| key.as_str())
    }

    /// The output for the event of `scope`: an object with the fields in config order, or a
    /// copy of `data` when there are no fields.
    pub fn transform(&self, scope: &Scope<'_>) -> Result<Json, FlowError> {
        Ok(match self.apply(scope)? {
            Some(output) => output,
            None => scope.input().data_json(),
        })
    }

    /// The output object, or `None` for a passthrough, so the caller can move `data` rather
    /// than copy it.
    pub(crate) fn apply(&self, scope: &Scope<'_>) -> Result<Option<Json>, FlowError> {
        if self.is_passthrough() {
            return Ok(None);
        }
        let mut output = Map::with_capacity(self.fields.len());
        for (key, expr) in &self.fields {
            let value = scope.eval(expr).map_err(|e| FlowError::Transform {
                field: key.clone(),
                message: e.to_string(),
            })?;
            output.insert(key.clone(), value);
        }
        Ok(Some(Json::Object(output)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlowDefaults, InputEvent};
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn run(pairs: &[(&str, &str)], data: Json) -> Result<Json, FlowError> {
        let transformer = Transformer::compile(&fields(pairs)).expect("compiles");
        let flow = FlowDefaults::new("t");
        let input = InputEvent::from_json(data, flow.event()).expect("input");
        let result = transformer.transform(&Scope::new(&input));
        result
    }

    #[test]
    fn output_keys_follow_config_order_and_stay_literal() {
        let output = run(
            &[("z-last", "1"), ("a.first", "2"), ("m:id", "data.id")],
            json!({"id": "x"}),
        )
        .expect("transforms");
        assert_eq!(
            crate::event::json::to_string_plain(&output).expect("prints"),
            r#"{"z-last":1,"a.first":2,"m:id":"x"}"#
        );
    }

    #[test]
    fn no_fields_is_passthrough() {
        let transformer = Transformer::compile(&IndexMap::new()).expect("compiles");
        assert!(transformer.is_passthrough());
        let flow = FlowDefaults::new("t");
        let input = InputEvent::from_json(json!({"a": [1]}), flow.event()).expect("input");
        assert_eq!(
            transformer.transform(&Scope::new(&input)),
            Ok(json!({"a": [1]}))
        );
    }

    #[test]
    fn a_missing_field_names_the_output_field_and_the_key() {
        let error = run(&[("ok", "1"), ("total", "data.price * 2")], json!({})).expect_err("fails");
        assert_eq!(error.code(), "TRANSFORM_FAILED");
        assert_eq!(
            error.to_string(),
            "transform field `total`: no such key: price"
        );
    }

    #[test]
    fn a_guarded_field_is_fine() {
        let output = run(&[("x", "has(data.x) ? data.x : 'default'")], json!({})).expect("ok");
        assert_eq!(output, json!({"x": "default"}));
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let errors = Transformer::compile(&fields(&[
            ("good", "data.a"),
            ("status", "pending"),
            ("total", "data.price *"),
            ("id", "$.legacy_id"),
        ]))
        .expect_err("does not compile");
        let paths: Vec<_> = errors
            .iter()
            .map(|e| match e {
                FlowError::Compile { path, .. } => path.as_str(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "transform.fields.status",
                "transform.fields.total",
                "transform.fields.id"
            ]
        );
        assert!(errors.iter().all(|e| e.code() == "CONFIG_INVALID"));
    }

    #[test]
    fn a_result_without_json_form_fails_the_field() {
        let error = run(&[("ratio", "data.a / 0.0")], json!({"a": 1.0})).expect_err("fails");
        assert_eq!(
            error.to_string(),
            "transform field `ratio`: inf has no JSON form"
        );
    }
}
