//! A flow's transform and envelope, compiled once when the flow is loaded; what `fiso
//! transform test` and the runtime run per event.

use std::borrow::Cow;

use fiso_config::flow::SinkSpec;
use fiso_config::FlowConfig;
use serde_json::Value as Json;

use crate::cel::budget::Budget;
use crate::cel::expr::CompiledExpr;
use crate::event::payload_keys::{Fields, PayloadKeys};
use crate::{CloudEvent, Data, Envelope, FlowDefaults, FlowError, InputEvent, Scope, Transformer};

/// A flow ready to process events.
#[derive(Debug, Clone)]
pub struct CompiledFlow {
    name: String,
    defaults: FlowDefaults,
    transformer: Transformer,
    envelope: Envelope,
    budget: Budget,
}

/// What a flow made of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedEvent {
    event: CloudEvent,
    /// The transform's output when it is not the event's `data` (`cloudevents.data` is
    /// overridden); otherwise it lives only in the event.
    payload: Option<Json>,
}

impl ProcessedEvent {
    /// The CloudEvent to deliver.
    pub fn event(&self) -> &CloudEvent {
        &self.event
    }

    pub fn into_event(self) -> CloudEvent {
        self.event
    }

    /// The transform's output (the input's data for a flow without a transform).
    pub fn payload(&self) -> Cow<'_, Json> {
        if let Some(payload) = &self.payload {
            return Cow::Borrowed(payload);
        }
        match self.event.data() {
            Some(Data::Json(json)) => Cow::Borrowed(json),
            Some(other) => Cow::Owned(other.to_json()),
            None => Cow::Owned(Json::Null),
        }
    }
}

impl CompiledFlow {
    /// Compiles `config.transform` and `config.cloudevents`, reporting every problem with its
    /// field path. The flow must be named (a `FlowDefinition`'s name is its `metadata.name`).
    pub fn compile(config: &FlowConfig) -> Result<CompiledFlow, Vec<FlowError>> {
        let mut errors = Vec::new();
        let name = match config.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => name.to_owned(),
            None => {
                errors.push(FlowError::compile("name", "a flow needs a name"));
                String::new()
            }
        };
        let empty = Default::default();
        let fields = config.transform.as_ref().map_or(&empty, |t| &t.fields);
        let budget = Budget::of(config.cel_budget.as_ref());
        let transformer = Transformer::compile_with(fields, budget).unwrap_or_else(|mut e| {
            errors.append(&mut e);
            Transformer::passthrough()
        });
        let envelope =
            Envelope::compile_with(config.cloudevents.as_ref(), budget).unwrap_or_else(|mut e| {
                errors.append(&mut e);
                Envelope::default()
            });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CompiledFlow {
            defaults: FlowDefaults::new(&name).reading(payload_keys(
                config,
                &transformer,
                &envelope,
            )),
            name,
            transformer,
            envelope,
            budget,
        })
    }

    /// What one event's CEL evaluations may spend (`celBudget`).
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Whether processing an event may take long: a field or an override loops, or calls a
    /// function whose cost grows faster than its input.
    pub fn is_heavy(&self) -> bool {
        self.transformer.is_heavy() || self.envelope.is_heavy()
    }

    /// Every CEL expression of `config` compiled as loading the flow compiles it (transform,
    /// envelope, Kafka key, Temporal params; constants folded within the flow's budget), with
    /// no I/O: what `fiso validate` runs so it refuses exactly what loading would.
    pub fn check(config: &FlowConfig) -> Vec<FlowError> {
        let mut errors = CompiledFlow::compile(config).err().unwrap_or_default();
        let budget = Budget::of(config.cel_budget.as_ref());
        let sink_exprs: Vec<(String, &str)> = match &config.sink {
            SinkSpec::Kafka(k) => k
                .key
                .iter()
                .map(|e| ("sink.config.key".to_owned(), e.as_str()))
                .collect(),
            SinkSpec::Temporal(t) => t
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("sink.config.params[{i}].expr"), p.expr.as_str()))
                .collect(),
            SinkSpec::Http(_) | SinkSpec::Grpc(_) => Vec::new(),
        };
        for (path, source) in sink_exprs {
            if let Err(message) = CompiledExpr::compile_with(source, budget) {
                errors.push(FlowError::compile(path, message));
            }
        }
        errors
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attributes of events that don't bring their own: start from
    /// `defaults().event()` to read an input.
    pub fn defaults(&self) -> &FlowDefaults {
        &self.defaults
    }

    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Transforms `input` and wraps the result in a CloudEvent. Only evaluation happens here:
    /// every expression was compiled by [`CompiledFlow::compile`].
    pub fn process(&self, input: InputEvent) -> Result<ProcessedEvent, FlowError> {
        let (transformed, overrides) = {
            // One scope for both: the overrides see the input as the transform did.
            let scope = Scope::with_budget(&input, self.budget);
            let transformed = self.transformer.apply(&scope)?;
            (transformed, self.envelope.resolve(&scope)?)
        };
        if self.envelope.overrides_data() {
            let payload = match transformed {
                Some(output) => output,
                None => input.data_json(),
            };
            let event = Envelope::assemble(overrides, input, None)?;
            return Ok(ProcessedEvent {
                event,
                payload: Some(payload),
            });
        }
        let event = Envelope::assemble(overrides, input, transformed)?;
        Ok(ProcessedEvent {
            event,
            payload: None,
        })
    }
}

/// What a flow reads of a JSON payload, when its sink reads nothing of the input but the
/// event (a Kafka key or Temporal parameters are CEL over the input too: those flows read
/// payloads whole): only the fields its CEL names when its output is its transform's; nothing
/// when it carries the payload and no CEL reads it.
fn payload_keys(
    config: &FlowConfig,
    transformer: &Transformer,
    envelope: &Envelope,
) -> PayloadKeys {
    if !matches!(config.sink, SinkSpec::Http(_) | SinkSpec::Grpc(_)) {
        return PayloadKeys::All;
    }
    let mut fields = Fields::default();
    if transformer.is_passthrough() {
        return if envelope.data_fields(&mut fields) && fields.is_empty() {
            PayloadKeys::Carried
        } else {
            PayloadKeys::All
        };
    }
    if transformer.data_fields(&mut fields) && envelope.data_fields(&mut fields) {
        PayloadKeys::only(fields)
    } else {
        PayloadKeys::All
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::expr::COMPILATIONS;
    use crate::event::header_binding::Binding;
    use crate::event::message;
    use crate::event::payload_keys::Read;
    use serde_json::json;

    fn flow(yaml: &str) -> FlowConfig {
        serde_yaml_ng::from_str(yaml).expect("valid flow YAML")
    }

    const FLOW: &str = r#"
name: orders
source: {type: http, config: {listenAddr: ":8081"}}
transform:
  fields:
    order_id: "data.id"
    total: "data.price * data.quantity"
cloudevents:
  type: order.created
sink: {type: http, config: {url: "http://localhost:9/"}}
"#;

    #[test]
    fn compiled_flows_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<CompiledFlow>();
        shareable::<ProcessedEvent>();
        shareable::<InputEvent>();
    }

    #[test]
    fn a_flow_reads_only_the_payload_keys_its_cel_names_and_carries_what_it_does_not_read() {
        let keys = |yaml: &str| {
            CompiledFlow::compile(&flow(yaml))
                .expect("compiles")
                .defaults()
                .event()
                .payload_keys
                .clone()
        };
        let only = |k: &[&str]| PayloadKeys::only(k.iter().map(|k| (*k).to_owned()).collect());
        assert_eq!(keys(FLOW), only(&["id", "price", "quantity"]));
        let with_override = FLOW.replace(
            "type: order.created",
            "type: order.created\n  subject: data.customer.name",
        );
        let mut read = ["id", "price", "quantity"]
            .map(str::to_owned)
            .into_iter()
            .collect::<Fields>();
        read.add(&["customer".to_owned(), "name".to_owned()], Read::Whole);
        assert_eq!(keys(&with_override), PayloadKeys::only(read));
        let whole = FLOW.replace("data.id", "size(data)");
        assert_eq!(keys(&whole), PayloadKeys::All);
        let passthrough = "name: p\nsource: {type: http, config: {listenAddr: \":8081\"}}\nsink: {type: http, config: {url: \"http://localhost:9/\"}}\n";
        assert_eq!(keys(passthrough), PayloadKeys::Carried);
        let literal_override = format!("{passthrough}cloudevents: {{type: t, source: id}}\n");
        assert_eq!(keys(&literal_override), PayloadKeys::Carried);
        let reading_override = format!("{passthrough}cloudevents: {{subject: data.customer}}\n");
        assert_eq!(keys(&reading_override), PayloadKeys::All);
        let grpc = passthrough.replace(
            "{type: http, config: {url: \"http://localhost:9/\"}}",
            "{type: grpc, config: {address: \"localhost:9\"}}",
        );
        assert_eq!(keys(&grpc), PayloadKeys::Carried);
        let to_temporal = passthrough.replace(
            "{type: http, config: {url: \"http://localhost:9/\"}}",
            "{type: temporal, config: {hostPort: \"localhost:9\", taskQueue: q, workflowType: w}}",
        );
        assert_eq!(keys(&to_temporal), PayloadKeys::All);
        // The Kafka key is CEL over the whole input.
        let kafka_sink = FLOW.replace(
            r#"sink: {type: http, config: {url: "http://localhost:9/"}}"#,
            "sink: {type: kafka, config: {cluster: main, topic: t, key: data.other}}",
        );
        assert_eq!(keys(&kafka_sink), PayloadKeys::All);
    }

    #[test]
    fn a_flow_reading_part_of_a_payload_makes_the_event_it_makes_reading_it_whole() {
        let compiled = CompiledFlow::compile(&flow(
            r#"
name: orders
source: {type: http, config: {listenAddr: ":8081"}}
transform:
  fields:
    id: data.id
    customer: data.customer.name
    vip: has(data.customer.tier) && data.customer.tier == "gold"
    items: size(data.items)
    letters: size(data.note)
    first: data.lines[0].sku
    lines: data.lines.size()
cloudevents:
  subject: data.customer.name
sink: {type: http, config: {url: "http://localhost:9/"}}
"#,
        ))
        .expect("compiles");
        assert!(matches!(
            compiled.defaults().event().payload_keys,
            PayloadKeys::Only(_)
        ));
        // The flow's input as its source reads it, and read whole.
        let read_both = |body: &'static str| {
            let defaults = || compiled.defaults().event().with_id("e");
            let part = message::read(Binding::Http, &[], None, body.into(), defaults());
            let whole =
                InputEvent::from_json(serde_json::from_str(body).expect("JSON"), defaults());
            (part.expect("input"), whole.expect("input"))
        };
        let bodies = [
            r#"{"id": 1.50, "customer": {"name": "Ada", "tier": "gold", "x": [1]}, "items": [{"a": 1}, 2, [3]], "note": "héllo", "lines": [{"sku": "A"}], "rest": {"deep": [1, 2]}}"#,
            r#"{"id": 12345678901234567890123, "customer": {"name": "Bo"}, "items": [], "note": [1, 2], "lines": [{"sku": "B"}, {}]}"#,
            r#"{"id": "x", "customer": {"name": "Cy", "name": "Di"}, "items": {"a": 1, "b": 2}, "note": {"k": 1}, "lines": [{"sku": 3}], "rest": 0}"#,
        ];
        for body in bodies {
            let (part, whole) = read_both(body);
            assert_ne!(
                part.data_json(),
                whole.data_json(),
                "{body} is read in part"
            );
            let processed = |input: InputEvent| {
                let mut event = compiled.process(input).expect("processes").into_event();
                event.set_time(None);
                event
            };
            assert_eq!(processed(part), processed(whole), "{body}");
        }
        // Where a field a flow reads a part of is no object, it fails as reading it whole does.
        for body in [
            r#"{"id": 1, "customer": "Ada", "items": [], "note": "", "lines": [{"sku": "A"}]}"#,
            r#"{"id": 1, "customer": {"name": "Ada"}, "items": [], "note": "", "lines": 7}"#,
        ] {
            let (part, whole) = read_both(body);
            assert_eq!(
                compiled.process(part).expect_err(body).to_string(),
                compiled.process(whole).expect_err(body).to_string()
            );
        }
    }

    #[test]
    fn processing_does_not_compile_again() {
        let compilations = || COMPILATIONS.with(std::cell::Cell::get);
        let before = compilations();
        let compiled = CompiledFlow::compile(&flow(FLOW)).expect("compiles");
        // Two fields; `type: order.created` is a literal, not CEL.
        assert_eq!(compilations() - before, 2);
        for i in 0..100 {
            let input = InputEvent::from_json(
                json!({"id": i, "price": 1.5, "quantity": 2}),
                compiled.defaults().event(),
            )
            .expect("input");
            let processed = compiled.process(input).expect("processes");
            assert_eq!(
                processed.payload().as_ref(),
                &json!({"order_id": i, "total": 3.0})
            );
        }
        assert_eq!(compilations() - before, 2);
    }

    #[test]
    fn all_compile_errors_are_reported_together() {
        let errors = CompiledFlow::compile(&flow(
            r#"
source: {type: http, config: {listenAddr: ":8081"}}
transform:
  fields:
    a: "data.x +"
    b: "nope"
cloudevents:
  subject: "$.legacy_id"
sink: {type: http, config: {url: "http://localhost:9/"}}
"#,
        ))
        .expect_err("invalid");
        let paths: Vec<_> = errors
            .iter()
            .map(|e| match e {
                FlowError::Compile { path, .. } => path.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "name",
                "transform.fields.a",
                "transform.fields.b",
                "cloudevents.subject"
            ]
        );
    }

    #[test]
    fn passthrough_moves_the_data_into_the_event() {
        let compiled = CompiledFlow::compile(&flow(
            r#"
name: plain
source: {type: http, config: {listenAddr: ":8081"}}
sink: {type: http, config: {url: "http://localhost:9/"}}
"#,
        ))
        .expect("compiles");
        let input = InputEvent::from_json(json!({"k": [1, 2]}), compiled.defaults().event())
            .expect("input");
        let processed = compiled.process(input).expect("processes");
        assert_eq!(
            processed.event().data(),
            Some(&Data::Json(json!({"k": [1, 2]})))
        );
        assert_eq!(processed.payload().as_ref(), &json!({"k": [1, 2]}));
    }

    #[test]
    fn a_passed_through_cloudevent_keeps_its_content_attributes() {
        let compiled = CompiledFlow::compile(&flow(
            r#"
name: relay
source: {type: http, config: {listenAddr: ":8081"}}
sink: {type: http, config: {url: "http://localhost:9/"}}
"#,
        ))
        .expect("compiles");
        let input = InputEvent::from_json(
            json!({
                "specversion": "1.0", "id": "ce-1", "source": "/up", "type": "t.v1",
                "subject": "s", "time": "2026-02-06T22:00:00Z", "traceparent": "00-a-b-01",
                "datacontenttype": "application/vnd.x+json",
                "dataschema": "https://example.com/s.json", "data": {"x": 1}
            }),
            compiled.defaults().event(),
        )
        .expect("input");
        let event = compiled.process(input).expect("processes").into_event();
        assert_eq!(
            serde_json::to_value(&event).expect("json"),
            json!({
                "specversion": "1.0", "id": "ce-1", "type": "t.v1", "source": "/up",
                "datacontenttype": "application/vnd.x+json",
                "dataschema": "https://example.com/s.json", "subject": "s",
                "time": "2026-02-06T22:00:00Z", "traceparent": "00-a-b-01", "data": {"x": 1}
            })
        );
    }

    fn structured(data: serde_json::Value) -> InputEvent {
        let mut json = json!({"specversion": "1.0", "id": "e", "source": "/s", "type": "t"});
        json.as_object_mut()
            .unwrap()
            .extend(data.as_object().unwrap().clone());
        let event = crate::event::json_format::from_json(json).expect("valid");
        InputEvent::from_event(event, chrono::Utc::now())
    }

    fn flow_with(extra: &str) -> CompiledFlow {
        CompiledFlow::compile(&flow(&format!(
            "name: f\nsource: {{type: http, config: {{listenAddr: ':1'}}}}\n\
             sink: {{type: http, config: {{url: 'http://localhost:9/'}}}}\n{extra}"
        )))
        .expect("compiles")
    }

    #[test]
    fn cel_sees_text_bytes_and_no_data() {
        let fields = flow_with(
            "transform:\n  fields:\n    kind: \"type(data) == string ? 'text' : type(data) == bytes ? 'bytes' : type(data) == null_type ? 'none' : 'json'\"\n    size: 'data == null ? 0 : size(data)'\n",
        );
        for (data, kind, size) in [
            (
                json!({"datacontenttype": "text/plain", "data": "hello"}),
                "text",
                5,
            ),
            (json!({"data_base64": "AAEC"}), "bytes", 3),
            (json!({}), "none", 0),
            (json!({"data": [1, 2]}), "json", 2),
        ] {
            let out = fields.process(structured(data.clone())).expect("processes");
            assert_eq!(
                out.payload().as_ref(),
                &json!({"kind": kind, "size": size}),
                "{data}"
            );
        }
        // Bytes written out by a field become base64 text.
        let copy = flow_with("transform:\n  fields:\n    raw: data\n");
        let out = copy
            .process(structured(json!({"data_base64": "AAEC"})))
            .expect("processes");
        assert_eq!(out.payload().as_ref(), &json!({"raw": "AAEC"}));
    }

    #[test]
    fn a_passthrough_keeps_data_forms_and_adds_no_content_type() {
        let relay = flow_with("");
        for data in [
            json!({}),
            json!({"data": null}),
            json!({"data_base64": "AP8="}),
            json!({"datacontenttype": "application/xml", "data": "<a/>"}),
        ] {
            let input = structured(data.clone());
            let expected = input.event().clone();
            let event = relay.process(input).expect("processes").into_event();
            assert_eq!(event, expected, "{data}");
        }
    }

    #[test]
    fn a_bytes_data_override_stays_bytes() {
        let flow = flow_with("cloudevents:\n  data: data\n  datacontenttype: '\"image/png\"'\n");
        let event = flow
            .process(structured(json!({"data_base64": "iVBORw=="})))
            .expect("processes")
            .into_event();
        assert_eq!(
            event.data(),
            Some(&Data::Bytes(bytes::Bytes::from_static(b"\x89PNG")))
        );
        assert_eq!(event.datacontenttype(), Some("image/png"));
    }
}
