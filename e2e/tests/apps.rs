//! Wasmer/WASIX apps run by `fiso wasmer` and `fiso run`: a long-running C guest
//! (`e2e/guests/app.c`) that listens on `$PORT`, answers its health check and requests, opens an
//! outbound connection to a server the test runs, is restarted after it exits or exceeds its
//! memory, and is reloaded when its module file is rewritten.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fiso_e2e::{
    client, eventually, guests, post_json, FisoProcess, FlowDir, HttpFlow, SinkServer, DEADLINE,
};
use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A TCP server standing for the app's database: answers each line with `pong:<line>`.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("pong:{line}").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A port range of one port nothing listens on now (apps take theirs from `defaultPortRange`).
fn one_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces `dest` by `src` in one rename, as a deployment would.
fn install(src: &Path, dest: &Path) {
    let tmp = dest.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

async fn get(url: &str) -> Option<(StatusCode, String)> {
    let resp = client().get(url).send().await.ok()?;
    let status = resp.status();
    Some((status, resp.text().await.ok()?))
}

/// Waits until `GET url` answers 200 with `body`.
async fn wait_for_body(fiso: &FisoProcess, url: &str, body: &str) {
    let got = eventually(DEADLINE, || async {
        get(url)
            .await
            .filter(|(s, b)| *s == StatusCode::OK && b == body)
    })
    .await;
    assert!(
        got.is_some(),
        "GET {url} never answered {body:?} (last: {:?})\n{}",
        get(url).await,
        fiso.logs().tail(40)
    );
}

fn apps_yaml(module: &Path, port: u16, extra: &str) -> String {
    format!(
        "defaultPortRange: {{min: {port}, max: {port}}}\napps:\n  - name: api\n    module: {}\n    execution: longRunning\n    healthCheck: /health\n    healthCheckInterval: 100ms\n{extra}",
        module.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn long_running_app_serves_connects_out_restarts_and_reloads() {
    let v1 = guests::build("app", &[r#"VERSION="1""#]);
    let v2 = guests::build("app", &[r#"VERSION="2""#]);
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("app.wasm");
    install(&v1, &module);
    let db = echo_server().await;
    let port = one_free_port();
    let config = dir.path().join("apps.yaml");
    std::fs::write(
        &config,
        apps_yaml(
            Path::new("app.wasm"),
            port,
            &format!("    env: {{UPSTREAM_PORT: \"{}\"}}\n", db.port()),
        ),
    )
    .unwrap();

    let mut fiso =
        FisoProcess::start_args(&["wasmer".as_ref(), "--config".as_ref(), config.as_os_str()])
            .await;
    let started = fiso.wait_for_log(|l| l.is("app started")).await;
    let addr = started.addr().unwrap();
    assert_eq!(
        addr,
        SocketAddr::from(([127, 0, 0, 1], port)),
        "port from defaultPortRange, on loopback"
    );
    let ready = fiso.wait_for_readyz(StatusCode::OK).await;
    assert_eq!(ready["components"]["app/api"]["ready"], true, "{ready}");

    // The guest's stdout is a log line with the app's name.
    let line = fiso
        .wait_for_log(|l| {
            l.str_field("app") == Some("api") && l.str_field("stream") == Some("stdout")
        })
        .await;
    assert_eq!(
        line.message(),
        Some(format!("listening on port {port}").as_str())
    );

    let base = format!("http://{addr}");
    wait_for_body(&fiso, &format!("{base}/hello"), "hello from api v1").await;
    let echoed = client()
        .post(format!("{base}/echo"))
        .body("some body")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.text().await.unwrap(), "some body");
    // Outbound: the app connects to the test's server ("database connectivity").
    assert_eq!(
        get(&format!("{base}/db")).await,
        Some((StatusCode::OK, "pong:ping".into()))
    );

    // Health checks are counted; the app is up with its memory reported.
    let m = eventually(DEADLINE, || async {
        Some(fiso.metrics().await).filter(|m| {
            m.get(
                "fiso_app_health_check_total",
                &[("app", "api"), ("result", "ok")],
            )
            .is_some_and(|v| v >= 1.0)
        })
    })
    .await
    .expect("a health check is counted");
    assert_eq!(m.value("fiso_app_up", &[("app", "api")]), 1.0);
    assert!(m.value("fiso_app_memory_bytes", &[("app", "api")]) > 0.0);
    assert_eq!(m.value("fiso_app_restarts_total", &[("app", "api")]), 0.0);

    // Killed (the guest exits with 3 on /exit): reported, restarted, serving again.
    let mark = fiso.log_mark();
    assert_eq!(
        get(&format!("{base}/exit")).await.map(|(s, _)| s),
        Some(StatusCode::OK)
    );
    let exited = fiso
        .wait_for_log_since(mark, |l| {
            l.message()
                .is_some_and(|m| m.contains("exited with code 3"))
        })
        .await;
    assert_eq!(exited.str_field("app"), Some("api"));
    fiso.wait_for_metric("fiso_app_restarts_total", &[("app", "api")], 1.0)
        .await;
    wait_for_body(&fiso, &format!("{base}/hello"), "hello from api v1").await;
    fiso.wait_for_readyz(StatusCode::OK).await;

    // The module file is rewritten: the app is reloaded with the new code on the same port.
    install(&v2, &module);
    wait_for_body(&fiso, &format!("{base}/hello"), "hello from api v2").await;
    fiso.wait_for_log(|l| l.is("app reloaded")).await;

    // Shutdown stops the app and the process exits cleanly.
    fiso.send_signal(libc::SIGTERM);
    assert!(fiso.wait_exit().await.success(), "{}", fiso.logs().tail(30));
    assert!(
        !fiso.logs().matching(0, |l| l.is("app stopped")).is_empty(),
        "{}",
        fiso.logs().tail(30)
    );
    assert!(
        get(&format!("{base}/health")).await.is_none(),
        "the app still answers after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_growing_past_memory_mb_is_stopped_and_restarted() {
    let module = guests::build("app", &[]);
    let dir = tempfile::tempdir().unwrap();
    let port = one_free_port();
    let config = dir.path().join("apps.yaml");
    std::fs::write(&config, apps_yaml(&module, port, "    memoryMB: 4\n")).unwrap();
    let fiso =
        FisoProcess::start_args(&["wasmer".as_ref(), "--config".as_ref(), config.as_os_str()])
            .await;
    let addr = fiso
        .wait_for_log(|l| l.is("app started"))
        .await
        .addr()
        .unwrap();
    wait_for_body(&fiso, &format!("http://{addr}/health"), "ok").await;

    let mark = fiso.log_mark();
    // The guest allocates until stopped: the request gets no answer.
    assert!(get(&format!("http://{addr}/grow")).await.is_none());
    let line = fiso
        .wait_for_log_since(mark, |l| {
            l.message()
                .is_some_and(|m| m.contains("memory limit exceeded"))
        })
        .await;
    assert!(
        line.message().unwrap().contains("memoryMB allows 4194304"),
        "{:?}",
        line.message()
    );
    fiso.wait_for_metric("fiso_app_restarts_total", &[("app", "api")], 1.0)
        .await;
    wait_for_body(&fiso, &format!("http://{addr}/health"), "ok").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_keeps_failing_shows_a_crash_loop_on_readyz() {
    let module = guests::build("app", &[]);
    let dir = tempfile::tempdir().unwrap();
    // Its port is taken: the guest cannot listen and exits with 1, again and again.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = dir.path().join("apps.yaml");
    let yaml = format!(
        "apps:\n  - name: api\n    module: {}\n    port: {port}\n",
        module.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let fiso =
        FisoProcess::start_args(&["wasmer".as_ref(), "--config".as_ref(), config.as_os_str()])
            .await;
    let report = eventually(DEADLINE, || async {
        let (status, body) = fiso.readyz().await;
        let reason = body["components"]["app/api"]["reason"].as_str()?.to_owned();
        (status == StatusCode::SERVICE_UNAVAILABLE
            && reason.starts_with("crash loop: exited with code 1"))
        .then_some(reason)
    })
    .await;
    assert!(
        report.is_some(),
        "{:?}\n{}",
        fiso.readyz().await,
        fiso.logs().tail(30)
    );
    let stderr = fiso
        .wait_for_log(|l| l.str_field("stream") == Some("stderr"))
        .await;
    assert!(stderr
        .message()
        .unwrap()
        .starts_with(&format!("cannot listen on port {port}")));
    drop(busy);
}

#[tokio::test(flavor = "multi_thread")]
async fn fiso_run_runs_flows_link_and_apps_together() {
    let module = guests::build("app", &[]);
    let port = one_free_port();
    let sink = SinkServer::ok().await;
    let flows = FlowDir::new();
    flows.write(
        "orders.yaml",
        &HttpFlow::named("orders", "127.0.0.1:0", &sink).yaml(),
    );
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.yaml");
    std::fs::write(&link, "listenAddr: 127.0.0.1:0\ntargets: []\n").unwrap();
    let apps = dir.path().join("apps.yaml");
    std::fs::write(&apps, apps_yaml(&module, port, "")).unwrap();

    let fiso = FisoProcess::start_run_with_apps(&flows.path(), &link, &apps).await;
    let ready = fiso.wait_for_readyz(StatusCode::OK).await;
    for c in ["flow/orders", "link", "app/api"] {
        assert_eq!(ready["components"][c]["ready"], true, "{c}: {ready}");
    }
    wait_for_body(&fiso, &format!("http://127.0.0.1:{port}/health"), "ok").await;
    fiso.link_addr().await;
    let flow = fiso.http_addr("127.0.0.1:0").await;
    let answer = post_json(
        &client(),
        &format!("http://{flow}/orders"),
        &serde_json::json!({"id": 1}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sink.wait_for_requests(1).await[0].json()["data"]["id"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fiso_run_reads_upstreams_all_in_one_file() {
    let module = guests::build("app", &[]);
    let port = one_free_port();
    let sink = SinkServer::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("orders.yaml"),
        HttpFlow::named("orders", "127.0.0.1:0", &sink).yaml(),
    )
    .unwrap();
    let aio = dir.path().join("config.yaml");
    std::fs::write(
        &aio,
        format!(
            "flow:\n  configDir: flows\nlink:\n  listenAddr: 127.0.0.1:0\n  targets: []\nwasmer:\n  defaultPortRange: {{min: {port}, max: {port}}}\n  apps:\n    - name: api\n      module: {}\n      healthCheck: /health\n",
            module.display()
        ),
    )
    .unwrap();
    let fiso =
        FisoProcess::start_args(&["run".as_ref(), "--config".as_ref(), aio.as_os_str()]).await;
    let ready = fiso.wait_for_readyz(StatusCode::OK).await;
    for c in ["flow/orders", "link", "app/api"] {
        assert_eq!(ready["components"][c]["ready"], true, "{c}: {ready}");
    }
    wait_for_body(
        &fiso,
        &format!("http://127.0.0.1:{port}/hello"),
        "hello from api v1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_apps_file_fails_at_start_with_its_findings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apps.yaml");
    std::fs::write(
        &config,
        "apps:\n  - {name: api, module: a.wasm, memoryMB: 0}\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(fiso_e2e::fiso_bin())
        .args([
            OsStr::new("wasmer"),
            "--config".as_ref(),
            config.as_os_str(),
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apps[0].memoryMB"), "{stderr}");
    let _: PathBuf = config;
}
