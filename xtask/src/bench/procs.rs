//! The processes a benchmark runs and measures: the upstream, nginx, `fiso link` and
//! `fiso flow` (killed together when their [`Procs`] is dropped), the tools the load comes from,
//! and what `/proc` says a process cost (CPU time, peak RSS).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// nginx, wrk and hey from Debian, installed when missing.
pub fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("nginx", "nginx-light"),
        ("wrk", "wrk"),
        ("hey", "hey"),
        ("strip", "binutils"),
    ]
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
    apt_install("bench", &missing)?;
    // The package starts the system nginx on :80; the benchmark runs its own.
    let _ = Command::new("service").args(["nginx", "stop"]).status();
    Ok(())
}

/// `apt-get install` of `packages`, announced as `task`'s.
pub fn apt_install(task: &str, packages: &[&str]) -> Result<()> {
    println!("{task}: apt-get install {}", packages.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get")?;
    if !status.success() {
        bail!("installing {} failed", packages.join(" "));
    }
    Ok(())
}

/// A port nothing listens on now, for a server to bind next.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits up to 30 s for `addr` to accept connections.
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
pub struct Running {
    pub addr: SocketAddr,
    pub pid: u32,
}

/// The servers of one run, killed when dropped.
#[derive(Default)]
pub struct Procs(Vec<Child>);

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
    /// Takes `child` in, to be stopped with the others.
    pub fn push(&mut self, child: Child) {
        self.0.push(child);
    }

    pub fn upstream(&mut self, xtask: &Path) -> Result<SocketAddr> {
        let running = self.listening(
            Command::new(xtask).args(["bench-upstream", "127.0.0.1:0"]),
            "the upstream",
        )?;
        Ok(running.addr)
    }

    /// Starts `command`, which prints `listening <addr>` once it serves.
    fn listening(&mut self, command: &mut Command, what: &str) -> Result<Running> {
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        self.0.push(child);
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .with_context(|| format!("{what} did not start"))?
            .parse()?;
        Ok(Running { addr, pid })
    }

    /// The bare hyper proxy ([`super::proxy`]) in front of `upstream`, in `shape`
    /// (`shared` | `per-core`).
    pub fn hyper_proxy(
        &mut self,
        xtask: &Path,
        upstream: SocketAddr,
        shape: &str,
    ) -> Result<Running> {
        self.listening(
            Command::new(xtask)
                .args(["bench-proxy", "127.0.0.1:0"])
                .arg(upstream.to_string())
                .arg(shape),
            &format!("the {shape} hyper proxy"),
        )
    }

    /// nginx as a reverse proxy with upstream keep-alive; `pid` is its master, whose CPU
    /// [`cpu_seconds`] counts with its workers'.
    pub fn nginx(&mut self, dir: &Path, upstream: SocketAddr) -> Result<Running> {
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
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.0.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr, "nginx")?;
        Ok(Running { addr, pid })
    }

    /// An OpenTelemetry collector (`rotel-agent`, installed by `cargo xtask infra up otel`, path
    /// in `FISO_E2E_ROTEL`) receiving OTLP/gRPC and dropping what it receives: the `OTEL_*`
    /// variables that make Fiso export every span to it.
    pub fn collector(&mut self) -> Result<Vec<(&'static str, String)>> {
        let rotel = std::env::var_os("FISO_E2E_ROTEL").context(
            "FISO_E2E_ROTEL is not set: run `cargo xtask infra up otel` and load target/infra/env",
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Command::new(rotel)
            .args(["start", "--exporter", "blackhole", "--otlp-grpc-endpoint"])
            .arg(addr.to_string())
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{}", free_port()?))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.0.push(child);
        wait_port(addr, "rotel-agent")?;
        Ok(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ])
    }

    /// `fiso link` with a target that exercises every layer: bearer auth from a file, allowed
    /// paths, breaker, retry, and a rate limit too high to bind.
    pub fn fiso_link(
        &mut self,
        fiso: &Path,
        dir: &Path,
        upstream: SocketAddr,
        env: &[(&str, String)],
    ) -> Result<Running> {
        std::fs::write(dir.join("token"), "bench-token\n")?;
        let port = free_port()?;
        std::fs::write(
            dir.join("link.yaml"),
            link_yaml(port, upstream, &dir.join("token")),
        )?;
        let child = quiet(
            Command::new(fiso)
                .arg("link")
                .arg("--config")
                .arg(dir.join("link.yaml"))
                .envs(env.iter().map(|(k, v)| (k, v))),
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
    pub fn fiso_flow(
        &mut self,
        fiso: &Path,
        flows: &Path,
        upstream: SocketAddr,
        interceptor: Option<&Path>,
        env: &[(&str, String)],
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
                .args(["--metrics-addr", "127.0.0.1:0"])
                .envs(env.iter().map(|(k, v)| (k, v))),
        )
        .spawn()?;
        let pid = child.id();
        self.0.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_port(addr, "fiso flow")?;
        Ok(Running { addr, pid })
    }
}

/// `cmd` at log level warn with its output discarded: a process under load must not pay for
/// writing to a terminal.
pub fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.env("FISO_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// The bench link config: proxying on `port` to `upstream` through every layer (bearer auth
/// from the file `token`, allowed paths, breaker, retry, a rate limit too high to bind).
fn link_yaml(port: u16, upstream: SocketAddr, token: &Path) -> String {
    format!(
        "listenAddr: 127.0.0.1:{port}\nmetricsAddr: 127.0.0.1:0\ntargets:\n  - name: api\n\
         \x20   protocol: http\n    host: 127.0.0.1\n    port: {}\n\
         \x20   auth:\n      type: bearer\n      secretRef:\n        filePath: {}\n\
         \x20   allowedPaths: [\"/api/v2/**\"]\n\
         \x20   circuitBreaker:\n      enabled: true\n      failureThreshold: 5\n\
         \x20   retry:\n      maxAttempts: 3\n\
         \x20   rateLimit:\n      requestsPerSecond: 10000000\n",
        upstream.port(),
        token.display()
    )
}

/// An HTTP → HTTP flow on `port` delivering to `upstream`: a 5-field CEL transform and the
/// CloudEvent.
pub fn flow_yaml(name: &str, port: u16, upstream: SocketAddr) -> String {
    format!(
        "name: {name}\nsource:\n  type: http\n  config:\n    listenAddr: 127.0.0.1:{port}\n    path: /ingest\n\
         transform:\n  fields:\n    order_id: data.order_id\n    customer: data.customer.name\n\
         \x20   total: data.amount * 1.2\n    currency: '\"EUR\"'\n    items: size(data.items)\n\
         cloudevents:\n  type: '\"order.created\"'\n  source: '\"bench\"'\n\
         sink:\n  type: http\n  config:\n    url: http://{upstream}/ingest\n"
    )
}

/// utime + stime of `pid` and of its children (nginx's workers), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .map(|name| stat(&name))
        .filter(|text| parent_of(text) == Some(pid))
        .map(|text| cpu_seconds_of(&text))
        .sum();
    cpu_seconds_of(&stat(&pid.to_string())) + children
}

/// The parent pid from the text of `/proc/<pid>/stat` (the 4th field).
fn parent_of(stat: &str) -> Option<u32> {
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime from the text of `/proc/<pid>/stat`, in seconds (0 when unreadable).
fn cpu_seconds_of(stat: &str) -> f64 {
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

/// The peak resident set size of `pid` in bytes (`VmHWM`; 0 when unreadable).
pub fn peak_rss(pid: u32) -> u64 {
    peak_rss_of(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
}

/// `VmHWM` from the text of `/proc/<pid>/status`, in bytes (0 when absent).
fn peak_rss_of(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_utime_plus_stime_in_ticks() {
        // A command name with spaces and a parenthesis: fields are counted after the last `)`.
        let stat = "4242 (fiso (flow) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 50 0 0 20 0 9 0 12345 123456789 2048 18446744073709551615";
        assert_eq!(cpu_seconds_of(stat), 3.0);
        assert_eq!(cpu_seconds_of(""), 0.0);
        assert_eq!(parent_of(stat), Some(1));
        assert_eq!(parent_of("7 (nginx: worker) S 41 7 7"), Some(41));
        assert_eq!(parent_of(""), None);
    }

    #[test]
    fn peak_rss_is_vmhwm_in_bytes() {
        let status =
            "Name:\tfiso\nVmPeak:\t  900000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t   10000 kB\n";
        assert_eq!(peak_rss_of(status), 12345 * 1024);
        assert_eq!(peak_rss_of("Name:\tfiso\n"), 0);
    }

    #[test]
    fn the_bench_configs_parse() {
        let upstream: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let flow =
            fiso_config::parse::parse_flow("bench.yaml", &flow_yaml("bench", 8080, upstream))
                .unwrap();
        assert_eq!(flow.name.as_deref(), Some("bench"));
        assert_eq!(
            flow.transform.map(|t| t.fields.len()),
            Some(5),
            "the 5-field transform the report describes"
        );
        let link = link_yaml(8081, upstream, Path::new("/tmp/token"));
        fiso_config::parse::parse_link("link.yaml", &link).unwrap();
        assert!(link.contains("listenAddr: 127.0.0.1:8081\n"), "{link}");
    }
}
