//! One module per verb.

pub mod apps;
pub mod completions;
pub mod consume;
pub mod dev;
pub mod doctor;
pub mod export;
pub mod flow;
pub mod init;
pub mod link;
pub mod logs;
pub mod produce;
pub mod reference;
pub mod run;
pub mod transform;
pub mod validate;
pub mod wasmer;

/// `--format` of the commands that print a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Readable text.
    Human,
    /// One JSON document, for tools.
    Json,
}
