//! `fiso dev` as a new user runs it: a project from `fiso init`, the printed URL answers a
//! `curl`-style POST end to end, `fiso logs` shows the session, Ctrl-C (SIGINT) stops it cleanly;
//! the user's app run next to it (`fiso dev -- <command>`); `fiso doctor` on a fresh project
//! with and without `fiso dev` running.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

use fiso_e2e::{client, fiso_bin, free_addr, post_json, SinkServer, DEADLINE};
use serde_json::{json, Value};

fn fiso(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(fiso_bin())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("fiso runs")
}

#[tokio::test]
async fn dev_runs_the_scaffold_and_prints_a_working_url() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        fiso(dir.path(), &["init", "--defaults", "--transform", "fields"])
            .status
            .success()
    );
    let sink = SinkServer::ok().await;
    // Free ports instead of the scaffold's fixed 8081, so tests can run in parallel.
    let flow = dir.path().join("fiso/flows/example-flow.yaml");
    let text = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("\":8081\"", "\"127.0.0.1:0\"")
        .replace("http://localhost:8082/events", &sink.url("/events"));
    std::fs::write(&flow, text).unwrap();
    // A broken file next to it: reported at start, and it does not stop the others.
    std::fs::write(
        dir.path().join("fiso/flows/broken.yaml"),
        "name: broken\nsource: [oops\n",
    )
    .unwrap();

    let mut child = Command::new(fiso_bin())
        .args(["dev", "--metrics-addr", "127.0.0.1:0", "--no-service"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut url = None;
    let mut banner = Vec::new();
    while url.is_none() {
        let line = rx.recv_timeout(DEADLINE).expect("fiso dev prints its URLs");
        if let Some(rest) = line.trim().strip_prefix("curl -X POST ") {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        banner.push(line);
    }
    let banner = banner.join("\n");
    assert!(banner.contains("flow example-flow"), "{banner}");
    assert!(
        banner.contains("✗ fiso/flows/broken.yaml: not started, 1 error (above)"),
        "{banner}"
    );
    // One metrics endpoint for flows and link, the one `prometheus.yml` scrapes by default.
    let metrics_url = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("metrics"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the banner names the metrics URL")
        .to_owned();
    let metrics = client()
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fiso_link_") && metrics.contains("fiso_flow_"),
        "{metrics_url} serves both:\n{metrics}"
    );
    assert!(banner.contains("-d @fiso/sample-event.json"), "{banner}");
    assert!(
        banner.contains("link external-api") && banner.contains("/link/external-api/"),
        "the link proxy runs too:\n{banner}"
    );

    let answer = post_json(
        &client(),
        url.as_deref().unwrap(),
        &json!({"order_id": "12345", "amount": 99.99}),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    let got = sink.wait_for_requests(1).await;
    assert_eq!(got[0].json()["data"]["order_id"], "12345");

    let logs = fiso(dir.path(), &["logs", "--tail", "50"]);
    let logs = String::from_utf8_lossy(&logs.stdout).to_string();
    assert!(logs.contains("flow started"), "{logs}");
    assert!(
        !has_a_long_hash(&logs),
        "versions are short in the default view:\n{logs}"
    );
    let link_logs = fiso(dir.path(), &["logs", "--service", "link", "--tail", "50"]);
    let link_logs = String::from_utf8_lossy(&link_logs.stdout).to_string();
    assert!(link_logs.contains("link proxy listening"), "{link_logs}");
    assert!(
        !link_logs.contains("flow started"),
        "only the link's lines:\n{link_logs}"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `fiso dev` running as a child, its stdout and stderr read line by line.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Dev {
        let mut cmd = Command::new(fiso_bin());
        cmd.args(args)
            .current_dir(dir)
            // Not a terminal: the app's prefix must come out plain without being told.
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("PORT")
            .env_remove("FISO_METRICS_ADDR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads output until a line satisfies `pred`, and returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what} in the output of fiso dev:\n{}", self.output()),
            }
        }
    }

    /// The first line seen so far that matches, or the next one to come: for a line on the
    /// other stream, which has no order against this one's.
    fn seen_or_wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.seen.iter().find(|l| pred(l)) {
            Some(line) => line.clone(),
            None => self.wait_for(what, pred),
        }
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    fn interrupt(&self) {
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits for the process to end; its status and everything it printed.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        // The readers end when the pipes close.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        (status, self.output())
    }
}

/// `fiso init --defaults` with its fixed ports moved to free ones, so tests run side by side:
/// the project directory, the sink's port (the app's `PORT`) and the environment that gives
/// `fiso dev` and `fiso doctor` a free metrics address.
fn fresh_project(dir: &Path) -> (PathBuf, u16, Vec<(&'static str, String)>) {
    let o = fiso(dir, &["init", "--defaults"]);
    assert!(o.status.success(), "{o:?}");
    let project = dir.join("fiso");
    let sink_port = free_addr().port();
    let flow = project.join("flows/example-flow.yaml");
    let text = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("\":8081\"", &format!("\":{}\"", free_addr().port()))
        .replace(
            "http://localhost:8082/events",
            &format!("http://localhost:{sink_port}/events"),
        );
    std::fs::write(&flow, text).unwrap();
    let link = project.join("link/config.yaml");
    let text = std::fs::read_to_string(&link)
        .unwrap()
        .replace("127.0.0.1:3500", &free_addr().to_string());
    std::fs::write(&link, text).unwrap();
    let env = vec![("FISO_METRICS_ADDR", free_addr().to_string())];
    (project, sink_port, env)
}

fn doctor(dir: &Path, env: &[(&str, String)]) -> (std::process::Output, Value) {
    let run = |format: &str| {
        let mut cmd = Command::new(fiso_bin());
        cmd.args(["doctor", "--format", format])
            .current_dir(dir)
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let human = run("human");
    let json = run("json");
    assert_eq!(human.status.code(), json.status.code());
    let report: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("doctor --format json: {e}\n{json:?}"));
    for check in report["checks"].as_array().unwrap() {
        for key in ["name", "target", "status", "message", "hint"] {
            assert!(check.get(key).is_some(), "{key} in {check}");
        }
        assert!(
            ["ok", "warn", "fail", "skip"].contains(&check["status"].as_str().unwrap()),
            "{check}"
        );
    }
    (human, report)
}

fn checks<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .collect()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn doctor_passes_on_a_fresh_project_with_and_without_dev_running() {
    let tmp = tempfile::tempdir().unwrap();
    let (project, sink_port, env) = fresh_project(tmp.path());

    let (human, report) = doctor(tmp.path(), &env);
    assert!(human.status.success(), "{}", text(&human));
    assert_eq!(report["ok"], true);
    assert_eq!(report["failures"], 0);
    let out = text(&human);
    assert!(!out.contains("PORT"), "hints name real ports:\n{out}");
    // The sample service `fiso dev` starts is not there yet: skipped, with the reason.
    let sink = checks(&report, "sink");
    assert_eq!(sink.len(), 1);
    assert_eq!(sink[0]["status"], "skip", "{report:#}");
    assert!(
        sink[0]["message"]
            .as_str()
            .unwrap()
            .contains("the sample service `fiso dev` starts"),
        "{report:#}"
    );
    // One check per address: the flow's and the link's, and the metrics server's.
    let ports = checks(&report, "port");
    assert_eq!(ports.len(), 2, "{report:#}");
    for c in ports.iter().chain(checks(&report, "metrics").iter()) {
        assert_eq!(c["status"], "ok", "{c}");
        let target = c["target"].as_str().unwrap();
        assert!(target.parse::<std::net::SocketAddr>().is_ok(), "{target}");
    }

    let mut dev = Dev::start(tmp.path(), &["dev"], &env);
    dev.wait_for("the sample service listening", |l| {
        l == format!("[user-service] user-service listening on :{sink_port}")
    });
    for dir in [tmp.path().to_path_buf(), project.join("flows")] {
        let (human, report) = doctor(&dir, &env);
        assert!(human.status.success(), "{}", text(&human));
        assert_eq!(checks(&report, "dev")[0]["status"], "ok", "{report:#}");
        assert_eq!(checks(&report, "sink")[0]["status"], "ok", "{report:#}");
        for c in checks(&report, "port") {
            assert_eq!(c["status"], "ok", "{c}");
            assert!(
                c["message"]
                    .as_str()
                    .unwrap()
                    .contains("held by the running `fiso dev`"),
                "{c}"
            );
        }
        assert_eq!(checks(&report, "metrics")[0]["status"], "ok", "{report:#}");
    }
    dev.interrupt();
    let (status, out) = dev.finish();
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("[user-service] stopped"), "{out}");
}

#[test]
fn dev_runs_the_users_app_with_its_output_inline_and_in_fiso_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let (project, sink_port, env) = fresh_project(tmp.path());
    let script = r#"echo hello
echo "port=$PORT link=$FISO_LINK_URL" >&2
head -c 40000 /dev/zero | tr '\0' x; echo
echo $$ > app.pid
trap 'echo got TERM; exit 0' TERM
echo waiting
while :; do sleep 0.1; done"#;
    let mut dev = Dev::start(tmp.path(), &["dev", "--", "sh", "-c", script], &env);
    dev.wait_for("the app waiting", |l| l == "[sh] waiting");
    let env_line = dev.seen_or_wait_for("the app's stderr, prefixed", |l| {
        l.starts_with("[sh] port=")
    });
    let out = dev.output();
    assert!(out.lines().any(|l| l == "[sh] hello"), "{out}");
    assert!(
        env_line.starts_with(&format!("[sh] port={sink_port} link=http://127.0.0.1:"))
            && env_line.ends_with("/link"),
        "{env_line}"
    );
    let long = out
        .lines()
        .find(|l| l.starts_with("[sh] xxx"))
        .expect("the long line");
    assert!(
        long.len() < 17 * 1024,
        "a long line is cut: {} bytes",
        long.len()
    );
    assert!(
        long.ends_with("more bytes cut]"),
        "{}",
        &long[long.len() - 40..]
    );

    let logs = fiso(tmp.path(), &["logs", "--service", "sh"]);
    let logs_text = text(&logs);
    assert!(logs.status.success(), "{logs_text}");
    assert!(logs_text.lines().any(|l| l == "hello"), "{logs_text}");
    assert!(logs_text.contains("more bytes cut]"), "{logs_text}");
    let unknown = fiso(tmp.path(), &["logs", "--service", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("known: flow, link, sh"),
        "{}",
        text(&unknown)
    );

    let pid: i32 = std::fs::read_to_string(tmp.path().join("app.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    dev.interrupt();
    let (status, out) = dev.finish();
    assert!(status.success(), "{status}\n{out}");
    assert!(out.lines().any(|l| l == "[sh] got TERM"), "{out}");
    assert!(out.contains("[sh] stopped (exited with code 0)"), "{out}");
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "the app (pid {pid}) is gone with fiso dev");
    assert!(!project.join(".dev/session.json").exists());
}

#[test]
fn dev_ends_with_the_app_and_passes_on_its_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let (_project, _, env) = fresh_project(tmp.path());
    let dev = Dev::start(
        tmp.path(),
        &[
            "dev",
            "--app-name",
            "job",
            "--",
            "sh",
            "-c",
            "echo bye; exit 3",
        ],
        &env,
    );
    let (status, out) = dev.finish();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.lines().any(|l| l == "[job] bye"), "{out}");
    assert!(out.contains("[job] exited with code 3"), "{out}");

    let missing = Dev::start(tmp.path(), &["dev", "--", "no-such-program-here"], &env);
    let (status, out) = missing.finish();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("starting `no-such-program-here`"),
        "the error names what could not start:\n{out}"
    );
}

#[test]
fn an_app_that_ignores_sigterm_is_killed_at_a_second_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let (_project, _, env) = fresh_project(tmp.path());
    let script = "trap '' TERM; echo deaf; while :; do sleep 0.1; done";
    // A stop timeout no test outlives: only the second Ctrl-C can end this run.
    let mut dev = Dev::start(
        tmp.path(),
        &["dev", "--stop-timeout", "1h", "--", "sh", "-c", script],
        &env,
    );
    dev.wait_for("the app running", |l| l == "[sh] deaf");
    dev.interrupt();
    dev.wait_for("the stop under way", |l| {
        l.contains("[sh] stopping (SIGTERM; Ctrl-C again to kill it now)")
    });
    dev.interrupt();
    dev.wait_for("the app killed", |l| {
        l.contains("[sh] stopped (was killed by SIGKILL)")
    });
    let (status, out) = dev.finish();
    assert!(status.success(), "{status}\n{out}");
}

/// Whether `text` holds a run of 32 or more hex digits (a full content hash).
fn has_a_long_hash(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .any(|run| run.len() >= 32)
}
