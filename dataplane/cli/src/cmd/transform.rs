//! `fiso transform test --flow FILE --input JSON|FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum TransformCommand {
    /// Run a flow's transform and CloudEvents envelope on one input, without starting anything.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Flow file.
    #[arg(long)]
    pub flow: PathBuf,
    /// Input event: inline JSON, or a file holding JSON (pretty-printed is fine).
    #[arg(long)]
    pub input: String,
}

pub fn run(cmd: TransformCommand) -> Result<ExitCode> {
    match cmd {
        TransformCommand::Test(args) => test(args),
    }
}

fn test(_args: TestArgs) -> Result<ExitCode> {
    anyhow::bail!("transform engine pending")
}
