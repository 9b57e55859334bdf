//! `fiso dev` as a new user runs it: a project from `fiso init`, the printed URL answers a
//! `curl`-style POST end to end, `fiso logs` shows the session, Ctrl-C (SIGINT) stops it cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use fiso_e2e::{client, fiso_bin, post_json, SinkServer, DEADLINE};
use serde_json::json;

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

/// Whether `text` holds a run of 32 or more hex digits (a full content hash).
fn has_a_long_hash(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .any(|run| run.len() >= 32)
}
