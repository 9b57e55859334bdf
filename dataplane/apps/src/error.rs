//! Why apps could not be started or reloaded.

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// The build was made without the `wasmer` cargo feature.
    #[error(
        "this build has no wasmer: apps (`{names}`) need the Wasmer build of fiso: {how}",
        names = .0,
        how = fiso_wasm::WASMER_BUILD
    )]
    NoWasmer(String),
    #[error("app `{app}`: cannot read module {module}: {source}")]
    ReadModule {
        app: String,
        module: String,
        #[source]
        source: std::io::Error,
    },
    #[error("app `{app}`: module {module} cannot run: {message}")]
    Module {
        app: String,
        module: String,
        message: String,
    },
    #[error("app `{app}`: {message}")]
    Setup { app: String, message: String },
    #[error("app `{app}`: no free port in defaultPortRange {min}-{max}")]
    NoPort { app: String, min: u16, max: u16 },
    #[error(transparent)]
    Metrics(#[from] fiso_runtime::metrics::MetricsError),
}
