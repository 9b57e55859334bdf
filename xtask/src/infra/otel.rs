//! The OpenTelemetry collector of the trace-export tests: PyPI `rotel` (a lightweight
//! collector whose wheel ships `rotel/rotel-agent`, OTLP gRPC and HTTP receivers). A tool: each
//! test starts its own collector on free ports and reads the spans it prints, so nothing runs
//! here. Exports `FISO_E2E_ROTEL`.

use anyhow::Result;

use super::pip::PipBinary;
use super::{Component, Ctx};

const ROTEL: PipBinary = PipBinary {
    package: "rotel",
    version: "0.0.1a15",
    module: "rotel",
    binary: "rotel-agent",
};

pub struct Otel;

impl Component for Otel {
    fn name(&self) -> &'static str {
        "otel"
    }

    fn install(&self, ctx: &Ctx) -> Result<()> {
        ROTEL
            .install(ctx, &ctx.logs_dir().join("otel-install.log"))
            .map(drop)
    }

    fn is_up(&self, ctx: &Ctx) -> bool {
        ROTEL.path(ctx).is_some()
    }

    fn is_tool(&self) -> bool {
        true
    }

    fn env(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        ROTEL
            .path(ctx)
            .map(|p| vec![("FISO_E2E_ROTEL", p.display().to_string())])
            .unwrap_or_default()
    }
}
