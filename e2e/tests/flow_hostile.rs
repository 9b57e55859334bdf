//! Hostile or careless config against the real `fiso flow`: expressions beyond the CEL bounds,
//! constants beyond the budget and unreadable files are each refused as that file's problem
//! while the other flows keep serving and later edits are still applied.

use fiso_e2e::reliability::{record, Scale};
use fiso_e2e::{
    client, eventually, post_json, FisoProcess, FlowDir, HttpFlow, SinkServer, DEADLINE,
};
use reqwest::StatusCode;
use serde_json::json;

const SHARED: &str = "127.0.0.1:0";

fn flow(name: &str, sink: &SinkServer, field: &str, extra: &str) -> String {
    HttpFlow::named(name, SHARED, sink)
        .out_field(field)
        .with(extra)
        .yaml()
}

async fn reload_failures(fiso: &FisoProcess) -> f64 {
    fiso.metrics().await.value(
        "fiso_config_reload_total",
        &[("component", "flow"), ("result", "failure")],
    )
}

/// Waits until `/config` lists a problem for `file`, and returns it.
async fn problem(fiso: &FisoProcess, file: &str) -> String {
    eventually(DEADLINE, || async {
        fiso.config().await["flow"]["problems"][file]
            .as_str()
            .map(str::to_owned)
    })
    .await
    .unwrap_or_else(|| panic!("/config reports no problem for {file}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_refused_alone_and_reloading_goes_on() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write("good.yaml", &flow("good", &sink, "data.n", ""));
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;
    let failures_before = reload_failures(&fiso).await;

    let list = format!(
        "[{}]",
        (0..250)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let hostile = [
        // Each crashed `fiso flow` (stack overflow, parser panic) or stalled it for seconds.
        (
            "deep.yaml",
            format!("data{}", ".a".repeat(5_000)),
            "nests 5001 levels deep; the limit is 128",
        ),
        (
            "sum.yaml",
            vec!["data.s"; 2_000].join(" + "),
            "the limit is 128",
        ),
        (
            "column.yaml",
            format!("data.x + {})", "1 + ".repeat(16_500)),
            "66010 bytes long; the limit is 32768 bytes",
        ),
        (
            "fold.yaml",
            format!("{list}.map(x, {list}.map(y, {list}.map(z, x + y + z)))"),
            "celBudget.iterations",
        ),
    ];
    for (file, field, expected) in &hostile {
        let name = file.trim_end_matches(".yaml");
        dir.write(file, &flow(name, &sink, field, ""));
        let problem = problem(&fiso, file).await;
        assert!(problem.contains(expected), "{file}: {problem}");
        // The good flow is untouched.
        let answer = post_json(&client(), &format!("http://{addr}/good"), &json!({"n": 1})).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    // A file that cannot be read is its own problem, not the directory's: a good flow added in
    // the same reload starts.
    std::os::unix::fs::symlink("loop-b.yaml", dir.file("loop-a.yaml")).unwrap();
    std::os::unix::fs::symlink("loop-a.yaml", dir.file("loop-b.yaml")).unwrap();
    dir.write("later.yaml", &flow("later", &sink, "data.n + 1", ""));
    assert!(problem(&fiso, "loop-a.yaml")
        .await
        .contains("symbolic links"));
    let later = eventually(DEADLINE, || async {
        let answer = post_json(&client(), &format!("http://{addr}/later"), &json!({"n": 1})).await;
        (answer.status == StatusCode::OK).then_some(answer)
    })
    .await;
    assert!(
        later.is_some(),
        "a good file added after the hostile ones is started"
    );
    assert!(reload_failures(&fiso).await > failures_before);
    // Fixing a file applies it: the reload loop is alive.
    dir.write("deep.yaml", &flow("deep", &sink, "data.a.a", ""));
    let fixed = eventually(DEADLINE, || async {
        let answer = post_json(
            &client(),
            &format!("http://{addr}/deep"),
            &json!({"a": {"a": 7}}),
        )
        .await;
        (answer.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(fixed.is_some(), "the fixed file is loaded");
    record(
        "cel_bounds",
        Scale::from_env(),
        json!({
            "refused_files": hostile.len(),
            "unreadable_files": 2,
            "reload_failures_counted": reload_failures(&fiso).await - failures_before,
            "good_flow_served_throughout": true,
            "later_edit_applied": true,
        }),
    );
}

/// An expression at the CEL depth bound is accepted, so it must also evaluate where an HTTP
/// flow serves: on the per-core serving threads, whose stack once was too small for it (a debug
/// build overflowed it and aborted the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expression_at_the_depth_bound_is_evaluated_on_the_serving_threads() {
    use fiso_config::cel_check::MAX_EXPRESSION_DEPTH;
    let terms = MAX_EXPRESSION_DEPTH - 1;
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    let sum = vec!["data.n"; terms].join(" + ");
    dir.write("deep.yaml", &flow("deep", &sink, &sum, ""));
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;
    let answer = post_json(&client(), &format!("http://{addr}/deep"), &json!({"n": 2})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", fiso.logs().tail(20));
    let delivered = sink.requests();
    assert_eq!(delivered[0].json()["data"]["out"], json!(2 * terms as i64));
}
