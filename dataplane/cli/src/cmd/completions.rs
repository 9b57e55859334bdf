//! `fiso completions bash|zsh|fish|powershell|elvish`.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate the script for.
    pub shell: Shell,
}

pub fn run<C: CommandFactory>(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = C::command();
    clap_complete::generate(args.shell, &mut cmd, "fiso", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
