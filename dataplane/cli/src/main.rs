//! `fiso`: the command line of Fiso.
//!
//! Exit codes: 0 success, 1 failure (invalid config, failed command), 2 usage error.

mod cmd;
mod lines;
mod project;
mod scaffold;
mod style;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's allocator, for librdkafka's C code too (it takes the `malloc`
/// symbols). A Kafka record is allocated on librdkafka's broker thread and freed on a Tokio
/// worker, and a Flow event or Link request allocates and frees dozens of small blocks across
/// workers: glibc spent a quarter of the Kafka drain's CPU in `malloc` / `free`, their arena
/// locks and the consolidation of freed chunks. mimalloc measured as fast but nearly doubled the
/// Link's peak RSS; jemalloc's stays within a few MiB of glibc's. The figures are in the
/// README's Benchmarks.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads from this symbol at its first allocation (`MALLOC_CONF`
/// in the environment still overrides them). Each thread's cache keeps 200 to 400 blocks of a
/// small size instead of 20 to 200. hyper takes a new 8 KiB read buffer for nearly every request
/// on a connection, because the previous request's headers still hold the old one. A jemalloc
/// slab of that size holds one block, so each block that missed the 20-block cache went through
/// jemalloc's extent layer: 4% of the Link's user CPU. With the larger cache, the Link and an
/// HTTP flow spend 2–5% less CPU per request, for about 1 MiB more peak RSS. The figures are in
/// the README's Benchmarks.
#[export_name = "malloc_conf"]
static JEMALLOC_OPTIONS: &u8 = &b"tcache_nslots_small_min:200,tcache_nslots_small_max:400\0"[0];

/// `fiso --version` says which of the two builds it is: the `fiso-wasmer` image's runs apps and
/// `runtime: wasmer` interceptors, the `fiso` image's refuses them.
#[cfg(feature = "wasmer")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (with Wasmer)");
#[cfg(not(feature = "wasmer"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (without Wasmer)");

/// Fiso: your app talks to localhost, Fiso talks to the world.
#[derive(Debug, Parser)]
#[command(name = "fiso", version = VERSION, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a project scaffold under ./fiso (interactive, or with flags / --defaults).
    Init(cmd::init::InitArgs),
    /// Check flow files and the link config; reports every problem with file:line:column.
    Validate(cmd::validate::ValidateArgs),
    /// Work with transforms.
    #[command(subcommand)]
    Transform(cmd::transform::TransformCommand),
    /// Convert local flows, link targets and apps into FlowDefinition / LinkTarget / WasmApp manifests.
    Export(cmd::export::ExportArgs),
    /// Run the flow data plane: every flow in FISO_CONFIG_DIR, hot-reloaded.
    Flow(cmd::flow::FlowArgs),
    /// Run the link proxy: localhost:3500/link/{target}/{path} to the configured targets.
    Link(cmd::link::LinkArgs),
    /// Run the whole data plane of a pod (flows + link), as the injected sidecar does.
    Run(cmd::run::RunArgs),
    /// Run Wasmer/WASIX apps (upstream's fiso-wasmer): long-running servers and per-request
    /// modules, supervised and hot-reloaded.
    Wasmer(cmd::wasmer::WasmerArgs),
    /// Run the project's flows, link and your app (`-- CMD`) locally with pretty logs and live
    /// reload (no Docker needed).
    Dev(cmd::dev::DevArgs),
    /// Show what `fiso dev` logged: the flows', the link's or an app's output (fiso/.dev/).
    Logs(cmd::logs::LogsArgs),
    /// Send test events to a Kafka topic (waits for every delivery report).
    Produce(cmd::produce::ProduceArgs),
    /// Print a Kafka topic's records: key, headers, partition, offset, value.
    Consume(cmd::consume::ConsumeArgs),
    /// Check project structure, config validity, free ports and reachable dependencies.
    Doctor(cmd::doctor::DoctorArgs),
    /// Print a shell completion script.
    Completions(cmd::completions::CompletionsArgs),
    /// Print the CLI reference (Markdown) for the README.
    #[command(hide = true)]
    HelpReference,
}

impl Command {
    /// The commands that run a data plane. Rust ignores SIGPIPE so that a write to a peer that
    /// went away is an error, not the end of the process: servers keep that.
    fn serves(&self) -> bool {
        matches!(
            self,
            Command::Flow(_)
                | Command::Dev(_)
                | Command::Link(_)
                | Command::Run(_)
                | Command::Wasmer(_)
        )
    }
}

/// Lets a closed stdout (`fiso doctor | head -1`) end the process quietly, as it ends `cat`,
/// instead of a "Broken pipe" error or panic from the next write.
fn end_quietly_on_closed_pipe() {
    // SAFETY: called at the start of `main`, before any other thread exists; `SIG_DFL` is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.serves() {
        end_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Transform(cmd) => cmd::transform::run(cmd),
        Command::Export(args) => cmd::export::run(args),
        Command::Flow(args) => cmd::flow::run(args),
        Command::Dev(args) => cmd::dev::run(args),
        Command::Link(args) => cmd::link::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Wasmer(args) => cmd::wasmer::run(args),
        Command::Logs(args) => cmd::logs::run(args),
        Command::Produce(args) => cmd::produce::run(args),
        Command::Consume(args) => cmd::consume::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Completions(args) => cmd::completions::run::<Cli>(args),
        Command::HelpReference => cmd::reference::run::<Cli>(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!(
                "{} {}",
                style::error("error:"),
                fiso_runtime::error_text::chain(err.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::Cli;

    /// `-f` is `--follow` wherever it exists, `-n` the namespace, `-c` a count, and so on: a
    /// short flag means one thing in every subcommand.
    #[test]
    fn short_flags_mean_the_same_thing_everywhere() {
        let mut meanings: BTreeMap<char, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut pending = vec![(String::new(), Cli::command())];
        while let Some((path, command)) = pending.pop() {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                if let (Some(short), Some(long)) = (arg.get_short(), arg.get_long()) {
                    let meaning = match long {
                        "max-messages" | "count" => "count",
                        other => other,
                    };
                    meanings
                        .entry(short)
                        .or_default()
                        .entry(meaning.to_owned())
                        .or_default()
                        .push(path.clone());
                }
            }
            pending.extend(command.get_subcommands().map(|c| (path.clone(), c.clone())));
        }
        for (short, longs) in meanings {
            assert_eq!(longs.len(), 1, "-{short} means {longs:?}");
        }
    }
}
