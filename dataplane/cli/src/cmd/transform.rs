//! `fiso transform test --flow FILE --input JSON|FILE`: run a flow's transform and envelope on
//! one input, exactly as the running flow would, without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fiso_config::cel_check::on_eval_stack;
use fiso_config::validate::SourceFile;
use fiso_flow::{json, CompiledFlow, InputEvent};

use crate::cmd::Format;
use crate::project::ProjectFiles;
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
    #[arg(long)]
    pub input: String,
    /// Output format: readable sections, or one JSON object `{"transformed", "cloudevent"}`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn run(cmd: TransformCommand) -> Result<ExitCode> {
    match cmd {
        TransformCommand::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> Result<ExitCode> {
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
    let input = read_input(&args.input)?;
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
    let intercepted = if flow.interceptors.is_empty() {
        None
    } else {
        Some(intercept(flow, &args.flow, cloudevent.clone())?)
    };
    match args.format {
        Format::Json => {
            let mut out = serde_json::json!({
                "transformed": processed.payload(),
                "cloudevent": cloudevent,
            });
            if let Some(i) = &intercepted {
                out["intercepted"] = i.clone();
            }
            println!("{}", json::to_string_pretty_plain(&out)?);
        }
        Format::Human => {
            println!("{}", style::ok("Transformed payload:"));
            println!("{}", json::to_string_pretty_plain(&processed.payload())?);
            println!("\n{}", style::ok("CloudEvent:"));
            println!("{}", json::to_string_pretty_plain(&cloudevent)?);
            if let Some(i) = &intercepted {
                println!("\n{}", style::ok("After the interceptors:"));
                println!("{}", json::to_string_pretty_plain(i)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
    let path = std::path::Path::new(arg);
    if !path.is_file() {
        bail!("--input is neither valid JSON nor a readable file: {arg}");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}
