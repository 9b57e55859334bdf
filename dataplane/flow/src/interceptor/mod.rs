//! WASM interceptors: WASI command modules that see each event (stdin → stdout JSON) before the
//! sink, and may change it or reject it.
//!
//! * [`protocol`]: the contract between Fiso-Flow and a module (what goes in, what may come
//!   back) and its validation.
//! * [`InterceptorChain`]: a flow's `interceptors`, loaded once ([`InterceptorChain::build`]) and
//!   applied per event ([`InterceptorChain::apply`]), with `failOpen` handled per interceptor.
//! * [`Interceptor`]: one loaded module with its limits, run by the engine of `fiso-wasm`
//!   (wasmtime, or wasmer with the cargo feature `wasmer`; `runtime: wazero` runs on wasmtime).
//!
//! Loading (reading and compiling a module) is blocking CPU work: call
//! [`InterceptorChain::build`] at flow start / reload, from `spawn_blocking` when on a runtime.

pub mod protocol;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use fiso_config::flow::InterceptorSpec;
use serde_json::{Map, Value};

pub use fiso_wasm::{
    BuildErrorKind, FailureKind, InterceptorBuildError, InterceptorError, Limits,
    Module as Interceptor, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT,
};
pub use protocol::Answer;

/// A flow's interceptors, in config order.
#[derive(Default)]
pub struct InterceptorChain {
    interceptors: Vec<Interceptor>,
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
    /// `base_dir` (the directory of the flow file). Blocking: reads and compiles the modules
    /// (cached by content hash, so a reload with unchanged modules does not recompile).
    pub fn build(
        specs: &[InterceptorSpec],
        base_dir: Option<&Path>,
    ) -> Result<Self, InterceptorBuildError> {
        let interceptors = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| match spec {
                InterceptorSpec::Wasm(config) => {
                    Interceptor::load(config, base_dir).map_err(|kind| InterceptorBuildError {
                        index,
                        module: config.module.clone(),
                        kind,
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(InterceptorChain { interceptors })
    }

    pub fn is_empty(&self) -> bool {
        self.interceptors.is_empty()
    }

    pub fn interceptors(&self) -> &[Interceptor] {
        &self.interceptors
    }

    /// Whether a module file changed on disk since it was loaded (or can no longer be read):
    /// the caller then rebuilds the chain. Blocking (reads and hashes the files).
    pub fn modules_changed(&self) -> bool {
        self.interceptors.iter().any(|i| i.is_stale())
    }

    /// Runs `event` (a JSON object in the [`protocol`] input shape; a missing `headers` is taken
    /// as `{}`) through every interceptor in order. An interceptor that fails with
    /// `failOpen: true` is skipped with a warning and counted in `failed_open`.
    pub async fn apply(&self, event: Value) -> Result<ChainOutcome, InterceptorError> {
        let mut failed_open = 0;
        let mut event = match event {
            Value::Object(map) => map,
            other => {
                let module = self.interceptors.first().map_or("", |i| i.module());
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
        for interceptor in &self.interceptors {
            match run(interceptor, &event).await {
                Ok(Answer::Event(Value::Object(next))) => event = next,
                Ok(Answer::Event(_)) => unreachable!("protocol::decode_output returns objects"),
                Ok(Answer::Reject { status, reason }) => {
                    return Ok(ChainOutcome::Rejected {
                        status,
                        reason,
                        module: interceptor.module().to_owned(),
                        failed_open,
                    })
                }
                Err(e) if interceptor.fail_open() => {
                    tracing::warn!(
                        module = interceptor.module(),
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
        f.debug_list().entries(&self.interceptors).finish()
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
        specs.iter().map(|spec| {
            let InterceptorSpec::Wasm(config) = spec;
            config.module.as_str()
        }),
        base_dir,
    )
}
