//! One module per verb.

pub mod completions;
pub mod doctor;
pub mod export;
pub mod init;
pub mod logs;
pub mod reference;
pub mod transform;
pub mod validate;
