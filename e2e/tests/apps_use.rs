//! Flows and the Link using the apps of their process (`fiso run --apps-config`): a flow's
//! `type: wasmer-app` interceptor (the event POSTed to the app's `/process`, its answer merged
//! like a WASM module's stdout) and link targets with `protocol: app` (a long-running app over
//! loopback HTTP, a pooled app over stdin/stdout), with the failures a missing app gives.

use fiso_e2e::{
    client, free_addr, guests, post_json, send, FisoProcess, FlowDir, HttpFlow, SinkServer,
};
use reqwest::StatusCode;

/// `flow` with `interceptors` (YAML list items) before its sink.
fn with_interceptors(flow: &HttpFlow, interceptors: &str) -> String {
    flow.yaml()
        .replacen("sink:", &format!("interceptors:\n{interceptors}sink:"), 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_and_link_targets_call_the_apps_of_their_process() {
    let api = guests::build("app", &[]);
    let func = guests::build("fn", &[]);
    // A range, not one port picked free beforehand: another test may bind that port before
    // the app does, and the allocator takes the first port of the range that binds.
    let port = free_addr().port().min(u16::MAX - 63);
    let sink = SinkServer::ok().await;
    let flows = FlowDir::new();
    for (name, interceptor) in [
        ("orders", "  - {type: wasmer-app, config: {app: api}}\n"),
        ("lost", "  - {type: wasmer-app, config: {app: ghost}}\n"),
        (
            "lenient",
            "  - {type: wasmer-app, config: {app: ghost, failOpen: true}}\n",
        ),
    ] {
        let flow =
            HttpFlow::named(name, "127.0.0.1:0", &sink).with("errorHandling:\n  maxRetries: 0");
        flows.write(
            &format!("{name}.yaml"),
            &with_interceptors(&flow, interceptor),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.yaml");
    std::fs::write(
        &link,
        "listenAddr: 127.0.0.1:0\ntargets:\n  - {name: api, protocol: app, app: api}\n  - {name: fn, protocol: app, app: fn, basePath: /v1}\n  - {name: ghost, protocol: app, app: ghost}\n",
    )
    .unwrap();
    let apps = dir.path().join("apps.yaml");
    std::fs::write(
        &apps,
        format!(
            "defaultPortRange: {{min: {port}, max: {}}}\napps:\n  - {{name: api, module: {}, healthCheck: /health, healthCheckInterval: 100ms}}\n  - {{name: fn, module: {}, execution: pooled, poolSize: 2}}\n",
            port + 63,
            api.display(),
            func.display()
        ),
    )
    .unwrap();
    let fiso = FisoProcess::start_run_with_apps(&flows.path(), &link, &apps).await;
    let ready = fiso.wait_for_readyz(StatusCode::OK).await;
    for c in ["app/api", "app/fn", "link"] {
        assert_eq!(ready["components"][c]["ready"], true, "{c}: {ready}");
    }
    let flow = fiso.http_addr("127.0.0.1:0").await;
    let link = fiso.link_addr().await;
    let http = client();

    // The interceptor: the app's answer is merged into the event the sink gets.
    let answer = post_json(
        &http,
        &format!("http://{flow}/orders"),
        &serde_json::json!({"id": 1}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let delivered = sink.wait_for_requests(1).await[0].json();
    assert_eq!(delivered["enrichedby"], "api", "{delivered}");
    assert_eq!(delivered["data"]["id"], 1);

    // An app that is not there fails the event; with failOpen the event goes on unchanged.
    let answer = post_json(
        &http,
        &format!("http://{flow}/lost"),
        &serde_json::json!({"id": 2}),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        answer.text()
    );
    assert_eq!(
        answer.json()["error"]["code"],
        "INTERCEPTOR_FAILED",
        "{}",
        answer.text()
    );
    assert!(answer.text().contains("APP_NOT_FOUND"), "{}", answer.text());
    let answer = post_json(
        &http,
        &format!("http://{flow}/lenient"),
        &serde_json::json!({"id": 3}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let delivered = sink.wait_for_requests(2).await[1].json();
    assert_eq!(delivered["data"]["id"], 3);
    assert!(delivered.get("enrichedby").is_none(), "{delivered}");

    // A long-running app behind a link target: path, method and body reach it.
    let hello = send(http.get(format!("http://{link}/link/api/hello"))).await;
    assert_eq!(
        (hello.status, hello.text()),
        (StatusCode::OK, "hello from api v1".to_owned())
    );
    let echo = send(
        http.post(format!("http://{link}/link/api/echo"))
            .body("ping"),
    )
    .await;
    assert_eq!(
        (echo.status, echo.text()),
        (StatusCode::OK, "ping".to_owned())
    );

    // A pooled app: one run per request, the request document on its stdin (basePath applied).
    let run = send(
        http.post(format!("http://{link}/link/fn/items?q=1"))
            .body("hi"),
    )
    .await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.text());
    assert_eq!(run.header("x-app"), Some("fn"));
    let doc = run.json();
    assert_eq!(doc["method"], "POST", "{doc}");
    assert!(doc.to_string().contains("/v1/items"), "{doc}");

    // A target whose app does not run here.
    let ghost = send(http.get(format!("http://{link}/link/ghost/x"))).await;
    assert_eq!(ghost.status, StatusCode::BAD_GATEWAY, "{}", ghost.text());
    assert_eq!(ghost.json()["error"]["code"], "APP_NOT_FOUND");
}

/// `apps.yaml` with a pooled app `fn` (`poolSize: 2`, `$GREETING` = `greeting`), a perRequest
/// app `once`, and a pooled app `tight` whose `memoryMB` is below the guest's initial memory (its
/// 1 MiB buffer), all of the `fn` guest.
fn pooled_apps_yaml(module: &std::path::Path, greeting: &str) -> String {
    format!(
        "apps:\n  - {{name: fn, module: {m}, execution: pooled, poolSize: 2, env: {{GREETING: {greeting}}}}}\n  - {{name: once, module: {m}, execution: perRequest}}\n  - {{name: tight, module: {m}, execution: pooled, memoryMB: 1}}\n",
        m = module.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_app_keeps_warm_instances_and_replaces_them_on_reload() {
    let func = guests::build("fn", &[]);
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.yaml");
    std::fs::write(
        &link,
        "listenAddr: 127.0.0.1:0\ntargets:\n  - {name: fn, protocol: app, app: fn}\n  - {name: once, protocol: app, app: once}\n  - {name: tight, protocol: app, app: tight}\n",
    )
    .unwrap();
    let apps = dir.path().join("apps.yaml");
    std::fs::write(&apps, pooled_apps_yaml(&func, "one")).unwrap();
    let flows = FlowDir::new();
    let fiso = FisoProcess::start_run_with_apps(&flows.path(), &link, &apps).await;
    let link = fiso.link_addr().await;
    let http = client();
    let call = |target: &'static str| {
        let http = http.clone();
        async move {
            let answer = send(
                http.post(format!("http://{link}/link/{target}/run"))
                    .body("hi"),
            )
            .await;
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
            answer
        }
    };
    let warm = [("app", "fn")];
    let runs = |instance| [("app", "fn"), ("instance", instance)];

    // Up to poolSize instances are instantiated ahead; each serves one request and is replaced.
    fiso.wait_for_metric("fiso_app_warm_instances", &warm, 2.0)
        .await;
    for _ in 0..2 {
        assert_eq!(call("fn").await.header("x-greeting"), Some("one"));
    }
    let metrics = fiso.metrics().await;
    assert_eq!(metrics.get("fiso_app_runs_total", &runs("warm")), Some(2.0));
    assert_eq!(metrics.get("fiso_app_runs_total", &runs("cold")), None);
    fiso.wait_for_metric("fiso_app_warm_instances", &warm, 2.0)
        .await;

    // A reload drops the instances prepared with the old config: the next run has the new env.
    let reloaded = fiso.logs().mark();
    std::fs::write(&apps, pooled_apps_yaml(&func, "two")).unwrap();
    fiso.wait_for_log_since(reloaded, |l| {
        l.is("app reloaded") && l.str_field("app") == Some("fn")
    })
    .await;
    fiso.wait_for_metric("fiso_app_warm_instances", &warm, 2.0)
        .await;
    assert_eq!(call("fn").await.header("x-greeting"), Some("two"));
    fiso.wait_for_metric("fiso_app_runs_total", &runs("warm"), 3.0)
        .await;

    // A perRequest app keeps none: each request instantiates its own.
    assert_eq!(call("once").await.header("x-app"), Some("once"));
    let metrics = fiso.metrics().await;
    let once = |instance| [("app", "once"), ("instance", instance)];
    assert_eq!(metrics.get("fiso_app_runs_total", &once("cold")), Some(1.0));
    assert_eq!(
        metrics.get("fiso_app_warm_instances", &[("app", "once")]),
        None
    );

    // An instance that cannot be prepared (above memoryMB at instantiation) is logged once and
    // not retried in a loop; a request instantiates its own and answers with the failure.
    let cannot_prepare = |l: &fiso_e2e::LogLine| {
        l.str_field("app") == Some("tight")
            && l.message()
                .is_some_and(|m| m.starts_with("cannot prepare a warm instance"))
    };
    let warning = fiso.wait_for_log(cannot_prepare).await;
    assert!(
        warning.message().unwrap().contains("memory limit exceeded"),
        "{warning:?}"
    );
    let tight = send(
        http.post(format!("http://{link}/link/tight/run"))
            .body("hi"),
    )
    .await;
    assert_eq!(tight.status, StatusCode::BAD_GATEWAY, "{}", tight.text());
    assert_eq!(tight.json()["error"]["code"], "APP_FAILED");
    assert!(
        tight.text().contains("memory limit exceeded"),
        "{}",
        tight.text()
    );
    assert_eq!(fiso.logs().matching(0, cannot_prepare).len(), 1);
    let metrics = fiso.metrics().await;
    assert_eq!(
        metrics.get("fiso_app_warm_instances", &[("app", "tight")]),
        Some(0.0)
    );
}
