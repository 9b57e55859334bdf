//! One module per verb.

pub mod completions;
pub mod export;
pub mod init;
pub mod reference;
pub mod transform;
pub mod validate;
