//! The CEL engine every flow expression runs on: one process-wide environment with Fiso's
//! functions ([`env`](mod@env), `functions`), expressions compiled once per flow with Fiso's
//! adaptations of CEL ([`expr`]), the per-event [`Scope`](scope::Scope) they are evaluated in,
//! JSON ⇄ CEL value conversions ([`value`]) and the cost budget bounding each event
//! ([`budget`]).

pub mod budget;
pub mod env;
pub mod expr;
mod functions;
mod json_val;
pub mod scope;
pub mod value;
