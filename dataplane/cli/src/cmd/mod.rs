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

impl Format {
    /// `outcome` as the command reports it: with `--format json` a failure is printed as
    /// `{"error": …}` on stdout (exit code 1), so tools reading the JSON get failures too.
    pub fn report(
        self,
        outcome: anyhow::Result<std::process::ExitCode>,
    ) -> anyhow::Result<std::process::ExitCode> {
        match (outcome, self) {
            (Err(e), Format::Json) => {
                let message = fiso_runtime::error_text::chain(e.as_ref());
                println!("{}", serde_json::json!({ "error": message }));
                Ok(std::process::ExitCode::FAILURE)
            }
            (outcome, _) => outcome,
        }
    }
}
