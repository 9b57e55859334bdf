//! What a flow does to one event, without I/O: the CloudEvents model every source and sink
//! shares ([`cloudevent`]) with its JSON format ([`json_format`]), header bindings
//! ([`header_binding`]), Protobuf format ([`protobuf`]) and media types ([`media_type`]); how a
//! binding's message becomes an event ([`message`]); the incoming event and the attributes its CEL scope exposes ([`input`]), `transform.fields`
//! ([`transform`]), the envelope ([`envelope`]), both compiled from a flow config
//! ([`compiled`]), what a flow reads of a payload ([`payload_keys`]), a payload carried as
//! its text ([`carried_json`]), and JSON output without
//! exponents ([`json`]).

pub mod carried_json;
pub mod cloudevent;
pub mod compiled;
pub mod envelope;
pub mod header_binding;
pub mod input;
pub mod json;
pub mod json_format;
pub mod media_type;
pub mod message;
pub mod payload_keys;
pub mod protobuf;
pub mod transform;
