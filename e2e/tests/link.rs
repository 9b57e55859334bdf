//! Fiso-Link end to end: `fiso link` in front of real HTTP and HTTPS upstreams on 127.0.0.1 —
//! forwarding (method, path, query, headers, body, `Host`), path escapes, absolute-form request
//! URIs, auth injection with secret rotation, TLS verification with a target CA, circuit
//! breaker, retries, rate limit, 100 MiB bodies streamed both ways, hot reload under load;
//! what is the client's and not the target's (aborted and malformed bodies), TRACE, hop-by-hop
//! headers naming the credential, odd transfer codings and methods.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fiso_e2e::link::{
    abort_mid_body, http_target, peak_rss, raw_exchange, raw_status, Link, PATH_ESCAPES,
};
use fiso_e2e::reliability::{record, Scale};
use fiso_e2e::tls::TestCert;
use fiso_e2e::{client, eventually, send, Reply, Script, SinkServer};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;

#[tokio::test]
async fn forwards_method_path_query_headers_and_body() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target(
        "orders",
        upstream.addr(),
        "    basePath: /base\n    allowedPaths: [\"/api/v2/**\"]\n",
    ))
    .await;
    let answer = send(
        client()
            .put(link.url("/link/orders/api/v2/items/a%20b?x=1&y=two"))
            .header("x-custom", "kept")
            .header("connection", "x-hop")
            .header("x-hop", "connection-scoped")
            .body("hello"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["received"], true, "the upstream's body");
    let got = &upstream.wait_for_requests(1).await[0];
    assert_eq!(got.method, "PUT");
    assert_eq!(got.path, "/base/api/v2/items/a%20b");
    assert_eq!(got.query.as_deref(), Some("x=1&y=two"));
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert_eq!(got.header("x-hop"), None, "named by Connection: hop-by-hop");
    assert_eq!(
        got.host,
        Some(format!("localhost:{}", upstream.addr().port())),
        "Host is the target's host name"
    );
    assert_eq!(got.body, "hello");
    let m = link.fiso.metrics().await;
    assert_eq!(
        m.get(
            "fiso_link_requests_total",
            &[
                ("target", "orders"),
                ("method", "PUT"),
                ("status", "200"),
                ("mode", "http")
            ]
        ),
        Some(1.0),
        "{m:?}"
    );
}

#[tokio::test]
async fn unknown_targets_foreign_paths_and_escapes_never_reach_an_upstream() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target(
        "api",
        upstream.addr(),
        "    allowedPaths: [\"/api/v2/**\"]\n",
    ))
    .await;
    let (a, h) = (link.addr, "127.0.0.1");
    assert_eq!(raw_status(a, "GET", "/link/nope/api/v2/x", h).await, 404);
    assert_eq!(raw_status(a, "GET", "/admin", h).await, 404);
    assert_eq!(raw_status(a, "GET", "/linkapi/v2", h).await, 404);
    for escape in PATH_ESCAPES {
        assert_eq!(raw_status(a, "GET", escape, h).await, 403, "{escape}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // Allowed, with the path normalised before it is forwarded.
    assert_eq!(
        raw_status(a, "GET", "/link/api//api/v2/./x/../y", h).await,
        200
    );
    assert_eq!(upstream.wait_for_requests(1).await[0].path, "/api/v2/y");
}

#[tokio::test]
async fn absolute_form_uris_and_foreign_hosts_go_to_the_target_only() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target("api", upstream.addr(), "")).await;
    let status = raw_status(
        link.addr,
        "GET",
        "http://evil.example:8080/link/api/x",
        "evil.example:8080",
    )
    .await;
    assert_eq!(status, 200);
    let got = &upstream.wait_for_requests(1).await[0];
    assert_eq!(got.path, "/x");
    assert_eq!(
        got.host,
        Some(format!("localhost:{}", upstream.addr().port()))
    );
    // Not a forward proxy: no tunnels, and a foreign absolute URI without /link/ is 404.
    assert_eq!(
        raw_status(link.addr, "CONNECT", "evil.example:443", "evil.example:443").await,
        404
    );
    assert_eq!(
        raw_status(link.addr, "GET", "http://evil.example/", "evil.example").await,
        404
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn credentials_replace_the_apps_and_a_rotated_secret_is_picked_up() {
    let upstream = SinkServer::ok().await;
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "s1\n").unwrap();
    let link = Link::start_with_env(
        &format!(
            "{}{}",
            http_target(
                "bearer",
                upstream.addr(),
                &format!(
                    "    auth:\n      type: bearer\n      secretRef:\n        filePath: {}\n",
                    token.display()
                )
            ),
            http_target(
                "key",
                upstream.addr(),
                "    auth:\n      type: apikey\n      secretRef:\n        envVar: E2E_API_KEY\n"
            )
        ),
        vec![("E2E_API_KEY".into(), "k-123".into())],
    )
    .await;
    let bearer = |auth: &'static str| {
        let url = link.url("/link/bearer/x");
        async move { send(client().get(url).header("authorization", auth)).await }
    };
    assert_eq!(bearer("Bearer from-the-app").await.status, StatusCode::OK);
    let got = upstream.wait_for_requests(1).await;
    assert_eq!(got[0].header("authorization"), Some("Bearer s1"));
    assert_eq!(got[0].headers.get_all("authorization").iter().count(), 1);

    let answer = send(
        client()
            .get(link.url("/link/key/x"))
            .header("x-api-key", "app-supplied")
            .header("authorization", "Basic YXBwOmFwcA=="),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let got = upstream.wait_for_requests(2).await;
    assert_eq!(got[1].header("x-api-key"), Some("k-123"));
    assert_eq!(got[1].header("authorization"), None, "never forwarded");

    // Rotation: the file is replaced the way kubelet or an editor does it.
    let aside = secrets.path().join("token.new");
    std::fs::write(&aside, "s2\n").unwrap();
    std::fs::rename(&aside, &token).unwrap();
    let rotated = eventually(Duration::from_secs(10), || async {
        bearer("Bearer x").await;
        let last = upstream.requests().pop().unwrap();
        (last.header("authorization") == Some("Bearer s2")).then_some(())
    })
    .await;
    assert!(rotated.is_some(), "{}", link.fiso.logs().tail(20));
    let logs = link.fiso.logs().tail(500);
    for secret in ["s1", "s2", "k-123"] {
        assert!(
            !logs.contains(&format!("Bearer {secret}")) && !logs.contains(&format!("\"{secret}\"")),
            "a secret in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_target_ca_by_host_name() {
    let cert = TestCert::new(&["localhost"]);
    let upstream = SinkServer::start_tls(
        Script::always(Reply::json(200, &serde_json::json!({"tls": true}))),
        &cert,
    )
    .await;
    let port = upstream.addr().port();
    let link = Link::start(&format!(
        "  - name: trusted\n    protocol: https\n    host: localhost\n    port: {port}\n    caFile: {}\n\
         \x20 - name: untrusted\n    protocol: https\n    host: localhost\n    port: {port}\n\
         \x20 - name: by-ip\n    protocol: https\n    host: 127.0.0.1\n    port: {port}\n    caFile: {}\n",
        cert.ca_file().display(),
        cert.ca_file().display()
    ))
    .await;
    let answer = send(client().get(link.url("/link/trusted/secure"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["tls"], true);
    let got = &upstream.wait_for_requests(1).await[0];
    assert_eq!(got.host, Some(format!("localhost:{port}")), "{got:?}");
    assert_eq!(
        got.version,
        axum::http::Version::HTTP_2,
        "negotiated by ALPN"
    );
    // The system roots alone do not know the test CA.
    let answer = send(client().get(link.url("/link/untrusted/secure"))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "UPSTREAM_UNREACHABLE");
    assert_eq!(
        answer.json()["error"]["message"],
        "cannot reach target `untrusted`: the TLS certificate of `localhost` is not trusted (unknown issuer; add its CA with `caFile`)"
    );
    // The certificate names `localhost` only: reaching it as 127.0.0.1 fails verification.
    let answer = send(client().get(link.url("/link/by-ip/secure"))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert_eq!(
        answer.json()["error"]["message"],
        "cannot reach target `by-ip`: the TLS certificate of `127.0.0.1` is not valid for that name"
    );
    assert_eq!(upstream.count(), 1);
}

/// A target that cannot be reached says why in words, in the answer and in a warn log line;
/// the whole error chain is for debug logs only.
#[tokio::test]
async fn an_unreachable_target_says_why_in_words_and_logs_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let link = Link::start(&format!(
        "  - name: nowhere\n    protocol: http\n    host: fiso-test.invalid\n\
         \x20 - name: refused\n    protocol: http\n    host: 127.0.0.1\n    port: {port}\n"
    ))
    .await;
    for (target, words) in [
        ("nowhere", "DNS name `fiso-test.invalid` not found ("),
        (
            "refused",
            &*format!("connection refused at 127.0.0.1:{port} (nothing listens there?)"),
        ),
    ] {
        let answer = send(client().get(link.url(&format!("/link/{target}/x")))).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
        assert_eq!(answer.json()["error"]["code"], "UPSTREAM_UNREACHABLE");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        let expected = format!("cannot reach target `{target}`: {words}");
        assert!(message.starts_with(&expected), "{message}");
        assert!(!message.contains("client error"), "{message}");
        let logged = link
            .fiso
            .logs()
            .wait_for(
                |l| l.is("cannot reach target") && l.str_field("target_name") == Some(target),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(logged.level(), Some("WARN"));
        assert!(
            logged.str_field("error").unwrap().starts_with(words),
            "{logged:?}"
        );
    }
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures() {
    let upstream = SinkServer::start(Script::always(Reply::status(500))).await;
    let link = Link::start(&http_target(
        "flaky",
        upstream.addr(),
        "    retry:\n      maxAttempts: 1\n    circuitBreaker:\n      enabled: true\n      failureThreshold: 2\n      resetTimeout: 60s\n",
    ))
    .await;
    for _ in 0..2 {
        let answer = send(client().get(link.url("/link/flaky/x"))).await;
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the upstream's own answer"
        );
    }
    let answer = send(client().get(link.url("/link/flaky/x"))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"]["code"], "CIRCUIT_OPEN");
    let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        upstream.count(),
        2,
        "an open breaker sends nothing upstream"
    );
    link.fiso
        .wait_for_metric("fiso_link_circuit_state", &[("target", "flaky")], 2.0)
        .await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_and_post_only_with_an_idempotency_key() {
    let upstream = SinkServer::start(Script::first(
        [Reply::status(503), Reply::status(503), Reply::status(200)],
        Reply::status(503),
    ))
    .await;
    let link = Link::start(&http_target(
        "api",
        upstream.addr(),
        "    retry:\n      maxAttempts: 3\n      initialInterval: 10ms\n      jitter: 0\n",
    ))
    .await;
    let answer = send(client().get(link.url("/link/api/x"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.count(), 3);
    let m = link.fiso.metrics().await;
    for attempt in ["2", "3"] {
        assert_eq!(
            m.get(
                "fiso_link_retries_total",
                &[("target", "api"), ("attempt", attempt)]
            ),
            Some(1.0),
            "{m:?}"
        );
    }
    // POST without a key: one attempt, the upstream's 503 comes back as it was.
    let answer = send(client().post(link.url("/link/api/x")).body("b")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 4);
    let answer = send(
        client()
            .post(link.url("/link/api/x"))
            .header("idempotency-key", "k1")
            .body("b"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "exhausted");
    let got = upstream.wait_for_requests(7).await;
    assert!(
        got[4..].iter().all(|r| r.body == "b"),
        "the body is sent again"
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target(
        "slow",
        upstream.addr(),
        "    rateLimit:\n      requestsPerSecond: 0.5\n      burst: 2\n",
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(
            send(client().get(link.url("/link/slow/x"))).await.status,
            StatusCode::OK
        );
    }
    let answer = send(client().get(link.url("/link/slow/x"))).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json()["error"]["code"], "RATE_LIMITED");
    let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(upstream.count(), 2);
    link.fiso
        .wait_for_metric("fiso_link_rate_limited_total", &[("target", "slow")], 1.0)
        .await;
}

#[tokio::test]
async fn a_rate_of_zero_is_no_limit() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target(
        "open",
        upstream.addr(),
        "    rateLimit:\n      requestsPerSecond: 0\n",
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(
            send(client().get(link.url("/link/open/x"))).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(upstream.count(), 20);
}

/// An upstream that counts the bytes of each request body as they stream in, and answers a
/// GET with `size` bytes streamed out.
async fn counting_upstream(size: u64) -> SocketAddr {
    use axum::body::Body;
    use futures::StreamExt;
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        if req.method() == axum::http::Method::GET {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let n = size / chunk.len() as u64;
            let stream =
                futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            return axum::response::Response::new(Body::from_stream(stream));
        }
        let mut body = req.into_body().into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            total += chunk.map(|c| c.len() as u64).unwrap_or(0);
        }
        axum::response::Response::new(Body::from(total.to_string()))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_body_streams_through_both_ways_without_being_buffered() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let upstream = counting_upstream(SIZE).await;
    let link = Link::start(&http_target("big", upstream, "")).await;
    // PUT may be retried: the first MiB is held for a replay, then it streams.
    for method in [reqwest::Method::PUT, reqwest::Method::POST] {
        let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
        let chunks = SIZE / chunk.len() as u64;
        let body =
            futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        let answer = send(
            client()
                .request(method.clone(), link.url("/link/big/upload"))
                .body(reqwest::Body::wrap_stream(body)),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{method}");
        assert_eq!(
            answer.text(),
            SIZE.to_string(),
            "{method}: bytes the upstream got"
        );
    }
    let download = client()
        .get(link.url("/link/big/download"))
        .send()
        .await
        .unwrap();
    let mut stream = download.bytes_stream();
    let mut total = 0u64;
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len() as u64;
    }
    assert_eq!(total, SIZE);
    let peak = peak_rss(link.fiso.pid());
    assert!(
        peak < SIZE,
        "fiso link peaked at {} MiB of resident memory while 100 MiB bodies went through",
        peak / (1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_request_and_keeps_the_last_good_config() {
    let a = SinkServer::ok().await;
    let b = SinkServer::ok().await;
    let link = Link::start(&http_target("a", a.addr(), "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            link.url("/link/a/x"),
        );
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let reloads = |n: usize| {
        let logs = link.fiso.logs();
        logs.matching(0, |l| {
            l.message()
                .is_some_and(|m| m.starts_with("link targets reloaded: "))
        })
        .len()
            >= n
    };
    let versions = [
        format!(
            "{}{}",
            http_target("a", a.addr(), ""),
            http_target("b", b.addr(), "")
        ),
        format!(
            "{}{}",
            http_target("a", a.addr(), "    timeout: 5s\n"),
            http_target("b", b.addr(), "")
        ),
        http_target("a", a.addr(), "    retry:\n      maxAttempts: 2\n"),
        http_target(
            "a",
            a.addr(),
            "    rateLimit:\n      requestsPerSecond: 100000\n",
        ),
    ];
    for (i, v) in versions.iter().enumerate() {
        link.rewrite(v);
        let reloaded = eventually(Duration::from_secs(10), || async {
            reloads(i + 1).then_some(())
        })
        .await;
        assert!(
            reloaded.is_some(),
            "reload {}\n{}",
            i + 1,
            link.fiso.logs().tail(20)
        );
    }
    // An invalid file changes nothing.
    link.rewrite("  - name: a\n    host: [not, a, host]\n");
    link.fiso
        .wait_for_log(|l| l.is("invalid link config; keeping the last good one"))
        .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{}",
        link.fiso.logs().tail(20)
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        send(client().get(link.url("/link/a/x"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(client().get(link.url("/link/b/x"))).await.status,
        StatusCode::NOT_FOUND
    );
    link.fiso
        .wait_for_metric(
            "fiso_config_reload_total",
            &[("component", "link"), ("result", "failure")],
            1.0,
        )
        .await;
}

#[tokio::test]
async fn a_vault_secret_is_injected_and_refreshed() {
    let vault = fiso_e2e::infra::var("FISO_E2E_VAULT_ADDR");
    let root = fiso_e2e::infra::var("FISO_E2E_VAULT_TOKEN");
    let path = fiso_e2e::kafka::unique("link-e2e");
    let put = |token: &'static str| {
        let (vault, root, path) = (vault.clone(), root.clone(), path.clone());
        async move {
            let answer = send(
                client()
                    .post(format!("{vault}/v1/secret/data/{path}"))
                    .header("x-vault-token", root)
                    .header("content-type", "application/json")
                    .body(serde_json::json!({"data": {"token": token}}).to_string()),
            )
            .await;
            assert!(answer.status.is_success(), "{}", answer.text());
        }
    };
    put("v1").await;
    let upstream = SinkServer::ok().await;
    let link = Link::start_with_env(
        &http_target(
            "vaulted",
            upstream.addr(),
            &format!(
                "    auth:\n      type: bearer\n      vaultRef:\n        path: {path}\n        field: token\n        refreshInterval: 200ms\n"
            ),
        ),
        vec![("VAULT_ADDR".into(), vault.clone()), ("VAULT_TOKEN".into(), root.clone())],
    )
    .await;
    assert_eq!(
        send(client().get(link.url("/link/vaulted/x"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        upstream.wait_for_requests(1).await[0].header("authorization"),
        Some("Bearer v1")
    );
    put("v2").await;
    let refreshed = eventually(Duration::from_secs(10), || async {
        send(client().get(link.url("/link/vaulted/x"))).await;
        let last = upstream.requests().pop().unwrap();
        (last.header("authorization") == Some("Bearer v2")).then_some(())
    })
    .await;
    assert!(refreshed.is_some(), "{}", link.fiso.logs().tail(20));
    let m = link.fiso.metrics().await;
    assert!(
        m.value(
            "fiso_link_auth_refresh_total",
            &[("target", "vaulted"), ("status", "success")]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn clients_that_hang_up_or_send_malformed_bodies_never_open_the_breaker() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target(
        "api",
        upstream.addr(),
        "    circuitBreaker:\n      enabled: true\n      failureThreshold: 2\n      resetTimeout: 60s\n",
    ))
    .await;
    const ABORTS: usize = 3;
    // 100 KB of an upload, then the client hangs up. A 2 MB body streams to the upstream (the
    // upstream client sees the break); a PUT of 500 KB is buffered for replays first (the
    // retry layer sees it).
    for (method, announced) in [("PUT", 2_000_000), ("POST", 2_000_000), ("PUT", 500_000)] {
        for _ in 0..ABORTS {
            abort_mid_body(link.addr, method, "/link/api/upload", announced, 100_000).await;
        }
    }
    // Invalid chunk-size lines: a malformed body, on both paths.
    for method in ["PUT", "POST"] {
        for _ in 0..ABORTS {
            let request = format!(
                "{method} /link/api/upload HTTP/1.1\r\nHost: localhost\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
            );
            raw_exchange(link.addr, request.as_bytes()).await;
        }
    }
    let counted = |method: &'static str, status: &'static str, n: usize| {
        let link = &link;
        async move {
            link.fiso
                .wait_for_metric(
                    "fiso_link_requests_total",
                    &[
                        ("target", "api"),
                        ("method", method),
                        ("status", status),
                        ("mode", "http"),
                    ],
                    n as f64,
                )
                .await
        }
    };
    counted("PUT", "499", 2 * ABORTS).await;
    counted("POST", "499", ABORTS).await;
    counted("PUT", "400", ABORTS).await;
    counted("POST", "400", ABORTS).await;
    let m = link.fiso.metrics().await;
    assert_eq!(
        m.get("fiso_link_circuit_state", &[("target", "api")]),
        Some(0.0),
        "{m}"
    );
    for status in ["502", "503", "504"] {
        for method in ["PUT", "POST"] {
            assert_eq!(
                m.get(
                    "fiso_link_requests_total",
                    &[
                        ("target", "api"),
                        ("method", method),
                        ("status", status),
                        ("mode", "http")
                    ]
                ),
                None,
                "{m}"
            );
        }
    }
    let answer = send(client().put(link.url("/link/api/upload")).body("whole")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(upstream.requests().last().unwrap().body, "whole");
    let logs = link.fiso.logs();
    assert!(
        logs.matching(0, |l| l
            .is("client closed request before its body was complete"))
            .len()
            >= 3 * ABORTS,
        "{}",
        logs.tail(30)
    );
    assert!(
        !logs.tail(500).contains("circuit breaker transition"),
        "{}",
        logs.tail(30)
    );
    record(
        "link_client_faults",
        Scale::from_env(),
        serde_json::json!({
            "client_aborts": 3 * ABORTS,
            "malformed_bodies": 2 * ABORTS,
            "breaker_threshold": 2,
            "breaker_state_after": 0,
            "next_request": 200,
        }),
    );
}

/// An upstream that answers every request with its method and headers as JSON: what an app
/// would see if the proxy let a TRACE through.
async fn echoing_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let count = Arc::clone(&count);
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let body = serde_json::json!({"method": req.method().as_str(), "headers": headers});
            axum::response::Response::new(axum::body::Body::from(body.to_string()))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn trace_is_refused_so_an_echoing_upstream_never_hands_back_the_credential() {
    let (upstream, seen) = echoing_upstream().await;
    let link = Link::start_with_env(
        &http_target(
            "echo",
            upstream,
            "    auth:\n      type: bearer\n      secretRef:\n        envVar: E2E_TRACE_TOKEN\n",
        ),
        vec![("E2E_TRACE_TOKEN".into(), "trace-secret-1".into())],
    )
    .await;
    let answer = send(client().request(reqwest::Method::TRACE, link.url("/link/echo/x"))).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.json()["error"]["code"], "METHOD_NOT_ALLOWED");
    let allow = answer.header("allow").expect("405 carries Allow");
    assert!(allow.contains("GET") && !allow.contains("TRACE"), "{allow}");
    assert!(!answer.text().contains("trace-secret-1"));
    // Methods are case-sensitive, but some upstreams are not.
    for method in ["TRACE", "trace", "Trace"] {
        let (status, text) = raw_exchange(
            link.addr,
            format!(
                "{method} /link/echo/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status, 405, "{method}: {text}");
        assert!(!text.contains("trace-secret-1"), "{text}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "no TRACE reached the upstream"
    );
    // The credential is injected on an ordinary request (the upstream did echo it).
    let answer = send(client().get(link.url("/link/echo/x"))).await;
    assert_eq!(
        answer.json()["headers"]["authorization"],
        "Bearer trace-secret-1"
    );
}

#[tokio::test]
async fn a_connection_header_naming_the_credential_header_cannot_remove_it() {
    let upstream = SinkServer::ok().await;
    let link = Link::start_with_env(
        &format!(
            "{}{}",
            http_target(
                "bearer",
                upstream.addr(),
                "    auth:\n      type: bearer\n      secretRef:\n        envVar: E2E_HOP_TOKEN\n",
            ),
            http_target(
                "key",
                upstream.addr(),
                "    auth:\n      type: apikey\n      header: X-Api-Key\n      secretRef:\n        envVar: E2E_HOP_KEY\n",
            )
        ),
        vec![
            ("E2E_HOP_TOKEN".into(), "hop-token".into()),
            ("E2E_HOP_KEY".into(), "hop-key".into()),
        ],
    )
    .await;
    let cases = [
        ("/link/bearer/x", "Authorization"),
        ("/link/bearer/x", "keep-alive, authorization"),
        ("/link/key/x", "X-API-Key"),
        ("/link/key/x", "Authorization, x-api-key, TE"),
    ];
    for (i, (path, connection)) in cases.iter().enumerate() {
        // Raw, so that no client library rewrites the Connection header.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\
             Authorization: Bearer from-the-app\r\nX-API-Key: from-the-app\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\n\
             Proxy-Authorization: Basic cHJveHk6cHJveHk=\r\nProxy-Connection: keep-alive\r\n\r\n"
        );
        let (status, text) = raw_exchange_one(link.addr, &request).await;
        assert_eq!(status, 200, "{connection}: {text}");
        let got = &upstream.wait_for_requests(i + 1).await[i];
        if path.contains("bearer") {
            assert_eq!(
                got.header("authorization"),
                Some("Bearer hop-token"),
                "{connection}"
            );
            assert_eq!(
                got.header("x-api-key"),
                Some("from-the-app"),
                "{connection}"
            );
        } else {
            assert_eq!(got.header("x-api-key"), Some("hop-key"), "{connection}");
            assert_eq!(got.header("authorization"), None, "{connection}");
        }
        for hop in [
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
        ] {
            assert_eq!(got.header(hop), None, "{connection}: {hop} forwarded");
        }
    }
}

/// [`raw_exchange`] for a request that keeps its connection open: reads one answer's head.
async fn raw_exchange_one(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let text = read_head(&mut tcp).await;
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, text)
}

#[tokio::test]
async fn odd_transfer_codings_are_501_and_methods_must_be_short_tokens() {
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target("api", upstream.addr(), "")).await;
    let chunked = |coding: &str| {
        format!(
            "POST /link/api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: {coding}\r\n\
             Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
    };
    for coding in [
        "gzip, chunked",
        "identity, chunked",
        "chunked, chunked",
        "x-custom, chunked",
    ] {
        let (status, text) = raw_exchange(link.addr, chunked(coding).as_bytes()).await;
        assert_eq!(status, 501, "{coding}: {text}");
        assert!(text.contains("NOT_IMPLEMENTED"), "{text}");
    }
    // Two header lines are one list: `gzip` then `chunked`.
    let two_lines = "POST /link/api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\
                     Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw_exchange(link.addr, two_lines.as_bytes()).await.0, 501);
    // A final coding other than chunked is a framing error hyper answers itself (RFC 9112 §6.3).
    assert_eq!(
        raw_exchange(link.addr, chunked("gzip").as_bytes()).await.0,
        400
    );
    // Methods: hyper refuses what is not an RFC 9110 token, the route anything over 32 bytes.
    let method = |m: &str| {
        format!("{m} /link/api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    };
    for bad in ["G(T", "GE\"T", "G{T", "G\u{1}T", "GET\u{7f}"] {
        let (status, text) = raw_exchange(link.addr, method(bad).as_bytes()).await;
        assert_eq!(status, 400, "{bad:?}: {text}");
    }
    let long = "M".repeat(33);
    assert_eq!(
        raw_exchange(link.addr, method(&long).as_bytes()).await.0,
        400
    );
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // Within the limits: forwarded, codings and all.
    let (status, text) = raw_exchange(link.addr, chunked("chunked").as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let longest = "M".repeat(32);
    assert_eq!(
        raw_exchange(link.addr, method(&longest).as_bytes()).await.0,
        200
    );
    assert_eq!(
        raw_exchange(link.addr, method("PROPFIND").as_bytes())
            .await
            .0,
        200
    );
    let got = upstream.wait_for_requests(3).await;
    assert_eq!(got[0].body, "hello");
    assert_eq!(got[1].method.as_str(), longest);
    assert_eq!(got[2].method.as_str(), "PROPFIND");
}

#[tokio::test]
async fn a_client_whose_body_stalls_gets_408_and_the_target_is_not_blamed() {
    use tokio::io::AsyncWriteExt;
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target(
        "api",
        upstream.addr(),
        "    timeout: 300ms\n    circuitBreaker:\n      enabled: true\n      failureThreshold: 2\n",
    ))
    .await;
    // A POST streams to the upstream, which waits for the rest of the body as the proxy does;
    // the target's `timeout` runs out while both wait for the client.
    let stalled = (0..3).map(|_| async {
        let mut tcp = tokio::net::TcpStream::connect(link.addr).await.unwrap();
        tcp.write_all(
            b"POST /link/api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
        let head = read_head(&mut tcp).await;
        drop(tcp);
        head
    });
    for head in futures::future::join_all(stalled).await {
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }
    let m = link.fiso.metrics().await;
    assert_eq!(
        m.get("fiso_link_circuit_state", &[("target", "api")]),
        Some(0.0),
        "{m}"
    );
    let answer = send(client().post(link.url("/link/api/x")).body("b")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

/// Reads an answer's head (and whatever of its body came with it).
async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}
