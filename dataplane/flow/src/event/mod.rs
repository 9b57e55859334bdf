//! What a flow does to one event, without I/O: the CloudEvents model every source and sink
//! shares ([`cloudevent`]) with its JSON format ([`json_format`]), header bindings
//! ([`header_binding`]), Protobuf format ([`protobuf`]) and media types ([`media_type`]); how a
//! binding's message becomes an event ([`message`]); the incoming event and the attributes its CEL scope exposes ([`input`]), `transform.fields`
//! ([`transform`]), the envelope ([`envelope`]), both compiled from a flow config
//! ([`compiled`]), what a flow reads of a payload ([`payload_keys`]), a payload carried as
//! its text ([`carried_json`]), JSON output without exponents ([`json`]) and new ids
//! ([`id`]).

/// The methods of a `Visitor<Value = ()>` that accept a JSON boolean, integer, string or null
/// as it is: shared by the walks that check a payload without building it.
macro_rules! accept_json_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
    };
}

pub mod carried_json;
pub mod cloudevent;
pub mod compiled;
pub mod envelope;
pub mod header_binding;
pub mod id;
pub mod input;
pub mod json;
pub mod json_format;
pub mod media_type;
pub mod message;
pub mod payload_keys;
pub mod protobuf;
pub mod transform;
