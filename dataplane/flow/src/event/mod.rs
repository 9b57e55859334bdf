//! What a flow does to one event, without I/O: the incoming event and the attributes its CEL
//! scope exposes ([`input`]), `transform.fields` ([`transform`]), the CloudEvents envelope
//! ([`envelope`]), both compiled from a flow config ([`compiled`]), JSON output without
//! exponents ([`json`]) and the CloudEvents Protobuf format of gRPC sources and sinks
//! ([`protobuf`]).

pub mod compiled;
pub mod envelope;
pub mod input;
pub mod json;
pub mod protobuf;
pub mod transform;
