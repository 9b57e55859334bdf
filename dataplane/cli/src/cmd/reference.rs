//! `fiso help-reference` (hidden): every command's `--help` as Markdown, for the README.

use std::process::ExitCode;

use clap::CommandFactory;

pub fn run<C: CommandFactory>() -> anyhow::Result<ExitCode> {
    print!("{}", markdown(C::command()));
    Ok(ExitCode::SUCCESS)
}

fn markdown(root: clap::Command) -> String {
    let mut out = String::new();
    let mut stack = vec![(String::from("fiso"), root.term_width(100))];
    while let Some((path, mut cmd)) = stack.pop() {
        if cmd.is_hide_set() {
            continue;
        }
        cmd = cmd.bin_name(path.clone());
        let help = cmd.render_long_help().to_string();
        out.push_str(&format!(
            "#### `{path}`\n\n```text\n{}\n```\n\n",
            help.trim_end()
        ));
        let mut subs: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .cloned()
            .collect();
        subs.reverse();
        for sub in subs {
            let name = format!("{path} {}", sub.get_name());
            stack.push((name, sub.term_width(100)));
        }
    }
    out
}
