//! Interceptors: WASI command modules that see each event (stdin → stdout JSON) before the
//! sink, and may change it or reject it — or an app of this process (`type: wasmer-app`), sent
//! the same JSON in a POST and answering what a module would write to stdout.
//!
//! * [`protocol`]: the contract between Fiso-Flow and a module (what goes in, what may come
//!   back) and its validation.
//! * [`InterceptorChain`]: a flow's `interceptors`, loaded once ([`InterceptorChain::build`]) and
//!   applied per event ([`InterceptorChain::apply`]), with `failOpen` handled per interceptor.
//! * [`Interceptor`]: one loaded module with its limits, run by the engine of `fiso-wasm`
//!   (wasmtime, or wasmer with the cargo feature `wasmer`; `runtime: wazero` runs on wasmtime).
//! * [`app`]: the `wasmer-app` step, through the process's
//!   [`AppDirectory`](fiso_runtime::apps::AppDirectory).
//!
//! Loading (reading and compiling a module) is blocking CPU work: call
//! [`InterceptorChain::build`] at flow start / reload, from `spawn_blocking` when on a runtime.

pub mod app;
pub mod protocol;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::Path;
use tracing::Instrument;

use fiso_config::flow::InterceptorSpec;
use fiso_runtime::apps::AppDirectory;
use serde_json::{Map, Value};

use app::AppStep;

pub use fiso_wasm::{
    BuildErrorKind, FailureKind, InterceptorBuildError, InterceptorError, Limits,
    Module as Interceptor, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT,
};
pub use protocol::Answer;

/// A flow's interceptors, in config order.
#[derive(Default)]
pub struct InterceptorChain {
    steps: Vec<Step>,
}

/// One entry of `interceptors`.
enum Step {
    Module(Interceptor),
    App(AppStep),
}

impl Step {
    /// What errors and logs call it: the `module` path, or `app/<name>`.
    fn label(&self) -> &str {
        match self {
            Step::Module(m) => m.module(),
            Step::App(a) => a.label(),
        }
    }

    fn fail_open(&self) -> bool {
        match self {
            Step::Module(m) => m.fail_open(),
            Step::App(a) => a.fail_open(),
        }
    }

    async fn run(&self, event: &Map<String, Value>) -> Result<Answer, InterceptorError> {
        match self {
            Step::Module(m) => run(m, event).await,
            Step::App(a) => a.run(event).await,
        }
    }
}

/// What the chain decided for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    /// Deliver `event` (the input shape of [`protocol`], with every change applied).
    Continue {
        event: Value,
        /// Interceptors that failed and were skipped because of `failOpen: true` (a metric).
        failed_open: u32,
    },
    /// A module rejected the event: do not deliver it; an HTTP source answers `status`.
    Rejected {
        status: u16,
        reason: String,
        /// The `module` path of the interceptor that rejected it.
        module: String,
        failed_open: u32,
    },
}

impl InterceptorChain {
    /// Loads every interceptor of `specs`; relative module and preopen paths resolve against
    /// `base_dir` (the directory of the flow file); `wasmer-app` steps call their app through
    /// `apps` (looked up per event, so an app may start, restart or reload after the flow).
    /// Blocking: reads and compiles the modules (cached by content hash, so a reload with
    /// unchanged modules does not recompile).
    pub fn build(
        specs: &[InterceptorSpec],
        base_dir: Option<&Path>,
        apps: &AppDirectory,
    ) -> Result<Self, InterceptorBuildError> {
        let steps = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| match spec {
                InterceptorSpec::Wasm(config) => Interceptor::load(config, base_dir)
                    .map(Step::Module)
                    .map_err(|kind| InterceptorBuildError {
                        index,
                        module: config.module.clone(),
                        kind,
                    }),
                InterceptorSpec::WasmerApp(config) => {
                    Ok(Step::App(AppStep::new(config, apps.clone())))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(InterceptorChain { steps })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The WASM modules of the chain (not its app steps), in order.
    pub fn modules(&self) -> impl Iterator<Item = &Interceptor> {
        self.steps.iter().filter_map(|s| match s {
            Step::Module(m) => Some(m),
            Step::App(_) => None,
        })
    }

    /// Whether a module file changed on disk since it was loaded (or can no longer be read):
    /// the caller then rebuilds the chain. Blocking (reads and hashes the files).
    pub fn modules_changed(&self) -> bool {
        self.modules().any(|i| i.is_stale())
    }

    /// Runs `event` (a JSON object in the [`protocol`] input shape; a missing `headers` is taken
    /// as `{}`) through every interceptor in order. An interceptor that fails with
    /// `failOpen: true` is skipped with a warning and counted in `failed_open`.
    pub async fn apply(&self, event: Value) -> Result<ChainOutcome, InterceptorError> {
        let mut failed_open = 0;
        let mut event = match event {
            Value::Object(map) => map,
            other => {
                let module = self.steps.first().map_or("", |s| s.label());
                return Err(InterceptorError::new(
                    module,
                    FailureKind::InvalidInput(format!(
                        "the event must be a JSON object, got {other}"
                    )),
                ));
            }
        };
        if !event.contains_key("headers") {
            event.insert("headers".into(), Value::Object(Map::new()));
        }
        for step in &self.steps {
            let span = fiso_runtime::otel::interceptor_span(step.label(), None);
            let answer = step.run(&event).instrument(span.clone()).await;
            match &answer {
                Ok(Answer::Reject { .. }) => {
                    fiso_runtime::otel::failed(&span, "INTERCEPTOR_REJECTED")
                }
                Err(e) => fiso_runtime::otel::failed(&span, e.code()),
                Ok(_) => {}
            }
            match answer {
                Ok(Answer::Event(Value::Object(next))) => event = next,
                Ok(Answer::Event(_)) => unreachable!("protocol::decode_output returns objects"),
                Ok(Answer::Reject { status, reason }) => {
                    return Ok(ChainOutcome::Rejected {
                        status,
                        reason,
                        module: step.label().to_owned(),
                        failed_open,
                    })
                }
                Err(e) if step.fail_open() => {
                    tracing::warn!(
                        module = step.label(),
                        code = e.code(),
                        error = %e,
                        "interceptor failed; failOpen: passing the event on unchanged"
                    );
                    failed_open += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ChainOutcome::Continue {
            event: Value::Object(event),
            failed_open,
        })
    }
}

impl fmt::Debug for InterceptorChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| match s {
                Step::Module(m) => format!("{m:?}"),
                Step::App(a) => a.label().to_owned(),
            }))
            .finish()
    }
}

/// Runs `interceptor` on one event and checks its answer against the [`protocol`].
pub async fn run(
    interceptor: &Interceptor,
    event: &Map<String, Value>,
) -> Result<Answer, InterceptorError> {
    let stdin = serde_json::to_vec(event)
        .map_err(|e| interceptor.error(FailureKind::InvalidInput(e.to_string())))?;
    let stdout = interceptor.run_raw(stdin).await?;
    protocol::decode_output(event, &stdout)
        .map_err(|message| interceptor.error(FailureKind::InvalidOutput(message)))
}

/// A fingerprint of the module files `specs` name (their SHA-256, or why they cannot be read),
/// so that a reload notices a rewritten module even when the flow file is unchanged.
pub fn modules_fingerprint(specs: &[InterceptorSpec], base_dir: Option<&Path>) -> String {
    fiso_wasm::fingerprint(
        specs.iter().filter_map(|spec| match spec {
            InterceptorSpec::Wasm(config) => Some(config.module.as_str()),
            InterceptorSpec::WasmerApp(_) => None,
        }),
        base_dir,
    )
}
