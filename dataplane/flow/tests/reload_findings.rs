//! A flow file that became invalid, on reload: every finding of it is reported, the file named
//! as the user names it (the configured directory joined with the file name, as `fiso validate`
//! shows it), and the last good version keeps running.

use fiso_flow::topology::runtime::{FlowRuntime, Observability};

const ADDR: &str = "127.0.0.1:0";

fn good() -> String {
    format!("name: r\nsource:\n  type: http\n  config:\n    listenAddr: \"{ADDR}\"\n    path: /r\nsink:\n  type: http\n  config:\n    url: http://127.0.0.1:9/x\n")
}

fn broken() -> String {
    format!(
        "\
name: r
source:
  type: http
  config:
    listenAddr: \"{ADDR}\"
    path: /r
    maxBodySize: lots
transform:
  fields:
    priority: data.urgent ? 1 : 2
    total: data.price *
sink:
  type: http
  config:
    method: POST
    retries: 3
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_reports_every_finding_and_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(flows.join("r.yaml"), good()).unwrap();
    let runtime = FlowRuntime::start(&flows, &Observability::default()).unwrap();
    let served = runtime.http_addr(ADDR).expect("the good version serves");

    std::fs::write(flows.join("r.yaml"), broken()).unwrap();
    let report = runtime.reload();
    let shown = flows.join("r.yaml").display().to_string();
    let problem = report.problems.get("r.yaml").expect("r.yaml is reported");
    let findings: Vec<&str> = problem
        .lines()
        .filter(|l| !l.starts_with("  hint:"))
        .collect();
    let expected = [
        "7:18: error: source.config.maxBodySize: invalid size `lots`",
        "10:15: error: transform.fields.priority: `data.urgent ? 1 : 2` is not one YAML value as written",
        "11:12: error: transform.fields.total: invalid CEL expression `data.price *`",
        "14:3: error: sink.config: missing field `url`",
        "16:5: error: sink.config.retries: unknown field `retries`",
    ];
    assert_eq!(findings.len(), expected.len(), "{problem}");
    for (found, expected) in findings.iter().zip(expected) {
        assert!(
            found.starts_with(&format!("{shown}:{expected}")),
            "{found}\nexpected {shown}:{expected}…"
        );
    }
    assert!(
        problem.contains("  hint: quote it: priority: 'data.urgent ? 1 : 2'"),
        "{problem}"
    );
    // The last good version still runs: nothing was stopped or replaced, its server is there.
    assert!(
        report.stopped.is_empty() && report.replaced.is_empty(),
        "{report:?}"
    );
    assert_eq!(runtime.http_addr(ADDR), Some(served));
    runtime.shutdown().await;
}
