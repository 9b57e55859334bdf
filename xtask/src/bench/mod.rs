//! `cargo xtask bench`: Fiso measured next to what users would run instead, on this machine.
//! Release builds; `wrk` (Debian package) as the load generator at saturation, `hey` (Debian)
//! at a constant 1000 req/s ([`rate`]), nginx (Debian `nginx-light`) as the baseline proxy, a
//! minimal hyper server ([`upstream`]) as the upstream; 1 KiB JSON POSTs. Each scenario runs its
//! variants alternately for several rounds and reports medians. Writes `target/bench/report.md`
//! and `target/bench/report.json`; asserts nothing.
//!
//! Scenarios: Link vs nginx vs the bare hyper proxy ([`proxy`]) vs direct, Flow HTTP → HTTP
//! (5-field CEL transform + CloudEvent) vs the same references, the same flow with a WASM
//! interceptor, Flow Kafka → HTTP vs a bare consumer ([`kafka`]), operator reconcile and
//! admission timings ([`operator`]), start-up time and binary size; the top costs of each Fiso
//! scenario under perf ([`profile`]).
//!
//! `xtask bench kafka-fill|kafka-drain ...` are the Kafka scenario's producer and bare consumer,
//! run from the release build; `xtask bench kafka [--quick]` runs the Kafka scenario alone;
//! `xtask bench http [--quick] [--baseline <fiso>] [--traced]` the Link and Flow HTTP scenarios
//! alone, optionally beside another `fiso` binary (to compare two builds in one run) and beside
//! this build exporting every span (tracing's cost).
//!
//! This module is the command line and the order of the scenarios; by role: [`procs`] starts
//! the servers under test, [`wrk`] and [`rate`] load them, [`stats`] reduces the rounds to
//! medians and comparisons, [`startup`] times start-up, [`transform`] runs the criterion
//! benchmark, [`report`] renders the markdown.

mod bare_client;
mod kafka;
mod operator;
mod procs;
mod profile;
pub mod proxy;
mod rate;
mod report;
mod startup;
mod stats;
mod transform;
pub mod upstream;
mod wrk;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::measure::{build_release, machine, target_dir};
pub use procs::{apt_install, ensure_tools};
use procs::{peak_rss, Procs, Running};
use stats::{Variants, WASM_VARIANT};

/// Seconds of load per measurement, rounds per scenario.
const SECONDS: u32 = 8;
const ROUNDS: usize = 3;
/// Seconds per constant-rate measurement (full run, `--quick`).
const RATE_SECONDS: (u32, u32) = (10, 3);
/// Records pre-filled for the Kafka drain (full run, `--quick`).
const KAFKA_RECORDS: (usize, usize) = (200_000, 20_000);
/// Seconds of load under perf per scenario.
pub const PROFILE_SECONDS: u32 = 3;
/// The uppercase interceptor of the engine's tests (ignores its input, answers a fixed event).
const UPPERCASE_WAT: &str = "dataplane/wasm/testdata/uppercase.wat";

/// The size of `fiso` as the image ships it: stripped of symbols, as the Dockerfile does (the
/// bench's own build keeps them, and frame pointers, for perf).
fn shipped_size(fiso: &Path, work: &Path) -> Result<u64> {
    let stripped = work.join("fiso.stripped");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(fiso)
        .status()
        .context("running strip (binutils)")?;
    anyhow::ensure!(status.success(), "strip failed on {}", fiso.display());
    let size = std::fs::metadata(&stripped)?.len();
    std::fs::remove_file(&stripped)?;
    Ok(size)
}

/// What `--help` prints.
const USAGE: &str = "\
usage: cargo xtask bench [--quick]    every scenario, the report in target/bench/report.md
       cargo xtask bench kafka [--quick]
                                      the Kafka scenario alone
       cargo xtask bench http [--quick] [--baseline <fiso>]... [--traced]
                                      the Link and Flow HTTP scenarios alone, beside other
                                      builds of fiso, beside this build exporting traces";

/// Refuses an argument the scenario does not take: a typo would otherwise start a run of up
/// to twenty minutes without it. `false` once `--help` printed [`USAGE`].
fn arguments_ok(args: &[String], flags: &[&str], with_value: &[&str]) -> Result<bool> {
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(false);
            }
            a if flags.contains(&a) => {}
            a if with_value.contains(&a) => {
                rest.next().with_context(|| format!("{a} needs a value"))?;
            }
            a => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    Ok(true)
}

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("kafka-fill") => return kafka::fill(&args[1..]),
        Some("kafka-drain") => return kafka::drain(&args[1..]),
        Some("kafka") => return kafka_alone(root, &args[1..]),
        Some("http") => return http_alone(root, &args[1..]),
        _ => {}
    }
    if !arguments_ok(args, &["--quick"], &[])? {
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (seconds, rounds, rate_seconds) = timing(quick);
    procs::ensure_tools()?;
    let release = build_release(root)?;
    let fiso = release.join("fiso");
    let work = target_dir(root).join("bench");
    let _ = std::fs::remove_dir_all(work.join("work"));
    std::fs::create_dir_all(work.join("work"))?;
    let dir = work.join("work");

    let mut procs = Procs::default();
    let xtask = release.join("xtask");
    let upstream = procs.upstream(&xtask)?;
    let proxies = Proxies::start(&mut procs, &dir, &xtask, upstream)?;
    std::fs::write(dir.join("post.lua"), wrk::script())?;
    std::fs::write(dir.join("payload.json"), payload())?;
    let uppercase = dir.join("uppercase.wasm");
    std::fs::write(
        &uppercase,
        wat::parse_file(root.join(UPPERCASE_WAT)).context(UPPERCASE_WAT)?,
    )?;

    let link = procs.fiso_link(&fiso, &dir, upstream, &[])?;
    let flow = procs.fiso_flow(&fiso, &dir.join("flows"), upstream, None, &[])?;
    let wasm = procs.fiso_flow(
        &fiso,
        &dir.join("flows-wasm"),
        upstream,
        Some(&uppercase),
        &[],
    )?;

    // Every variant of a scenario under the same URL path, so the upstream does the same work.
    let mut link_targets = proxies.references(LINK_PATH);
    link_targets.push(fiso_target("fiso link", &link, LINK_PATH));
    let mut flow_targets = proxies.references(FLOW_PATH);
    flow_targets.push(fiso_target("fiso flow", &flow, FLOW_PATH));
    flow_targets.push(fiso_target(WASM_VARIANT, &wasm, FLOW_PATH));
    let load = Load::new(&dir, rounds, seconds, rate_seconds);
    let (link_rows, flow_rows) = load.run(&link_targets, &flow_targets)?;
    let link_rss = peak_rss(link.pid);
    let flow_rss = peak_rss(flow.pid);
    let wasm_rss = peak_rss(wasm.pid);

    // After the measurements: perf slows the process it records.
    let perf = profile::available(&dir);
    let mut profiles = serde_json::Map::new();
    match &perf {
        Ok(()) => {
            for (key, url, pid) in [
                ("link", url_of(&link_targets, "fiso link"), link.pid),
                ("flow", url_of(&flow_targets, "fiso flow"), flow.pid),
                ("wasm", url_of(&flow_targets, WASM_VARIANT), wasm.pid),
            ] {
                println!("bench: {key} under perf");
                let recording =
                    profile::Recording::start(pid, &dir.join(format!("perf-{key}.data")))?;
                wrk::run(&dir, url, PROFILE_SECONDS, None)?;
                profiles.insert(key.to_owned(), profile::to_json(&recording.finish()?));
            }
        }
        Err(reason) => println!("bench: no profiles: {reason}"),
    }
    drop(procs);

    // The Kafka drain gets its own upstream: counting requests is all it needs from it.
    let mut kafka_procs = Procs::default();
    let kafka_upstream = kafka_procs.upstream(&xtask)?;
    let mut kafka = kafka::bench(&kafka::Setup {
        root,
        xtask: &xtask,
        fiso: &fiso,
        dir: &dir,
        upstream: kafka_upstream,
        records: if quick {
            KAFKA_RECORDS.1
        } else {
            KAFKA_RECORDS.0
        },
        rounds,
        sync_each_seconds: if quick { 5 } else { 15 },
        profile: perf.is_ok(),
        direct_seconds: seconds,
        env: &[],
    })?;
    drop(kafka_procs);
    if let Some(costs) = kafka.as_object_mut().and_then(|k| k.remove("profile")) {
        if !costs.is_null() {
            profiles.insert("kafka".to_owned(), costs);
        }
    }

    let startup_runs = if quick { 1 } else { 5 };
    let startup_link = startup::median(&fiso, &dir, "link", startup_runs)?;
    let startup_flow = startup::median(&fiso, &dir, "flow", startup_runs)?;
    let size = shipped_size(&fiso, &work)?;
    let transforms = transform::run(root, quick)?;
    let operator = operator::run(root, &work, quick)?;

    let machine = machine();
    let report = json!({
        "machine": machine,
        "settings": {
            "seconds": seconds, "rounds": rounds, "connections": wrk::CONNECTIONS,
            "payload": "1 KiB JSON POST", "rate_rps": rate::RATE, "rate_seconds": rate_seconds,
        },
        "link": link_rows.summary("fiso link", link_rss),
        "flow": flow_rows.summary("fiso flow", flow_rss),
        "wasm": flow_rows.wasm_overhead(wasm_rss),
        "kafka": kafka,
        "profiles": match perf {
            Ok(()) => Value::Object(profiles),
            Err(reason) => json!({"unavailable": reason}),
        },
        "startup": {"link_ms": startup_link.as_secs_f64() * 1e3, "flow_10_flows_ms": startup_flow.as_secs_f64() * 1e3},
        "binary_bytes": size,
        "transforms": transforms,
        "operator": operator,
    });
    std::fs::write(
        work.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = report::markdown(&report);
    std::fs::write(work.join("report.md"), &md)?;
    println!("{md}");
    println!("bench: wrote {}", work.join("report.md").display());
    Ok(())
}

/// The Kafka scenario alone (with its profile when perf is there): its JSON to
/// `target/bench/kafka.json`.
fn kafka_alone(root: &Path, args: &[String]) -> Result<()> {
    if !arguments_ok(args, &["--quick"], &[])? {
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    procs::ensure_tools()?;
    let release = build_release(root)?;
    let work = target_dir(root).join("bench");
    let dir = work.join("work-kafka");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let xtask = release.join("xtask");
    let mut procs = Procs::default();
    let upstream = procs.upstream(&xtask)?;
    let kafka = kafka::bench(&kafka::Setup {
        root,
        xtask: &xtask,
        fiso: &release.join("fiso"),
        dir: &dir,
        upstream,
        records: if quick {
            KAFKA_RECORDS.1
        } else {
            KAFKA_RECORDS.0
        },
        rounds: if quick { 1 } else { ROUNDS },
        sync_each_seconds: if quick { 5 } else { 15 },
        profile: profile::available(&dir).is_ok(),
        direct_seconds: if quick { 2 } else { SECONDS },
        env: &[],
    })?;
    drop(procs);
    let text = serde_json::to_string_pretty(&kafka)?;
    std::fs::write(work.join("kafka.json"), &text)?;
    println!("{text}");
    Ok(())
}

/// The Link and Flow HTTP → HTTP scenarios alone (no WASM, Kafka, profiles, start-up or
/// operator), with `--baseline <fiso>` another build's `fiso` beside this one as variants
/// `fiso link (baseline)` / `fiso flow (baseline)` (a second `--baseline`: `(baseline 2)`, its
/// JSON keys `baseline2_link` ...), with `--traced` this build exporting every
/// span over OTLP/gRPC to a collector as `fiso link (tracing on)` / `fiso flow (tracing on)`:
/// their JSON to `target/bench/http.json`.
fn http_alone(root: &Path, args: &[String]) -> Result<()> {
    if !arguments_ok(args, &["--quick", "--traced"], &["--baseline"])? {
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let traced = args.iter().any(|a| a == "--traced");
    let baselines = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--baseline")
        .map(|(i, _)| {
            args.get(i + 1)
                .map(std::path::PathBuf::from)
                .context("--baseline needs the path of a fiso binary")
        })
        .collect::<Result<Vec<_>>>()?;
    let (seconds, rounds, rate_seconds) = timing(quick);
    procs::ensure_tools()?;
    let release = build_release(root)?;
    let work = target_dir(root).join("bench");
    let dir = work.join("work-http");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut procs = Procs::default();
    let xtask = release.join("xtask");
    let upstream = procs.upstream(&xtask)?;
    let proxies = Proxies::start(&mut procs, &dir, &xtask, upstream)?;
    std::fs::write(dir.join("post.lua"), wrk::script())?;
    std::fs::write(dir.join("payload.json"), payload())?;

    let mut link_targets = proxies.references(LINK_PATH);
    let mut flow_targets = proxies.references(FLOW_PATH);
    // (variant suffix, JSON key prefix, binary, environment) of each build measured.
    let mut builds = vec![(
        String::new(),
        String::new(),
        release.join("fiso"),
        Vec::new(),
    )];
    for (n, path) in baselines.into_iter().enumerate() {
        let (suffix, key) = match n {
            0 => (" (baseline)".to_owned(), "baseline_".to_owned()),
            n => (
                format!(" (baseline {})", n + 1),
                format!("baseline{}_", n + 1),
            ),
        };
        builds.push((suffix, key, path, Vec::new()));
    }
    if traced {
        let otel = procs.collector()?;
        builds.push((
            " (tracing on)".to_owned(),
            "traced_".to_owned(),
            release.join("fiso"),
            otel,
        ));
    }
    let mut pids = Vec::new();
    for (i, (suffix, key, fiso, env)) in builds.iter().enumerate() {
        // Each build its own config files: a link watches its file and would reload another's.
        let own = dir.join(format!("build-{i}"));
        std::fs::create_dir_all(&own)?;
        let link = procs.fiso_link(fiso, &own, upstream, env)?;
        let flow = procs.fiso_flow(fiso, &own.join("flows"), upstream, None, env)?;
        link_targets.push(fiso_target(&format!("fiso link{suffix}"), &link, LINK_PATH));
        flow_targets.push(fiso_target(&format!("fiso flow{suffix}"), &flow, FLOW_PATH));
        pids.push((suffix, key, link.pid, flow.pid));
    }
    let load = Load::new(&dir, rounds, seconds, rate_seconds);
    let (link_rows, flow_rows) = load.run(&link_targets, &flow_targets)?;
    let mut report = json!({
        "machine": machine(),
        "settings": {
            "seconds": seconds, "rounds": rounds, "connections": wrk::CONNECTIONS,
            "payload": "1 KiB JSON POST", "rate_rps": rate::RATE, "rate_seconds": rate_seconds,
        },
    });
    for (suffix, key, link_pid, flow_pid) in pids {
        report[format!("{key}link")] =
            link_rows.summary(&format!("fiso link{suffix}"), peak_rss(link_pid));
        report[format!("{key}flow")] =
            flow_rows.summary(&format!("fiso flow{suffix}"), peak_rss(flow_pid));
    }
    drop(procs);
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(work.join("http.json"), &text)?;
    println!("{text}");
    Ok(())
}

/// Seconds per wrk run, rounds, seconds per constant-rate run (short with `--quick`).
fn timing(quick: bool) -> (u32, usize, u32) {
    if quick {
        (2, 1, RATE_SECONDS.1)
    } else {
        (SECONDS, ROUNDS, RATE_SECONDS.0)
    }
}

/// The load `cargo xtask pgo` profiles `fiso` under, each `fiso` started with `env`, in `dir`:
/// `seconds` of wrk against the bench's Link (every layer) and then its Flow HTTP → HTTP, then
/// the Kafka → HTTP drain of `records` with each `ordering` (see [`kafka::train`]). Returns
/// once every `fiso` has exited (an instrumented build writes its profile at exit).
pub fn train(
    root: &Path,
    fiso: &Path,
    xtask: &Path,
    dir: &Path,
    (seconds, records): (u32, usize),
    env: &[(&str, String)],
) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("post.lua"), wrk::script())?;
    let mut procs = Procs::default();
    let upstream = procs.upstream(xtask)?;
    {
        let mut http = Procs::default();
        let link = http.fiso_link(fiso, dir, upstream, env)?;
        let flow = http.fiso_flow(fiso, &dir.join("flows"), upstream, None, env)?;
        for (what, url) in [
            ("link", format!("http://{}/link/api{LINK_PATH}", link.addr)),
            ("flow", format!("http://{}{FLOW_PATH}", flow.addr)),
        ] {
            let load = wrk::run(dir, &url, seconds, None)?;
            println!("pgo: {what} {:.0} req/s", load.rps);
            if load.errors > 0 {
                bail!("{what}: {} failed requests while training", load.errors);
            }
        }
    }
    kafka::train(&kafka::Setup {
        root,
        xtask,
        fiso,
        dir,
        upstream,
        records,
        rounds: 1,
        sync_each_seconds: 0,
        profile: false,
        direct_seconds: 0,
        env,
    })
}

/// The path the Link scenario requests (after `/link/api` through the Link).
const LINK_PATH: &str = "/api/v2/orders";
/// The path the Flow scenario requests.
const FLOW_PATH: &str = "/ingest";

/// A variant of a scenario: its name, the URL it is loaded at, the process whose CPU counts.
type Target = (String, String, Option<u32>);

/// The proxies Fiso is measured beside, in front of the same upstream.
struct Proxies {
    upstream: SocketAddr,
    nginx: Running,
    /// The bare hyper proxy ([`proxy`]) in Fiso's shape, and one runtime per core.
    hyper: Running,
    hyper_per_core: Running,
}

impl Proxies {
    fn start(procs: &mut Procs, dir: &Path, xtask: &Path, upstream: SocketAddr) -> Result<Self> {
        Ok(Proxies {
            upstream,
            nginx: procs.nginx(dir, upstream)?,
            hyper: procs.hyper_proxy(xtask, upstream, "shared")?,
            hyper_per_core: procs.hyper_proxy(xtask, upstream, "per-core")?,
        })
    }

    /// What Fiso is measured beside: the upstream directly, and each proxy in front of it.
    fn references(&self, path: &str) -> Vec<Target> {
        let via = |name: &str, proxy: &Running| {
            (
                name.to_owned(),
                format!("http://{}{path}", proxy.addr),
                Some(proxy.pid),
            )
        };
        vec![
            (
                "direct".to_owned(),
                format!("http://{}{path}", self.upstream),
                None,
            ),
            via("nginx", &self.nginx),
            via(stats::HYPER_PROXY, &self.hyper),
            via(stats::HYPER_PER_CORE, &self.hyper_per_core),
        ]
    }
}

/// The URL of the variant `name`.
fn url_of<'a>(targets: &'a [Target], name: &str) -> &'a str {
    &targets
        .iter()
        .find(|t| t.0 == name)
        .expect("every profiled variant is loaded")
        .1
}

/// A Fiso process as a variant: the Link's URL carries `/link/api` before `path`.
fn fiso_target(name: &str, fiso: &Running, path: &str) -> Target {
    let prefix = if name.starts_with("fiso link") {
        "/link/api"
    } else {
        ""
    };
    (
        name.to_owned(),
        format!("http://{}{prefix}{path}", fiso.addr),
        Some(fiso.pid),
    )
}

/// How the HTTP scenarios are loaded.
struct Load<'a> {
    dir: &'a Path,
    rounds: usize,
    seconds: u32,
    rate_seconds: u32,
}

impl<'a> Load<'a> {
    fn new(dir: &'a Path, rounds: usize, seconds: u32, rate_seconds: u32) -> Self {
        Load {
            dir,
            rounds,
            seconds,
            rate_seconds,
        }
    }

    /// The Link and the Flow variants' figures: `rounds` rounds, each loading every variant of
    /// both scenarios in turn (saturation with wrk, then the constant rate with hey).
    fn run(&self, link: &[Target], flow: &[Target]) -> Result<(Variants, Variants)> {
        let (mut link_rows, mut flow_rows) = (Variants::default(), Variants::default());
        for round in 0..self.rounds {
            println!("bench: round {}/{}", round + 1, self.rounds);
            for (rows, targets) in [(&mut link_rows, link), (&mut flow_rows, flow)] {
                for (name, url, pid) in targets {
                    rows.push(name, wrk::run(self.dir, url, self.seconds, *pid)?);
                }
                for (name, url, _) in targets {
                    let hey = rate::hey(&self.dir.join("payload.json"), url, self.rate_seconds)?;
                    rows.push_rate(name, hey);
                }
            }
        }
        Ok((link_rows, flow_rows))
    }
}

/// The 1 KiB JSON body every request carries.
pub fn payload() -> String {
    let filler = "x".repeat(820);
    json!({
        "order_id": "ORD-12345",
        "customer": {"name": "Ada Lovelace", "tier": "gold"},
        "amount": 99.5,
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
        "note": filler,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::arguments_ok;
    use crate::strings as args;

    #[test]
    fn a_scenario_refuses_what_it_does_not_take_and_stops_at_help() {
        let http = |a: &[&str]| arguments_ok(&args(a), &["--quick"], &["--baseline"]);
        assert!(http(&["--quick", "--baseline", "/x/fiso"]).unwrap());
        assert!(!http(&["--help"]).unwrap(), "--help runs nothing");
        let typo = http(&["--quik"]).unwrap_err().to_string();
        assert!(typo.contains("unknown argument \"--quik\""), "{typo}");
        let bare = http(&["--baseline"]).unwrap_err().to_string();
        assert!(bare.contains("--baseline needs a value"), "{bare}");
    }
}
