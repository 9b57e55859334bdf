//! `fiso transform test --flow FILE --input JSON|FILE` (or `--input-file EVENTS.jsonl`): run a
//! flow's transform and envelope on each input, exactly as the running flow would, without
//! starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fiso_config::cel_check::on_eval_stack;
use fiso_config::validate::SourceFile;
use fiso_flow::{json, CompiledFlow, InputEvent};

use crate::cmd::Format;
use crate::project::{resolve_arg, ProjectFiles};
use crate::style;

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
    /// Input event: inline JSON, or a file holding JSON (pretty-printed is fine). A structured
    /// CloudEvent (with `specversion`) keeps its own attributes.
    #[arg(
        long,
        required_unless_present = "input_file",
        conflicts_with = "input_file"
    )]
    pub input: Option<String>,
    /// Many input events: a JSON Lines file (one event per line; any sequence of JSON values
    /// works), each run on its own; one result per event (with `--format json`, one line each).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Output format: readable sections, or one JSON object `{"transformed", "cloudevent"}`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn run(cmd: TransformCommand) -> Result<ExitCode> {
    match cmd {
        TransformCommand::Test(args) => {
            let format = args.format;
            format.report(test(args))
        }
    }
}

fn test(mut args: TestArgs) -> Result<ExitCode> {
    // Inside the project, the paths the scaffold's comments give (`fiso/flows/…`) work too.
    args.flow = resolve_arg(&args.flow);
    args.input_file = args.input_file.as_deref().map(resolve_arg);
    let files = ProjectFiles::read(&args.flow)?;
    let Some(file) = files.flows.first() else {
        bail!("{} is not a flow file", args.flow.display());
    };
    let (project, diags) =
        fiso_config::validate::check_project(std::slice::from_ref::<SourceFile>(file), None);
    for d in diags.iter() {
        eprintln!("{d}");
    }
    if diags.has_errors() {
        bail!("the flow is invalid (see above)");
    }
    let flow = &project.flows[0].config;
    let Some(path) = &args.input_file else {
        let result = read_input(args.input.as_deref().unwrap_or_default())
            .and_then(|input| run_one(flow, &args.flow, input))?;
        print_result(&result, args.format, true)?;
        return Ok(ExitCode::SUCCESS);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut failed = 0;
    let mut count = 0;
    for (event, input) in events(&text) {
        count += 1;
        let result = input
            .map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))
            .and_then(|input| run_one(flow, &args.flow, input));
        match result {
            Ok(result) => print_result(&result, args.format, false)?,
            Err(e) => {
                failed += 1;
                let message = fiso_runtime::error_text::chain(e.as_ref());
                match args.format {
                    Format::Json => {
                        println!("{}", serde_json::json!({"event": event, "error": message}))
                    }
                    Format::Human => {
                        println!("{} {message}", style::error(&format!("Event {event}:")))
                    }
                }
            }
        }
    }
    if count == 0 {
        bail!("{} holds no JSON events", path.display());
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The events of an `--input-file`, numbered: JSON Lines (numbered by line; a bad line fails
/// alone), or, when the first line is not a JSON document of its own, the JSON values of the
/// whole text in turn (a pretty-printed document; numbered from 1, and a syntax error ends it).
fn events(text: &str) -> Vec<(usize, serde_json::Result<serde_json::Value>)> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n + 1, l))
        .collect();
    let jsonl = lines
        .first()
        .is_some_and(|(_, l)| serde_json::from_str::<serde_json::Value>(l).is_ok());
    if jsonl {
        lines
            .into_iter()
            .map(|(n, l)| (n, serde_json::from_str(l)))
            .collect()
    } else {
        serde_json::Deserializer::from_str(text)
            .into_iter()
            .enumerate()
            .map(|(n, v)| (n + 1, v))
            .collect()
    }
}

/// What one input becomes: `{"transformed", "cloudevent"}`, plus `"intercepted"` when the flow
/// has interceptors.
fn run_one(
    flow: &fiso_config::FlowConfig,
    file: &std::path::Path,
    input: serde_json::Value,
) -> Result<serde_json::Value> {
    // On the stack, within the bounds and the budget, that a running flow has.
    let processed = on_eval_stack(|| {
        let compiled = CompiledFlow::compile(flow).map_err(|errs| {
            let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the flow does not compile:\n  {}", text.join("\n  "))
        })?;
        let event = InputEvent::from_json(input, compiled.defaults().event())
            .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
        compiled
            .process(event)
            .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))
    })
    .context("starting the evaluation thread")??;
    let cloudevent = serde_json::to_value(processed.event())?;
    let mut out = serde_json::json!({
        "transformed": processed.payload(),
        "cloudevent": cloudevent,
    });
    if !flow.interceptors.is_empty() {
        out["intercepted"] = intercept(flow, file, cloudevent)?;
    }
    Ok(out)
}

/// One result: pretty JSON or readable sections for a single input, one JSON line or sections
/// for each of many.
fn print_result(result: &serde_json::Value, format: Format, single: bool) -> Result<()> {
    match format {
        Format::Json if single => println!("{}", json::to_string_pretty_plain(result)?),
        Format::Json => println!("{result}"),
        Format::Human => {
            println!("{}", style::ok("Transformed payload:"));
            println!("{}", json::to_string_pretty_plain(&result["transformed"])?);
            println!("\n{}", style::ok("CloudEvent:"));
            println!("{}", json::to_string_pretty_plain(&result["cloudevent"])?);
            if let Some(i) = result.get("intercepted") {
                println!("\n{}", style::ok("After the interceptors:"));
                println!("{}", json::to_string_pretty_plain(i)?);
            }
            if !single {
                println!();
            }
        }
    }
    Ok(())
}

/// Runs the flow's interceptors on `cloudevent` (with no headers) as the flow would: the event
/// they hand on, or `{"reject": {...}}` when one rejects it.
fn intercept(
    flow: &fiso_config::FlowConfig,
    file: &std::path::Path,
    cloudevent: serde_json::Value,
) -> Result<serde_json::Value> {
    use fiso_flow::interceptor::{ChainOutcome, InterceptorChain};
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    // Apps are processes of `fiso run` / `fiso dev`; this command runs nothing long-lived.
    if let Some((i, app)) = flow
        .interceptors
        .iter()
        .enumerate()
        .find_map(|(i, s)| match s {
            fiso_config::flow::InterceptorSpec::WasmerApp(a) => Some((i, &a.app)),
            fiso_config::flow::InterceptorSpec::Wasm(_) => None,
        })
    {
        anyhow::bail!(
            "interceptors[{i}] is the app `{app}` (type: wasmer-app), and `fiso transform test` does not start apps; run the flow with `fiso dev` or `fiso run --apps-config` and send it the event"
        );
    }
    let chain = InterceptorChain::build(&flow.interceptors, dir, &Default::default())?;
    let mut input = cloudevent;
    input["headers"] = serde_json::json!({});
    let outcome = crate::cmd::flow::tokio_runtime()?.block_on(chain.apply(input))?;
    Ok(match outcome {
        ChainOutcome::Continue { event, .. } => event,
        ChainOutcome::Rejected {
            status,
            reason,
            module,
            ..
        } => serde_json::json!({"reject": {"status": status, "reason": reason, "module": module}}),
    })
}

/// Inline JSON when it parses, else a file path.
fn read_input(arg: &str) -> Result<serde_json::Value> {
    if let Ok(v) = serde_json::from_str(arg) {
        return Ok(v);
    }
    let path = resolve_arg(std::path::Path::new(arg));
    if !path.is_file() {
        bail!("--input is neither valid JSON nor a readable file: {arg}");
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}
