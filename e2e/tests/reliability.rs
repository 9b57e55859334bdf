//! The reliability suite (issue: "prove it loses nothing under faults"): at-least-once through
//! repeated `kill -9`, a sink outage, poison records, reloads under load, the Link's attack
//! surface, and a soak. `cargo test` runs it at a short scale; `cargo xtask reliability` at
//! full scale (`FISO_RELIABILITY=full`), where each scenario's figures (duplicates, reload
//! counts, memory) go into `target/reliability/report.md`.
//!
//! Needs the Kafka broker of `cargo xtask infra up`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fiso_e2e::kafka::{self, create_topic, kafka_source, produce_many, unique};
use fiso_e2e::link::{http_target, raw_status, Link, PATH_ESCAPES};
use fiso_e2e::reliability::{record, rss, Scale};
use fiso_e2e::{
    client, eventually, free_addr, post_json, FisoProcess, FlowDir, HttpFlow, Recorded, Reply,
    Script, SinkServer,
};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CloudEvent ids a sink has seen, read incrementally (a full-scale sink holds 100k+
/// requests; re-parsing them all on every poll would dominate the run).
#[derive(Default)]
struct SeenIds {
    read: usize,
    ids: HashSet<String>,
    /// Per partition, the offsets in order of first delivery (ids are `<topic>-<p>-<o>`).
    order: BTreeMap<i32, Vec<i64>>,
}

impl SeenIds {
    /// Takes in the requests `sink` received since the last call that `accept` keeps.
    fn absorb(&mut self, sink: &SinkServer, accept: impl Fn(&Recorded) -> bool) -> usize {
        let new = sink.requests_from(self.read);
        self.read += new.len();
        for r in new.iter().filter(|r| accept(r)) {
            let id = r.json()["id"].as_str().expect("a CloudEvent id").to_owned();
            if let Some((p, o)) = coordinates(&id) {
                if !self.ids.contains(&id) {
                    self.order.entry(p).or_default().push(o);
                }
            }
            self.ids.insert(id);
        }
        self.ids.len()
    }
}

/// `(partition, offset)` of a Kafka-sourced event id `<topic>-<partition>-<offset>`.
fn coordinates(id: &str) -> Option<(i32, i64)> {
    let mut parts = id.rsplitn(3, '-');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    Some((partition, offset))
}

/// The event ids `produce_many` coordinates become.
fn ids_of(topic: &str, coordinates: &[(i32, i64)]) -> BTreeSet<String> {
    coordinates
        .iter()
        .map(|(p, o)| format!("{topic}-{p}-{o}"))
        .collect()
}

/// `n` JSON records of about 1 KiB.
fn payloads(n: usize) -> Vec<Vec<u8>> {
    let pad = "x".repeat(1000);
    (0..n)
        .map(|i| format!(r#"{{"n":{i},"pad":"{pad}"}}"#).into_bytes())
        .collect()
}

/// How many events `flow` dead-lettered (its `fiso_flow_dlq_total`).
async fn dead_lettered(fiso: &FisoProcess, flow: &str) -> usize {
    fiso.metrics()
        .await
        .get("fiso_flow_dlq_total", &[("flow", flow)])
        .unwrap_or(0.0) as usize
}

fn kafka_http_flow(name: &str, topic: &str, group: &str, sink_url: &str, extra: &str) -> String {
    format!(
        "name: {name}\n{}sink:\n  type: http\n  config:\n    url: {sink_url}\n{extra}",
        kafka_source(topic, group)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_survives_repeated_kill_9() {
    let scale = Scale::from_env();
    let n = scale.pick(3_000, 100_000);
    let kills = scale.pick(2, 5);
    const PARTITIONS: i32 = 4;
    let topic = unique("rel-crash");
    let group = unique("rel-crash-group");
    create_topic(&topic, PARTITIONS).await;
    let produced = produce_many(&topic, PARTITIONS, &payloads(n)).await;
    let expected = ids_of(&topic, &produced);
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "crash.yaml",
        &kafka_http_flow("crash", &topic, &group, &sink.url("/events"), ""),
    );
    // Kill points: request counts spread at random over the run, in increasing order.
    let mut points: Vec<usize> = (0..kills)
        .map(|_| fastrand::usize(n / 20..n * 9 / 10))
        .collect();
    points.sort_unstable();
    let started = Instant::now();
    for &point in &points {
        let mut fiso = FisoProcess::start(&dir.path()).await;
        let reached = eventually(scale.deadline(), || async {
            (sink.count() >= point).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "{} of {point} requests\n{}",
            sink.count(),
            fiso.logs().tail(30)
        );
        fiso.send_signal(libc::SIGKILL);
        fiso.wait_exit().await;
    }
    let fiso = FisoProcess::start(&dir.path()).await;
    let mut seen = SeenIds::default();
    let all = eventually(scale.deadline(), || {
        let distinct = seen.absorb(&sink, |_| true);
        async move { (distinct >= n).then_some(()) }
    })
    .await;
    assert!(
        all.is_some(),
        "{} distinct of {n}\n{}",
        seen.ids.len(),
        fiso.logs().tail(30)
    );
    seen.absorb(&sink, |_| true);
    let seen_set: BTreeSet<String> = seen.ids.iter().cloned().collect();
    assert_eq!(seen_set.len(), n);
    assert!(
        seen_set == expected,
        "ids other than the produced ones reached the sink"
    );
    record(
        "crash",
        scale,
        json!({
            "records": n,
            "partitions": PARTITIONS,
            "kills": kills,
            "kill_points": points,
            "requests": sink.count(),
            "duplicates": sink.count() - n,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_ends_with_every_record_delivered_or_dead_lettered() {
    let scale = Scale::from_env();
    let n = scale.pick(400, 10_000);
    const PARTITIONS: i32 = 2;
    let topic = unique("rel-outage");
    let group = unique("rel-outage-group");
    let dlq = unique("rel-outage-dlq");
    create_topic(&topic, PARTITIONS).await;
    let produced = produce_many(&topic, PARTITIONS, &payloads(n)).await;
    let expected = ids_of(&topic, &produced);
    // The sink's address; nothing listens there until the outage's second phase.
    let addr = free_addr();
    let dir = FlowDir::new();
    dir.write(
        "outage.yaml",
        &kafka_http_flow(
            "outage",
            &topic,
            &group,
            &format!("http://{addr}/events"),
            &format!(
                "errorHandling:\n  maxRetries: 2\n  initialInterval: 5ms\n  maxInterval: 20ms\n\
                 \x20 deadLetterTopic: {dlq}\n"
            ),
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    // Phase 1, connections refused: until a tenth of the records were dead-lettered.
    let refused = eventually(scale.deadline(), || async {
        (dead_lettered(&fiso, "outage").await >= n / 10).then_some(())
    })
    .await;
    assert!(refused.is_some(), "{}", fiso.logs().tail(30));
    // Phase 2, the sink is back but answers 503 to its first requests; then 200.
    let failing = n / 10;
    let sink = SinkServer::start_at(
        addr,
        Script::first((0..failing).map(|_| Reply::status(503)), Reply::status(200)),
    )
    .await;
    let mut delivered = SeenIds::default();
    let settled = eventually(scale.deadline(), || {
        let d = delivered.absorb(&sink, |r| r.status == StatusCode::OK);
        let fiso = &fiso;
        async move {
            let dead = dead_lettered(fiso, "outage").await;
            (d + dead >= n).then_some(dead)
        }
    })
    .await;
    let dead = settled.unwrap_or_else(|| {
        panic!(
            "delivered {} + dead-lettered {} < {n}\n{}",
            delivered.ids.len(),
            dlq,
            fiso.logs().tail(30)
        )
    });
    let mut dead_ids = BTreeSet::new();
    for r in &kafka::consume(&dlq, dead).await {
        let id = r.headers["fiso-correlation-id"].clone();
        assert!(
            ["fiso-error-code", "fiso-original-topic", "fiso-retry-count"]
                .iter()
                .all(|h| r.headers.contains_key(*h)),
            "{:?}",
            r.headers
        );
        assert!(r.value.starts_with(br#"{"n":"#), "the original value");
        dead_ids.insert(id);
    }
    let delivered_ids: BTreeSet<String> = delivered.ids.iter().cloned().collect();
    let union: BTreeSet<String> = delivered_ids.union(&dead_ids).cloned().collect();
    assert!(
        union == expected,
        "{} of {n} records accounted for",
        union.len()
    );
    record(
        "outage",
        scale,
        json!({
            "records": n,
            "delivered": delivered_ids.len(),
            "dead_lettered": dead_ids.len(),
            "both": delivered_ids.intersection(&dead_ids).count(),
            "answered_503": failing,
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_good_ones_stay_in_order() {
    let scale = Scale::from_env();
    let n = scale.pick(600, 20_000);
    const PARTITIONS: i32 = 2;
    let topic = unique("rel-poison");
    let group = unique("rel-poison-group");
    let dlq = unique("rel-poison-dlq");
    create_topic(&topic, PARTITIONS).await;
    // Every 7th record is not JSON; every 11th (not already bad) lacks the field the transform
    // reads.
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| match i {
            _ if i % 7 == 3 => format!("not json {{{i}").into_bytes(),
            _ if i % 11 == 5 => format!(r#"{{"other":{i}}}"#).into_bytes(),
            _ => format!(r#"{{"n":{i}}}"#).into_bytes(),
        })
        .collect();
    let produced = produce_many(&topic, PARTITIONS, &values).await;
    let bad = |i: usize| i % 7 == 3 || i % 11 == 5;
    let good_ids: BTreeSet<String> = produced
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad(*i))
        .map(|(_, (p, o))| format!("{topic}-{p}-{o}"))
        .collect();
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "poison.yaml",
        &kafka_http_flow(
            "poison",
            &topic,
            &group,
            &sink.url("/events"),
            &format!(
                "transform:\n  fields:\n    n: \"data.n\"\n    doubled: \"data.n * 2\"\n\
                 errorHandling:\n  deadLetterTopic: {dlq}\n"
            ),
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let (good_count, bad_count) = (good_ids.len(), n - good_ids.len());
    let mut seen = SeenIds::default();
    let done = eventually(scale.deadline(), || {
        let delivered = seen.absorb(&sink, |_| true);
        let fiso = &fiso;
        async move {
            let dead = dead_lettered(fiso, "poison").await;
            (delivered >= good_count && dead >= bad_count).then_some(())
        }
    })
    .await;
    assert!(
        done.is_some(),
        "delivered {} of {}\n{}",
        seen.ids.len(),
        good_ids.len(),
        fiso.logs().tail(30)
    );
    let delivered: BTreeSet<String> = seen.ids.iter().cloned().collect();
    assert!(
        delivered == good_ids,
        "exactly the good records are delivered"
    );
    for (partition, offsets) in &seen.order {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} delivered out of order"
        );
    }
    let mut codes = BTreeMap::<String, usize>::new();
    for r in kafka::consume(&dlq, bad_count).await {
        *codes
            .entry(r.headers["fiso-error-code"].clone())
            .or_default() += 1;
    }
    assert_eq!(
        codes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["INPUT_INVALID", "TRANSFORM_FAILED"]
    );
    assert_eq!(codes.values().sum::<usize>(), bad_count);
    record(
        "poison",
        scale,
        json!({"records": n, "delivered": delivered.len(), "dead_lettered": codes}),
    );
}

/// Load on a URL until stopped: (ok, failed) request counts.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: &[String], per_url: usize) -> Load {
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for url in urls {
            for _ in 0..per_url {
                let (ok, failed, stop, url) =
                    (ok.clone(), failed.clone(), stop.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        let answer = post_json(&client, &url, &json!({"n": 1})).await;
                        if answer.status == StatusCode::OK {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{url}: {} {}", answer.status, answer.text());
                        }
                    }
                }));
            }
        }
        Load {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let scale = Scale::from_env();
    let rewrites = scale.pick(10, 50);
    let sink = SinkServer::ok().await;
    let upstream = SinkServer::ok().await;
    let dir = FlowDir::new();
    let flow = |version: usize| {
        HttpFlow::new("orders", "127.0.0.1:0", "/orders", &sink.url("/orders"))
            .with(&format!(
                "transform:\n  fields:\n    v: '\"v{version}\"'\n    n: \"data.n\""
            ))
            .yaml()
    };
    dir.write("orders.yaml", &flow(0));
    let link_dir = tempfile::tempdir().unwrap();
    let link_config = link_dir.path().join("config.yaml");
    let link_text = |version: usize| {
        format!(
            "listenAddr: 127.0.0.1:0\ntargets:\n{}",
            http_target(
                "api",
                upstream.addr(),
                &format!("    timeout: {}s\n", version + 1)
            )
        )
    };
    std::fs::write(&link_config, link_text(0)).unwrap();
    let fiso = FisoProcess::start_run(&dir.path(), &link_config).await;
    let flow_url = format!("http://{}/orders", fiso.http_addr("127.0.0.1:0").await);
    let link_url = format!("http://{}/link/api/x", fiso.link_addr().await);
    let load = Load::start(&[flow_url, link_url], 2);
    let reloads = |component: &'static str, result: &'static str| {
        let fiso = &fiso;
        async move {
            fiso.metrics()
                .await
                .get(
                    "fiso_config_reload_total",
                    &[("component", component), ("result", result)],
                )
                .unwrap_or(0.0) as usize
        }
    };
    let rewrite = |path: &std::path::Path, text: &str| {
        let aside = path.with_extension("tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, path).unwrap();
    };
    for i in 1..=rewrites {
        // Odd rewrites are invalid (the last good config must keep serving), even ones change
        // the flow's transform and the target's timeout.
        let valid = i % 2 == 0;
        let (flow_text, link) = if valid {
            (flow(i), link_text(i))
        } else {
            (
                "name: orders\nsource: [broken\n".to_owned(),
                "listenAddr: 127.0.0.1:0\ntargets:\n  - name: api\n    port: not-a-port\n"
                    .to_owned(),
            )
        };
        let result = if valid { "success" } else { "failure" };
        let (flows_before, links_before) =
            (reloads("flow", result).await, reloads("link", result).await);
        rewrite(&dir.file("orders.yaml"), &flow_text);
        rewrite(&link_config, &link);
        let applied = eventually(Duration::from_secs(20), || async {
            (reloads("flow", result).await > flows_before
                && reloads("link", result).await > links_before)
                .then_some(())
        })
        .await;
        assert!(applied.is_some(), "rewrite {i}\n{}", fiso.logs().tail(30));
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{}", fiso.logs().tail(30));
    assert!(ok > 0);
    record(
        "reload",
        scale,
        json!({
            "rewrites_per_component": rewrites,
            "invalid": rewrites.div_ceil(2),
            "requests_ok": ok,
            "requests_failed": failed,
        }),
    );
}

/// Sends `head` (and then nothing) and returns what the server answered before closing.
async fn answer_to_partial_request(addr: SocketAddr, head: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_security_run_refuses_escapes_and_leaks_no_secret() {
    let scale = Scale::from_env();
    let secret = format!("rel-secret-{}", fastrand::u64(..));
    let upstream = SinkServer::ok().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("token");
    std::fs::write(&secret_file, &secret).unwrap();
    let config = format!(
        "listenAddr: 127.0.0.1:0\nreadHeaderTimeout: 1s\ntargets:\n{}",
        http_target(
            "api",
            upstream.addr(),
            &format!(
                "    timeout: 1s\n    allowedPaths: [\"/api/v2/**\"]\n\
                 \x20   auth:\n      type: bearer\n      secretRef:\n        filePath: {}\n",
                secret_file.display()
            ),
        )
    );
    let link =
        Link::start_with_config(&config, vec![("FISO_LOG_LEVEL".into(), "debug".into())]).await;
    let (a, h) = (link.addr, "127.0.0.1");
    let mut bodies = Vec::new();

    for escape in PATH_ESCAPES {
        assert_eq!(raw_status(a, "GET", escape, h).await, 403, "{escape}");
    }
    assert_eq!(upstream.count(), 0, "an escape reached the upstream");

    // Absolute-form URI and a spoofed Host: still the target, with its Host.
    let status = raw_status(
        a,
        "GET",
        "http://evil.example/link/api/api/v2/x",
        "evil.example",
    )
    .await;
    assert_eq!(status, 200);
    let got = &upstream.wait_for_requests(1).await[0];
    assert_eq!(got.path, "/api/v2/x");
    assert_eq!(
        got.host,
        Some(format!("localhost:{}", upstream.addr().port()))
    );
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );

    // The app's own credentials never pass, and errors carry no secret.
    let app_auth = client()
        .get(link.url("/link/api/api/v2/y"))
        .header("authorization", "Bearer from-the-app")
        .send()
        .await
        .unwrap();
    assert_eq!(app_auth.status(), StatusCode::OK);
    assert_eq!(
        upstream.wait_for_requests(2).await[1].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    for path in ["/link/api/admin", "/link/nope/x", "/link/api/api/v2/%zz"] {
        let r = client().get(link.url(path)).send().await.unwrap();
        bodies.push(r.text().await.unwrap());
    }

    // Oversized headers: refused before anything is forwarded.
    let huge = "a".repeat(1024 * 1024);
    let answer = answer_to_partial_request(
        a,
        &format!("GET /link/api/api/v2/z HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    // Slowloris: headers that never end are cut off by readHeaderTimeout (the connection is
    // closed; the read below returns).
    let started = Instant::now();
    let answer = answer_to_partial_request(
        a,
        "GET /link/api/api/v2/slow HTTP/1.1\r\nHost: x\r\nX-Trickle: 1\r\n",
    )
    .await;
    let header_cut = started.elapsed();
    assert!(!answer.contains(" 200 "), "{answer}");
    bodies.push(answer);

    // A body that stops arriving is cut off by the target's timeout, and it is the client's
    // fault (408) both while it is buffered for replays (PUT may be retried) and while it
    // streams to the upstream (POST).
    let mut body_cut = Vec::new();
    for (method, status) in [("PUT", "408"), ("POST", "408")] {
        let started = Instant::now();
        let answer = answer_to_partial_request(
            a,
            &format!(
                "{method} /link/api/api/v2/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial"
            ),
        )
        .await;
        body_cut.push(started.elapsed().as_secs_f64());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{method}: {answer}"
        );
        bodies.push(answer);
    }

    // No secret anywhere: answers, metrics, every log line (debug level).
    let metrics = link.fiso.metrics().await.to_string();
    assert!(!metrics.contains(&secret), "the secret is in /metrics");
    for body in &bodies {
        assert!(
            !body.contains(&secret),
            "the secret is in an answer: {body}"
        );
    }
    let lines = link.fiso.logs().lines();
    let leaked: Vec<_> = lines.iter().filter(|l| l.raw.contains(&secret)).collect();
    assert!(leaked.is_empty(), "the secret is logged: {leaked:?}");
    record(
        "link_security",
        scale,
        json!({
            "path_escapes_refused": PATH_ESCAPES.len(),
            "slow_headers_closed_after_s": header_cut.as_secs_f64(),
            "slow_body_cut_after_s": body_cut,
            "log_lines_checked": lines.len(),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_soak_at_a_constant_rate_has_no_errors() {
    let scale = Scale::from_env();
    let seconds = scale.pick(5, 60);
    let rate: u64 = scale.pick(500, 2000);
    let upstream = SinkServer::ok().await;
    let link = Link::start(&http_target("soak", upstream.addr(), "")).await;
    let url = link.url("/link/soak/events");
    let pid = link.fiso.pid();
    // Warm up (connections, allocator) before the first memory reading.
    for _ in 0..100 {
        assert_eq!(
            client().get(&url).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let rss_start = rss(pid);
    const WORKERS: u64 = 16;
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (ok, failed, url) = (ok.clone(), failed.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            // A fixed schedule: a slow answer is not made up for by sending less later.
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * WORKERS / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while tick.tick().await < end {
                match client.post(&url).body(r#"{"n":1}"#).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("soak request failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rss_end = rss(pid);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{}", link.fiso.logs().tail(20));
    record(
        "soak",
        scale,
        json!({
            "seconds": seconds,
            "target_rate": rate,
            "requests_ok": ok,
            "achieved_rate": ok as f64 / seconds as f64,
            "rss_start_mib": rss_start as f64 / 1048576.0,
            "rss_end_mib": rss_end as f64 / 1048576.0,
        }),
    );
}
