//! One module per verb.

pub mod completions;
pub mod export;
pub mod init;
pub mod transform;
pub mod validate;
