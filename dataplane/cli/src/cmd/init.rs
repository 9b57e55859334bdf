//! `fiso init`: interactive (the upstream prompts, numbered choices) or driven by flags.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::project::DEFAULT_DIR;
use crate::scaffold::{
    self, Options, SinkKind, SourceKind, TransformKind, KAFKA_BROKERS, KAFKA_TOPIC,
};
use crate::style;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Skip the prompts: HTTP source → HTTP sink, no transform.
    #[arg(long)]
    pub defaults: bool,
    /// Source type (skips the prompts; unspecified choices take their defaults).
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// Sink type.
    #[arg(long, value_enum)]
    pub sink: Option<SinkKind>,
    /// Transform style.
    #[arg(long, value_enum)]
    pub transform: Option<TransformKind>,
    /// Customise the CloudEvents envelope.
    #[arg(long)]
    pub cloudevents: bool,
    /// Also write FlowDefinition / LinkTarget manifests and an annotated Deployment.
    #[arg(long)]
    pub k8s: bool,
    /// Overwrite files of an existing ./fiso directory (or write one inside another project).
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    /// `fiso init --defaults`.
    pub fn defaults() -> Self {
        InitArgs {
            defaults: true,
            source: None,
            sink: None,
            transform: None,
            cloudevents: false,
            k8s: false,
            force: false,
        }
    }

    fn interactive(&self) -> bool {
        !(self.defaults
            || self.source.is_some()
            || self.sink.is_some()
            || self.transform.is_some()
            || self.cloudevents
            || self.k8s)
    }
}

pub fn run(args: InitArgs) -> Result<ExitCode> {
    if Path::new(DEFAULT_DIR).exists() && !args.force {
        bail!("./{DEFAULT_DIR} already exists; use --force to overwrite its generated files");
    }
    // Inside a project, `init` would write a second one into it (fiso/flows/fiso/...).
    if let Some(project) = crate::project::find().filter(|p| p != Path::new(DEFAULT_DIR)) {
        if !args.force {
            bail!(
                "the current directory is inside the Fiso project {}; run `fiso init` in the directory that is to hold ./{DEFAULT_DIR} (or use --force)",
                project.canonicalize().unwrap_or(project).display()
            );
        }
    }
    let opts = if args.interactive() {
        let stdin = std::io::stdin();
        prompt(&mut stdin.lock(), &mut std::io::stdout())?
    } else {
        let d = Options::default();
        Options {
            source: args.source.unwrap_or(d.source),
            sink: args.sink.unwrap_or(d.sink),
            transform: args.transform.unwrap_or(d.transform),
            cloudevents: args.cloudevents,
            k8s: args.k8s,
        }
    };
    let files = scaffold::generate(&opts);
    for f in &files {
        write_file(Path::new(&f.path), &f.contents, f.executable)?;
    }
    println!(
        "{} Fiso initialized with {} source → {} sink.",
        style::ok("✓"),
        opts.source,
        opts.sink
    );
    for f in &files {
        println!("  {}", style::dim(&f.path));
    }
    print_next_steps(&opts);
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, contents: &str, executable: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn print_next_steps(opts: &Options) {
    let name = opts.flow_name();
    println!("\nNext steps:");
    println!("  fiso validate");
    println!("  fiso transform test --flow fiso/flows/{name}.yaml --input fiso/sample-event.json");
    if opts.source == SourceKind::Kafka {
        println!(
            "  fiso dev                          # needs a Kafka broker at {KAFKA_BROKERS} (`fiso doctor` checks)"
        );
        println!("  fiso produce --topic {KAFKA_TOPIC} --file fiso/sample-event.json");
    }
    if opts.k8s {
        println!("  kubectl apply -f fiso/k8s/        # with the Fiso operator installed");
    }
}

/// Asks the upstream questions in the upstream format. Reads answers line by line, so it also
/// works with piped input (`printf '2\n1\n' | fiso init`).
pub fn prompt(input: &mut impl BufRead, out: &mut impl Write) -> Result<Options> {
    let source = choose(input, out, "Source type:", &["HTTP", "Kafka"])?;
    let sink = choose(input, out, "Sink type:", &["HTTP", "Temporal"])?;
    let transform = choose(
        input,
        out,
        "Transform:",
        &["None", "Field-based transform (CEL expressions)"],
    )?;
    let cloudevents = confirm(input, out, "Customize CloudEvents envelope fields?")?;
    let k8s = confirm(input, out, "Include Kubernetes deployment manifests?")?;
    Ok(Options {
        source: [SourceKind::Http, SourceKind::Kafka][source],
        sink: [SinkKind::Http, SinkKind::Temporal][sink],
        transform: [TransformKind::None, TransformKind::Fields][transform],
        cloudevents,
        k8s,
    })
}

fn read_answer(input: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        bail!("no answer on standard input; run `fiso init --defaults` or pass --source/--sink/--transform");
    }
    Ok(line.trim().to_owned())
}

/// A numbered menu; the first option is the default.
fn choose(
    input: &mut impl BufRead,
    out: &mut impl Write,
    title: &str,
    options: &[&str],
) -> Result<usize> {
    writeln!(out, "{title}")?;
    for (i, o) in options.iter().enumerate() {
        let marker = if i == 0 { "▸ " } else { "  " };
        writeln!(out, "{marker}{}) {o}", i + 1)?;
    }
    loop {
        write!(out, "Choose [1]: ")?;
        out.flush()?;
        let answer = read_answer(input)?;
        if answer.is_empty() {
            return Ok(0);
        }
        match answer.parse::<usize>() {
            Ok(n) if (1..=options.len()).contains(&n) => return Ok(n - 1),
            _ => writeln!(out, "Please enter a number from 1 to {}.", options.len())?,
        }
    }
}

/// `[y/N]`: default no.
fn confirm(input: &mut impl BufRead, out: &mut impl Write, question: &str) -> Result<bool> {
    loop {
        write!(out, "{question} [y/N]: ")?;
        out.flush()?;
        match read_answer(input)?.to_lowercase().as_str() {
            "" | "n" | "no" => return Ok(false),
            "y" | "yes" => return Ok(true),
            _ => writeln!(out, "Please answer y or n.")?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_match_upstream_and_parse_answers() {
        let mut out = Vec::new();
        let opts = prompt(&mut "2\n1\n2\ny\nn\n".as_bytes(), &mut out).unwrap();
        assert_eq!(
            opts,
            Options {
                source: SourceKind::Kafka,
                sink: SinkKind::Http,
                transform: TransformKind::Fields,
                cloudevents: true,
                k8s: false
            }
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Source type:\n▸ 1) HTTP\n  2) Kafka\nChoose [1]: Sink type:\n"),
            "{text}"
        );
        assert!(text.contains("Customize CloudEvents envelope fields? [y/N]: "));
        assert!(text.contains("Include Kubernetes deployment manifests? [y/N]: "));
    }

    #[test]
    fn empty_answers_take_defaults_and_bad_answers_reask() {
        let mut out = Vec::new();
        let opts = prompt(&mut "\n9\n\n\nmaybe\n\n\n".as_bytes(), &mut out).unwrap();
        assert_eq!(opts, Options::default());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Please enter a number from 1 to 2."));
        assert!(text.contains("Please answer y or n."));
    }

    #[test]
    fn eof_is_a_clear_error() {
        let err = prompt(&mut "1\n".as_bytes(), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("--defaults"));
    }
}
