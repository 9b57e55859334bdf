//! The incoming event: a [`CloudEvent`] and what the CEL scope reads of it.
//!
//! An event that a source read as a CloudEvent (structured, binary, Protobuf) keeps its own
//! attributes. Anything else is a bare payload: the attributes are made up from what the source
//! knows ([`EventDefaults`]): `id` is the id the envelope will carry (`<topic>-<partition>-<offset>`
//! for Kafka, else a UUIDv7), `source` and `type` the flow's defaults, `datacontenttype`
//! `application/json`, and there is no `subject`. An event without `time` gets the receive time.

use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::Value as Json;

use super::cloudevent::{AttributeValue, CloudEvent, Data, Timestamp};
use super::json_format;
use super::payload_keys::PayloadKeys;
use crate::FlowError;

/// Default CloudEvent `type` of a flow, as upstream Fiso.
pub const DEFAULT_TYPE: &str = "fiso.event";

/// How a flow names the events that don't name themselves, and what it reads of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDefaults {
    source: String,
    type_: String,
    payload_keys: PayloadKeys,
}

impl FlowDefaults {
    /// `source` = `fiso-flow/<flow name>`, `type` = [`DEFAULT_TYPE`]; payloads read whole.
    pub fn new(flow_name: &str) -> Self {
        FlowDefaults {
            source: format!("fiso-flow/{flow_name}"),
            type_: DEFAULT_TYPE.to_owned(),
            payload_keys: PayloadKeys::All,
        }
    }

    /// Payloads read only as far as `keys` says.
    pub fn reading(mut self, keys: PayloadKeys) -> Self {
        self.payload_keys = keys;
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn type_(&self) -> &str {
        &self.type_
    }

    /// The defaults for one event, received now, with no id of its own yet.
    pub fn event(&self) -> EventDefaults<'_> {
        self.event_received_at(Utc::now())
    }

    /// The defaults for one event received at `received_at` (a Kafka record's timestamp), with
    /// no id of its own yet.
    pub fn event_received_at(&self, received_at: DateTime<Utc>) -> EventDefaults<'_> {
        EventDefaults {
            source: &self.source,
            type_: &self.type_,
            payload_keys: &self.payload_keys,
            id: None,
            received_at,
        }
    }
}

/// What a source knows about one event besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDefaults<'a> {
    pub source: &'a str,
    pub type_: &'a str,
    /// What the flow reads of a bare JSON payload.
    pub payload_keys: &'a PayloadKeys,
    /// The id a bare payload gets; `None` means a fresh UUIDv7.
    pub id: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl EventDefaults<'_> {
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The id of a Kafka record: stable across redelivery, so sinks can de-duplicate.
    pub fn with_kafka_id(self, topic: &str, partition: i32, offset: i64) -> Self {
        self.with_id(kafka_id(topic, partition, offset))
    }

    pub fn received_at(mut self, at: DateTime<Utc>) -> Self {
        self.received_at = at;
        self
    }
}

/// `<topic>-<partition>-<offset>`: the id of a Kafka record's event (and its correlation id)
/// when it brings none.
pub fn kafka_id(topic: &str, partition: i32, offset: i64) -> String {
    let (mut partition_text, mut offset_text) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (partition, offset) = (partition_text.format(partition), offset_text.format(offset));
    let mut id = String::with_capacity(topic.len() + partition.len() + offset.len() + 2);
    for part in [topic, "-", partition, "-", offset] {
        id.push_str(part);
    }
    id
}

/// An event as it enters a flow: always with a `time`.
#[derive(Debug, Clone)]
pub struct InputEvent {
    event: CloudEvent,
    /// `time` in UTC as the CEL scope shows it, formatted when an expression first reads it.
    time_text: OnceLock<String>,
}

/// The event decides: `time_text` is only a cache of its `time`.
impl PartialEq for InputEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

impl InputEvent {
    /// A CloudEvent a source read (and validated); without `time` it gets `received_at`.
    pub fn from_event(mut event: CloudEvent, received_at: DateTime<Utc>) -> InputEvent {
        if event.time().is_none() {
            // Sub-millisecond digits only make the text longer: Kafka timestamps are milliseconds.
            event.set_time(Some(Timestamp::from_utc(received_at.trunc_subsecs(3))));
        }
        InputEvent {
            event,
            time_text: OnceLock::new(),
        }
    }

    /// Reads `json`, a structured CloudEvent (a JSON object with `specversion`) or a bare
    /// payload: what `fiso transform test` reads, where there is no content type to decide.
    pub fn from_json(json: Json, defaults: EventDefaults<'_>) -> Result<InputEvent, FlowError> {
        match json {
            Json::Object(map) if map.contains_key("specversion") => {
                let event = json_format::from_map(map)?;
                Ok(Self::from_event(event, defaults.received_at))
            }
            data => Ok(Self::from_payload(Data::Json(data), defaults)),
        }
    }

    /// A bare payload with attributes from `defaults`.
    pub fn from_payload(data: Data, defaults: EventDefaults<'_>) -> InputEvent {
        let mut event = CloudEvent::new(
            defaults.id.unwrap_or_else(super::id::new_uuid_v7),
            defaults.source,
            defaults.type_,
        );
        if data.is_json() {
            event.set_datacontenttype(Some("application/json".to_owned()));
        }
        event.set_data(Some(data));
        Self::from_event(event, defaults.received_at)
    }

    /// Adds a CloudEvents extension attribute (e.g. `traceparent` from a request header); the
    /// envelope carries it.
    pub fn set_extension(
        &mut self,
        name: impl Into<String>,
        value: impl Into<AttributeValue>,
    ) -> Result<(), FlowError> {
        Ok(self.event.set_extension(name, value)?)
    }

    /// The event as read.
    pub fn event(&self) -> &CloudEvent {
        &self.event
    }

    pub fn into_event(self) -> CloudEvent {
        self.event
    }

    /// The payload: the body, record value or message, or a CloudEvent's data; `None` when the
    /// event has no data.
    pub fn data(&self) -> Option<&Data> {
        self.event.data()
    }

    /// The data as one JSON value: JSON as it is, text as a string, bytes as base64, `null`
    /// for no data.
    pub fn data_json(&self) -> Json {
        self.data().map_or(Json::Null, Data::to_json)
    }

    pub fn id(&self) -> &str {
        self.event.id()
    }

    pub fn source(&self) -> &str {
        self.event.source()
    }

    pub fn type_(&self) -> &str {
        self.event.ty()
    }

    pub fn subject(&self) -> Option<&str> {
        self.event.subject()
    }

    pub fn time(&self) -> DateTime<Utc> {
        self.event.time().map(Timestamp::to_utc).unwrap_or_default()
    }

    /// `time` in RFC 3339 (UTC), as the `time` variable of the CEL scope.
    pub fn time_text(&self) -> &str {
        self.time_text.get_or_init(|| {
            self.event
                .time()
                .map(|t| format_time(&t.to_utc()))
                .unwrap_or_default()
        })
    }

    pub fn datacontenttype(&self) -> Option<&str> {
        self.event.datacontenttype()
    }

    pub fn dataschema(&self) -> Option<&str> {
        self.event.dataschema()
    }

    pub fn extensions(&self) -> &indexmap::IndexMap<String, AttributeValue> {
        self.event.extensions()
    }
}

fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests;
