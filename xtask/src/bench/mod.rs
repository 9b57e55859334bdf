//! `cargo xtask bench`: Fiso measured next to what users would run instead, on this machine.
//! Release builds; `wrk` (Debian package) as the load generator at saturation, `hey` (Debian)
//! at a constant 1000 req/s ([`rate`]), nginx (Debian `nginx-light`) as the baseline proxy, a
//! minimal hyper server ([`upstream`]) as the upstream; 1 KiB JSON POSTs. Each scenario runs its
//! variants alternately for several rounds and reports medians. Writes `target/bench/report.md`
//! and `target/bench/report.json`; asserts nothing.
//!
//! Scenarios: Link vs nginx vs direct, Flow HTTP → HTTP (5-field CEL transform + CloudEvent) vs
//! nginx vs direct, the same flow with a WASM interceptor, Flow Kafka → HTTP vs a bare consumer
//! ([`kafka`]), operator reconcile and admission timings ([`operator`]), start-up time and
//! binary size; the top costs of each Fiso scenario under perf
//! ([`profile`]).
//!
//! `xtask bench kafka-fill|kafka-drain ...` are the Kafka scenario's producer and bare consumer,
//! run from the release build.

mod kafka;
mod operator;
mod profile;
mod rate;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::measure::{build_release, machine, target_dir};
use rate::Rate;

/// Seconds of load per measurement, rounds per scenario, connections.
const SECONDS: u32 = 8;
const ROUNDS: usize = 3;
const CONNECTIONS: u32 = 64;
/// Seconds per constant-rate measurement (full run, `--quick`).
const RATE_SECONDS: (u32, u32) = (10, 3);
/// Records pre-filled for the Kafka drain (full run, `--quick`).
const KAFKA_RECORDS: (usize, usize) = (200_000, 20_000);
/// Seconds of load under perf per scenario.
const PROFILE_SECONDS: u32 = 3;
/// The uppercase interceptor of the engine's tests (ignores its input, answers a fixed event).
const UPPERCASE_WAT: &str = "dataplane/flow/src/interceptor/testdata/uppercase.wat";

pub fn main(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("kafka-fill") => return kafka::fill(&args[1..]),
        Some("kafka-drain") => return kafka::drain(&args[1..]),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (seconds, rounds) = if quick { (2, 1) } else { (SECONDS, ROUNDS) };
    let rate_seconds = if quick {
        RATE_SECONDS.1
    } else {
        RATE_SECONDS.0
    };
    ensure_tools()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = build_release(root)?;
    let fiso = release.join("fiso");
    let work = target_dir(root).join("bench");
    let _ = std::fs::remove_dir_all(work.join("work"));
    std::fs::create_dir_all(work.join("work"))?;
    let dir = work.join("work");

    let mut procs = Procs::default();
    let xtask = release.join("xtask");
    let upstream = procs.upstream(&xtask)?;
    let nginx = procs.nginx(&dir, upstream)?;
    std::fs::write(dir.join("post.lua"), wrk_script())?;
    std::fs::write(dir.join("payload.json"), payload())?;
    let uppercase = dir.join("uppercase.wasm");
    std::fs::write(
        &uppercase,
        wat::parse_file(root.join(UPPERCASE_WAT)).context(UPPERCASE_WAT)?,
    )?;

    let link = procs.fiso_link(&fiso, &dir, upstream)?;
    let flow = procs.fiso_flow(&fiso, &dir.join("flows"), upstream, None)?;
    let wasm = procs.fiso_flow(&fiso, &dir.join("flows-wasm"), upstream, Some(&uppercase))?;

    // Every variant of a scenario under the same URL path, so the upstream does the same work.
    let link_targets = [
        ("direct", format!("http://{upstream}/api/v2/orders"), None),
        ("nginx", format!("http://{nginx}/api/v2/orders"), None),
        (
            "fiso link",
            format!("http://{}/link/api/api/v2/orders", link.addr),
            Some(link.pid),
        ),
    ];
    let flow_targets = [
        ("direct", format!("http://{upstream}/ingest"), None),
        ("nginx", format!("http://{nginx}/ingest"), None),
        (
            "fiso flow",
            format!("http://{}/ingest", flow.addr),
            Some(flow.pid),
        ),
        (
            WASM_VARIANT,
            format!("http://{}/ingest", wasm.addr),
            Some(wasm.pid),
        ),
    ];
    let mut link_rows = Variants::default();
    let mut flow_rows = Variants::default();
    for round in 0..rounds {
        println!("bench: round {}/{rounds}", round + 1);
        for (rows, targets) in [
            (&mut link_rows, &link_targets[..]),
            (&mut flow_rows, &flow_targets[..]),
        ] {
            for (name, url, pid) in targets {
                rows.push(name, wrk(&dir, url, seconds, *pid)?);
            }
            for (name, url, _) in targets {
                rows.push_rate(
                    name,
                    rate::hey(&dir.join("payload.json"), url, rate_seconds)?,
                );
            }
        }
    }
    let link_rss = peak_rss(link.pid);
    let flow_rss = peak_rss(flow.pid);
    let wasm_rss = peak_rss(wasm.pid);

    // After the measurements: perf slows the process it records.
    let perf = profile::available(&dir);
    let mut profiles = serde_json::Map::new();
    match &perf {
        Ok(()) => {
            for (key, url, pid) in [
                ("link", &link_targets[2].1, link.pid),
                ("flow", &flow_targets[2].1, flow.pid),
                ("wasm", &flow_targets[3].1, wasm.pid),
            ] {
                println!("bench: {key} under perf");
                let recording =
                    profile::Recording::start(pid, &dir.join(format!("perf-{key}.data")))?;
                wrk(&dir, url, PROFILE_SECONDS, None)?;
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
    })?;
    drop(kafka_procs);
    if let Some(costs) = kafka.as_object_mut().and_then(|k| k.remove("profile")) {
        if !costs.is_null() {
            profiles.insert("kafka".to_owned(), costs);
        }
    }

    let startup_link = median_duration(
        (0..if quick { 1 } else { 5 })
            .map(|_| startup(&fiso, &dir, "link"))
            .collect::<Result<_>>()?,
    );
    let startup_flow = median_duration(
        (0..if quick { 1 } else { 5 })
            .map(|_| startup(&fiso, &dir, "flow"))
            .collect::<Result<_>>()?,
    );
    let size = std::fs::metadata(&fiso)?.len();
    let transforms = transform_bench(root, &cargo, quick)?;
    let operator = operator::run(root, &work, quick)?;

    let machine = machine();
    let report = json!({
        "machine": machine,
        "settings": {
            "seconds": seconds, "rounds": rounds, "connections": CONNECTIONS,
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
    let md = markdown(&report);
    std::fs::write(work.join("report.md"), &md)?;
    println!("{md}");
    println!("bench: wrote {}", work.join("report.md").display());
    Ok(())
}

/// The criterion benchmark of `dataplane/flow/benches/transform.rs`: per shape, the CEL
/// transform's and the hand-written serde_json code's median time per event.
fn transform_bench(root: &Path, cargo: &str, quick: bool) -> Result<Value> {
    println!("bench: CEL transform vs serde_json (criterion)");
    let (warm, measure) = if quick { ("0.2", "0.3") } else { ("1", "3") };
    let out = Command::new(cargo)
        .args(["bench", "-p", "fiso-flow", "--bench", "transform", "--"])
        .args(["--warm-up-time", warm, "--measurement-time", measure])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("cargo bench -p fiso-flow --bench transform failed");
    }
    // `<shape>/<variant>  time:   [low median high]`, the name sometimes on the line before.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut name = String::new();
    let mut times: Vec<(String, String, f64)> = Vec::new();
    for line in text.lines() {
        let (head, tail) = match line.split_once("time:") {
            Some((h, t)) => (h.trim(), Some(t)),
            None => (line.trim(), None),
        };
        if !head.is_empty() && head.contains('/') && !head.starts_with("Benchmarking") {
            name = head.to_owned();
        }
        let Some(tail) = tail else { continue };
        let parts: Vec<&str> = tail
            .trim_matches(|c| c == ' ' || c == '[' || c == ']')
            .split_whitespace()
            .collect();
        let (Some(value), Some(unit)) = (parts.get(2), parts.get(3)) else {
            continue;
        };
        let factor = match *unit {
            "ps" => 1e-3,
            "ns" => 1.0,
            "µs" | "us" => 1e3,
            "ms" => 1e6,
            _ => f64::NAN,
        };
        let ns = value.parse::<f64>().unwrap_or(f64::NAN) * factor;
        if let Some((shape, variant)) = name.rsplit_once('/') {
            times.push((shape.to_owned(), variant.to_owned(), ns));
        }
    }
    let mut shapes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (shape, _, _) in &times {
        if seen.contains(shape) {
            continue;
        }
        seen.push(shape.clone());
        let of = |v: &str| {
            times
                .iter()
                .find(|(s, x, _)| s == shape && x == v)
                .map(|t| t.2)
        };
        let (cel, hand) = (of("cel"), of("serde_json"));
        shapes.push(json!({
            "shape": shape, "cel_ns": cel, "serde_json_ns": hand,
            "ratio": cel.zip(hand).map(|(c, h)| c / h),
        }));
    }
    Ok(Value::Array(shapes))
}

/// nginx, wrk and hey from Debian, installed when missing.
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [("nginx", "nginx-light"), ("wrk", "wrk"), ("hey", "hey")]
        .into_iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args([
                    "-c",
                    &format!("command -v {bin} || test -x /usr/sbin/{bin}"),
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("bench: apt-get install {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get")?;
    if !status.success() {
        bail!("installing {} failed", missing.join(" "));
    }
    // The package starts the system nginx on :80; the benchmark runs its own.
    let _ = Command::new("service").args(["nginx", "stop"]).status();
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A running Fiso process under test.
struct Running {
    addr: SocketAddr,
    pid: u32,
}

/// The servers of one run, killed when dropped.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM: nginx's master then stops its workers too (SIGKILL would orphan them).
        for child in &mut self.0 {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Procs {
    fn upstream(&mut self, xtask: &Path) -> Result<SocketAddr> {
        let mut child = Command::new(xtask)
            .args(["bench-upstream", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        self.0.push(child);
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .context("the upstream did not start")?
            .parse()?;
        Ok(addr)
    }

    fn nginx(&mut self, dir: &Path, upstream: SocketAddr) -> Result<SocketAddr> {
        let port = free_port()?;
        let conf = format!(
            "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
             \x20 upstream up {{ server {upstream}; keepalive 64; }}\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
             \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            d = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let nginx = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        self.0.push(
            Command::new(nginx)
                .arg("-c")
                .arg(&path)
                .arg("-p")
                .arg(dir)
                .stderr(Stdio::null())
                .spawn()?,
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr, "nginx")?;
        Ok(addr)
    }

    /// `fiso link` with a target that exercises every layer: bearer auth from a file, allowed
    /// paths, breaker, retry, and a rate limit too high to bind.
    fn fiso_link(&mut self, fiso: &Path, dir: &Path, upstream: SocketAddr) -> Result<Running> {
        std::fs::write(dir.join("token"), "bench-token\n")?;
        let port = free_port()?;
        let config = format!(
            "listenAddr: 127.0.0.1:{port}\nmetricsAddr: 127.0.0.1:0\ntargets:\n  - name: api\n\
             \x20   protocol: http\n    host: 127.0.0.1\n    port: {}\n\
             \x20   auth:\n      type: bearer\n      secretRef:\n        filePath: {}\n\
             \x20   allowedPaths: [\"/api/v2/**\"]\n\
             \x20   circuitBreaker:\n      enabled: true\n      failureThreshold: 5\n\
             \x20   retry:\n      maxAttempts: 3\n\
             \x20   rateLimit:\n      requestsPerSecond: 10000000\n",
            upstream.port(),
            dir.join("token").display()
        );
        std::fs::write(dir.join("link.yaml"), config)?;
        let child = quiet(
            Command::new(fiso)
                .arg("link")
                .arg("--config")
                .arg(dir.join("link.yaml")),
        )
        .spawn()?;
        let pid = child.id();
        self.0.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr, "fiso link")?;
        Ok(Running { addr, pid })
    }

    /// `fiso flow` with one HTTP → HTTP flow from `flows`: a 5-field CEL transform and the
    /// CloudEvent, then the WASM `interceptor` if any.
    fn fiso_flow(
        &mut self,
        fiso: &Path,
        flows: &Path,
        upstream: SocketAddr,
        interceptor: Option<&Path>,
    ) -> Result<Running> {
        std::fs::create_dir_all(flows)?;
        let port = free_port()?;
        let mut yaml = flow_yaml("bench", port, upstream);
        if let Some(module) = interceptor {
            yaml.push_str(&format!(
                "interceptors:\n  - type: wasm\n    config:\n      module: {}\n",
                module.display()
            ));
        }
        std::fs::write(flows.join("bench.yaml"), yaml)?;
        let child = quiet(
            Command::new(fiso)
                .arg("flow")
                .arg("--config-dir")
                .arg(flows)
                .args(["--metrics-addr", "127.0.0.1:0"]),
        )
        .spawn()?;
        let pid = child.id();
        self.0.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr, "fiso flow")?;
        Ok(Running { addr, pid })
    }
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.env("FISO_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn flow_yaml(name: &str, port: u16, upstream: SocketAddr) -> String {
    format!(
        "name: {name}\nsource:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:{port}\n    path: /ingest\n\
         transform:\n  fields:\n    order_id: data.order_id\n    customer: data.customer.name\n\
         \x20   total: data.amount * 1.2\n    currency: '\"EUR\"'\n    items: size(data.items)\n\
         cloudevents:\n  type: '\"order.created\"'\n  source: '\"bench\"'\n\
         sink:\n  type: http\n  config:\n    url: http://{upstream}/ingest\n"
    )
}

/// The 1 KiB JSON body every request carries.
fn payload() -> String {
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

fn wrk_script() -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        payload()
    )
}

/// One load measurement.
#[derive(Debug, Clone)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU seconds the measured process spent per 1000 requests.
    cpu_per_1000: Option<f64>,
}

fn wrk(dir: &Path, url: &str, seconds: u32, pid: Option<u32>) -> Result<Load> {
    let cpu_before = pid.map(cpu_seconds);
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(dir.join("post.lua"))
        .arg(url)
        .output()?;
    let cpu_after = pid.map(cpu_seconds);
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps: f64 = find("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("wrk printed no Requests/sec for {url}:\n{text}"))?;
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    let cpu_per_1000 = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if requests > 0.0 => Some((b - a) / (requests / 1000.0)),
        _ => None,
    };
    Ok(Load {
        rps,
        p50_ms: find("50%").map(parse_latency).unwrap_or(f64::NAN),
        p99_ms: find("99%").map(parse_latency).unwrap_or(f64::NAN),
        errors,
        cpu_per_1000,
    })
}

/// `1.23ms`, `850.00us`, `1.02s` → milliseconds.
fn parse_latency(v: &str) -> f64 {
    let v = v.trim();
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The flow variant with the uppercase WASM interceptor after the transform and CloudEvent.
const WASM_VARIANT: &str = "fiso flow + wasm";

/// The measurements of one variant: at saturation (wrk) and at a constant rate (hey).
struct Variant {
    name: String,
    loads: Vec<Load>,
    rates: Vec<Rate>,
}

/// The measurements of each variant of a scenario, in the order they were first seen.
#[derive(Default)]
struct Variants(Vec<Variant>);

impl Variants {
    fn entry(&mut self, name: &str) -> &mut Variant {
        let i = match self.0.iter().position(|v| v.name == name) {
            Some(i) => i,
            None => {
                self.0.push(Variant {
                    name: name.to_owned(),
                    loads: Vec::new(),
                    rates: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    fn push(&mut self, name: &str, load: Load) {
        println!(
            "bench:   {name:<16} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            load.rps, load.p50_ms, load.p99_ms
        );
        self.entry(name).loads.push(load);
    }

    fn push_rate(&mut self, name: &str, rate: Rate) {
        println!(
            "bench:   {name:<16} @{:>6.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            rate.rps, rate.p50_ms, rate.p99_ms
        );
        self.entry(name).rates.push(rate);
    }

    fn get(&self, name: &str) -> Option<&Variant> {
        self.0.iter().find(|v| v.name == name)
    }

    /// Median of `f` over the saturation runs of `name` (NaN if there are none).
    fn load(&self, name: &str, f: impl Fn(&Load) -> f64) -> f64 {
        self.get(name)
            .map_or(f64::NAN, |v| median(v.loads.iter().map(f).collect()))
    }

    /// Median of `f` over the constant-rate runs of `name`.
    fn rate(&self, name: &str, f: impl Fn(&Rate) -> f64) -> f64 {
        self.get(name)
            .map_or(f64::NAN, |v| median(v.rates.iter().map(f).collect()))
    }

    fn cpu(&self, name: &str) -> f64 {
        self.get(name).map_or(f64::NAN, |v| {
            median(v.loads.iter().filter_map(|l| l.cpu_per_1000).collect())
        })
    }

    fn summary(&self, fiso: &str, fiso_rss: u64) -> Value {
        let variants: Vec<Value> = self
            .0
            .iter()
            .map(|v| {
                let name = v.name.as_str();
                let cpu = self.cpu(name);
                json!({
                    "name": name,
                    "rps": self.load(name, |l| l.rps),
                    "p50_ms": self.load(name, |l| l.p50_ms),
                    "p99_ms": self.load(name, |l| l.p99_ms),
                    "errors": v.loads.iter().map(|l| l.errors).sum::<u64>()
                        + v.rates.iter().map(|r| r.errors).sum::<u64>(),
                    "cpu_s_per_1000": (!cpu.is_nan()).then_some(cpu),
                    "rate_rps": self.rate(name, |r| r.rps),
                    "rate_p50_ms": self.rate(name, |r| r.p50_ms),
                    "rate_p99_ms": self.rate(name, |r| r.p99_ms),
                })
            })
            .collect();
        json!({
            "variants": variants,
            "fiso_vs_nginx_rps": self.load(fiso, |l| l.rps) / self.load("nginx", |l| l.rps),
            "fiso_vs_direct_rps": self.load(fiso, |l| l.rps) / self.load("direct", |l| l.rps),
            "fiso_peak_rss_bytes": fiso_rss,
            "added_latency_ms": {
                "p50": self.rate(fiso, |r| r.p50_ms) - self.rate("direct", |r| r.p50_ms),
                "p99": self.rate(fiso, |r| r.p99_ms) - self.rate("direct", |r| r.p99_ms),
            },
        })
    }

    /// What the interceptor adds per event: from the saturation throughputs (1/rps is the wall
    /// time per event with both cores busy), from the CPU time, and at the constant rate.
    fn wasm_overhead(&self, wasm_rss: u64) -> Value {
        let (with, without) = (WASM_VARIANT, "fiso flow");
        let us_per_event = |rps: f64| 1e6 / rps;
        json!({
            "per_event_us": us_per_event(self.load(with, |l| l.rps))
                - us_per_event(self.load(without, |l| l.rps)),
            // CPU seconds per 1000 events = ms per event.
            "cpu_per_event_us": (self.cpu(with) - self.cpu(without)) * 1e3,
            "added_p50_ms": self.rate(with, |r| r.p50_ms) - self.rate(without, |r| r.p50_ms),
            "added_p99_ms": self.rate(with, |r| r.p99_ms) - self.rate(without, |r| r.p99_ms),
            "peak_rss_bytes": wasm_rss,
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time from exec to `/readyz` 200: `fiso link` (the bench link config) or `fiso flow` with
/// 10 flows.
fn startup(fiso: &Path, dir: &Path, what: &str) -> Result<Duration> {
    let metrics = free_port()?;
    let mut cmd = Command::new(fiso);
    match what {
        "link" => {
            // Its own proxy port: the one in link.yaml is bound by nothing now, but keep clear.
            let text = std::fs::read_to_string(dir.join("link.yaml"))?;
            let port = free_port()?;
            let text = text
                .lines()
                .map(|l| {
                    if l.starts_with("listenAddr:") {
                        format!("listenAddr: 127.0.0.1:{port}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(dir.join("link-startup.yaml"), text)?;
            cmd.arg("link")
                .arg("--config")
                .arg(dir.join("link-startup.yaml"));
        }
        _ => {
            let flows = dir.join("flows10");
            let _ = std::fs::remove_dir_all(&flows);
            std::fs::create_dir_all(&flows)?;
            let upstream: SocketAddr = "127.0.0.1:9".parse()?;
            for i in 0..10 {
                let port = free_port()?;
                std::fs::write(
                    flows.join(format!("f{i}.yaml")),
                    flow_yaml(&format!("f{i}"), port, upstream),
                )?;
            }
            cmd.arg("flow").arg("--config-dir").arg(&flows);
        }
    }
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{metrics}")]);
    let started = Instant::now();
    let mut child = quiet(&mut cmd).spawn()?;
    let deadline = started + Duration::from_secs(30);
    let ready = loop {
        if readyz(metrics) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready.with_context(|| format!("fiso {what} never became ready"))
}

/// `GET /readyz` answers 200.
fn readyz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 16];
    tcp.read(&mut buf)
        .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// `v` with `digits` decimals, `—` when absent or not a number.
fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map_or("—".to_owned(), |x| format!("{x:.digits$}"))
}

fn mib(v: &Value) -> String {
    format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0))
}

fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let m = &r["machine"];
    let settings = &r["settings"];
    md.push_str(&format!(
        "Machine: {} ({} cores), Linux {}. wrk -t2 -c{CONNECTIONS}, {} s × {} rounds per variant, \
         alternating, medians; latency at a constant {} req/s with hey (-c 50 -q 20, {} s); \
         1 KiB JSON POST; all processes on the same cores.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        settings["seconds"],
        settings["rounds"],
        settings["rate_rps"],
        settings["rate_seconds"],
    ));
    for (title, key) in [
        (
            "Link (bearer auth, allowed paths, breaker, retry, rate limit)",
            "link",
        ),
        (
            "Flow HTTP → HTTP (5-field CEL transform + CloudEvent; + wasm: then the uppercase \
             WASM interceptor)",
            "flow",
        ),
    ] {
        let s = &r[key];
        md.push_str(&format!(
            "**{title}**\n\n| variant | req/s | p50 ms | p99 ms | errors | CPU s / 1000 req \
             | p50 ms @ 1000/s | p99 ms @ 1000/s |\n|---|---|---|---|---|---|---|---|\n"
        ));
        for v in s["variants"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v["name"].as_str().unwrap_or("?"),
                num(&v["rps"], 0),
                num(&v["p50_ms"], 2),
                num(&v["p99_ms"], 2),
                v["errors"],
                num(&v["cpu_s_per_1000"], 3),
                num(&v["rate_p50_ms"], 2),
                num(&v["rate_p99_ms"], 2),
            ));
        }
        md.push_str(&format!(
            "\nFiso / nginx throughput: {}; Fiso / direct: {}; Fiso peak RSS {}. \
             Added latency at 1000 req/s (Fiso − direct): p50 {} ms, p99 {} ms.\n\n",
            num(&s["fiso_vs_nginx_rps"], 2),
            num(&s["fiso_vs_direct_rps"], 2),
            mib(&s["fiso_peak_rss_bytes"]),
            num(&s["added_latency_ms"]["p50"], 2),
            num(&s["added_latency_ms"]["p99"], 2),
        ));
    }
    let w = &r["wasm"];
    md.push_str(&format!(
        "**WASM interceptor** (uppercase module, wasmtime, one instance per event; fiso flow + \
         wasm vs fiso flow above): {} µs more wall time per event at saturation \
         (1/throughput), {} µs more CPU per event; at 1000 req/s p50 {} ms, p99 {} ms more. \
         Peak RSS {}.\n\n",
        num(&w["per_event_us"], 1),
        num(&w["cpu_per_event_us"], 1),
        num(&w["added_p50_ms"], 2),
        num(&w["added_p99_ms"], 2),
        mib(&w["peak_rss_bytes"]),
    ));
    let k = &r["kafka"];
    md.push_str(&format!(
        "**Flow Kafka → HTTP: draining {} records of 1 KiB** ({} partitions, {} keys, tansu in \
         memory, a fresh consumer group per run; from start to the last record, so including \
         the group join)\n\n| variant | records | records/s | records/s after the first | CPU s / 1000 \
         records |\n|---|---|---|---|---|\n",
        k["records"], k["partitions"], k["keys"],
    ));
    for v in k["variants"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            v["name"].as_str().unwrap_or("?"),
            v["records"],
            num(&v["records_per_s"], 0),
            num(&v["steady_records_per_s"], 0),
            num(&v["cpu_s_per_1000"], 3),
        ));
    }
    md.push_str(&format!(
        "\nThe bare consumer is rdkafka with Fiso's client settings, no processing, committing \
         asynchronously every 1 s / 500 records like Fiso: the client library's ceiling. The Go \
         Fiso design point is the same consumer committing synchronously after each record \
         (capped at {} s). Fiso / bare consumer: {} (`ordering: key`: {}); Fiso / Go design \
         point: {} (`ordering: key`: {}); Fiso peak RSS {}.\n\n",
        k["sync_each_max_seconds"],
        num(&k["fiso_vs_bare_rps"], 2),
        num(&k["fiso_key_vs_bare_rps"], 2),
        num(&k["fiso_vs_sync_each_rps"], 2),
        num(&k["fiso_key_vs_sync_each_rps"], 2),
        mib(&k["fiso_peak_rss_bytes"]),
    ));
    md.push_str("**CEL transform vs hand-written serde_json** (per event, criterion medians)\n\n| shape | CEL | serde_json | ratio |\n|---|---|---|---|\n");
    for t in r["transforms"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {:.0} ns | {:.0} ns | {:.1}× |\n",
            t["shape"].as_str().unwrap_or("?"),
            t["cel_ns"].as_f64().unwrap_or(f64::NAN),
            t["serde_json_ns"].as_f64().unwrap_or(f64::NAN),
            t["ratio"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    md.push('\n');
    md.push_str(&format!(
        "Start-up to `/readyz` 200: `fiso link` {:.0} ms, `fiso flow` with 10 flows {:.0} ms. \
         Release binary: {:.1} MiB.\n\n",
        r["startup"]["link_ms"].as_f64().unwrap_or(f64::NAN),
        r["startup"]["flow_10_flows_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r["binary_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    ));
    md.push_str(&operator::markdown(&r["operator"]));
    md.push('\n');
    let profiles = &r["profiles"];
    if let Some(reason) = profiles["unavailable"].as_str() {
        md.push_str(&format!("**Profiles**: not taken ({reason}).\n"));
        return md;
    }
    md.push_str(&format!(
        "**Profiles**: top three functions by self time in the Fiso process, then the top three \
         Fiso functions the samples are charged to (`perf record -g -e cpu-clock`, frame \
         pointers, {PROFILE_SECONDS} s of wrk load; Kafka: one drain with `ordering: key`)\n\n"
    ));
    for (title, key) in [
        ("Link", "link"),
        ("Flow HTTP → HTTP", "flow"),
        ("Flow + WASM", "wasm"),
        ("Flow Kafka → HTTP", "kafka"),
    ] {
        let costs = |view: &str| -> String {
            let costs: Vec<String> = profiles[key][view]
                .as_array()
                .into_iter()
                .flatten()
                .map(profile::describe)
                .collect();
            costs.join("; ")
        };
        if profiles[key].is_null() {
            continue;
        }
        md.push_str(&format!(
            "- {title}: {}\n  - by the nearest Fiso function on the stack: {}\n",
            costs("self"),
            costs("by_fiso_function")
        ));
    }
    md
}
