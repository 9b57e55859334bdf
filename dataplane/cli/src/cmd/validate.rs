//! `fiso validate [DIR] [--format human|json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use fiso_config::cel_check::on_eval_stack;
use fiso_config::Diagnostics;
use serde::Serialize;

use crate::cmd::Format;
use crate::project::{default_target, resolve_arg, ProjectFiles};
use crate::style;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Project directory (holding flows/, link/ and apps/), a directory of flow files, or one
    /// file (a flow, the link config or an apps file).
    /// Default: ./fiso, or the project the current directory is in, else the current directory.
    pub dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    flows: Vec<&'a str>,
    link: Option<&'a str>,
    apps: Vec<&'a str>,
    errors: usize,
    warnings: usize,
    diagnostics: &'a Diagnostics,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let format = args.format;
    format.report(validate(args))
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let target = args
        .dir
        .map(|d| resolve_arg(&d))
        .unwrap_or_else(default_target);
    let files = ProjectFiles::read(&target)?;
    if files.is_empty() {
        bail!(
            "no flow files, link config or apps files found in {}; run `fiso init` or pass the project directory",
            target.display()
        );
    }
    let (project, mut diags) = files.check();
    // CEL as loading compiles it (bounds, constants folded within the budget), on the stack a
    // flow runs on; only for flows whose config is otherwise valid, so nothing is said twice.
    let compile_errors = on_eval_stack(|| {
        project
            .flows
            .iter()
            .filter(|flow| {
                !diags
                    .errors()
                    .any(|d| d.file.as_deref() == Some(flow.file.as_str()))
            })
            .flat_map(|flow| {
                fiso_flow::CompiledFlow::check(&flow.config)
                    .into_iter()
                    .map(|e| (flow.file.clone(), e))
            })
            .collect::<Vec<_>>()
    })
    .context("starting the evaluation thread")?;
    for (file, error) in compile_errors {
        let mut d = match error {
            fiso_flow::FlowError::Compile { path, message } => {
                fiso_config::Diagnostic::error(path, message)
            }
            other => fiso_config::Diagnostic::error("", other.to_string()),
        };
        d.file = Some(file);
        diags.push(d);
    }
    // Interceptor modules are loaded as the data plane would: a missing file, a module that is
    // not a WASI command, or `runtime: wasmer` in a build without it is reported here. Inside a
    // Tokio runtime, as in the data plane: wasmer-wasix looks one up while building a guest
    // environment.
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _io = io.enter();
    for flow in &project.flows {
        if flow.config.interceptors.is_empty() {
            continue;
        }
        let dir = std::path::Path::new(&flow.file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        if let Err(e) = fiso_flow::interceptor::InterceptorChain::build(
            &flow.config.interceptors,
            dir,
            &Default::default(),
        ) {
            let mut d = fiso_config::Diagnostic::error(
                format!("interceptors[{}].config.module", e.index),
                e.to_string(),
            );
            d.file = Some(flow.file.clone());
            diags.push(d);
        }
    }
    // The link's interceptor modules too (relative paths resolve against the link file's
    // directory, as `fiso link` resolves them).
    if let Some(link) = &project.link {
        let dir = std::path::Path::new(&link.file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        for (t, target) in link.config.targets.iter().enumerate() {
            for (i, spec) in target.interceptors.iter().enumerate() {
                let fiso_config::link::LinkInterceptorSpec::Wasm(config) = spec;
                if let Err(e) = fiso_wasm::Module::load(&config.engine(), dir) {
                    let mut d = fiso_config::Diagnostic::error(
                        format!("targets[{t}].interceptors[{i}].config.module"),
                        format!("interceptors[{i}] (module `{}`): {e}", config.module),
                    );
                    d.file = Some(link.file.clone());
                    diags.push(d);
                }
            }
        }
    }
    for d in diags.0.iter_mut().filter(|d| d.line.is_none()) {
        files.locate(d);
    }
    diags.sort();
    diags.bound_per_file();
    let errors = diags.errors().count();
    let warnings = diags.warnings().count();
    match args.format {
        Format::Json => {
            let report = JsonReport {
                valid: errors == 0,
                flows: project.flows.iter().map(|f| f.file.as_str()).collect(),
                link: project.link.as_ref().map(|l| l.file.as_str()),
                apps: files.apps.iter().map(|f| f.path.as_str()).collect(),
                errors,
                warnings,
                diagnostics: &diags,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Human => {
            for d in diags.iter() {
                let rendered = d.to_string();
                let colored = rendered
                    .replacen("error:", &style::error("error:"), 1)
                    .replacen("warning:", &style::warning("warning:"), 1);
                eprintln!("{colored}");
            }
            if errors == 0 {
                let flows = project.flows.len();
                let link = if project.link.is_some() {
                    " and the link config"
                } else {
                    ""
                };
                let apps = match files.apps.len() {
                    0 => String::new(),
                    1 => " and 1 apps file".to_owned(),
                    n => format!(" and {n} apps files"),
                };
                println!(
                    "{} {flows} flow{}{link}{apps} valid{}",
                    style::ok("✓"),
                    if flows == 1 { "" } else { "s" },
                    if warnings > 0 {
                        format!(
                            " ({warnings} warning{})",
                            if warnings == 1 { "" } else { "s" }
                        )
                    } else {
                        String::new()
                    }
                );
            } else {
                eprintln!(
                    "{} {errors} error{}, {warnings} warning{}",
                    style::error("✗"),
                    if errors == 1 { "" } else { "s" },
                    if warnings == 1 { "" } else { "s" }
                );
            }
        }
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
