//! An event over its CEL budget fails alone; while events burn their budget on every core, the
//! health server and the other flows keep answering. In a file of its own: nothing else of the
//! suite runs beside it, so the timing it asserts (the 100 ms) measures only Fiso.

use std::time::{Duration, Instant};

use fiso_e2e::reliability::{record, Scale};
use fiso_e2e::{client, post_json, FisoProcess, FlowDir, HttpFlow, SinkServer};
use reqwest::StatusCode;
use serde_json::json;

const SHARED: &str = "127.0.0.1:0";

fn flow(name: &str, sink: &SinkServer, field: &str, extra: &str) -> String {
    HttpFlow::named(name, SHARED, sink)
        .out_field(field)
        .with(extra)
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_its_budget_fails_alone_and_health_keeps_answering() {
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    let nested = "size(data.l.map(x, data.l.map(y, x + y)))";
    dir.write("light.yaml", &flow("light", &sink, "data.n", ""));
    dir.write("loops.yaml", &flow("loops", &sink, nested, ""));
    // A budget high enough that one event burns CPU for seconds before it fails.
    dir.write(
        "burner.yaml",
        &flow(
            "burner",
            &sink,
            nested,
            "celBudget:\n  iterations: 50000000\n",
        ),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    let addr = fiso.http_addr(SHARED).await;

    // Over the default budget: 422, the budget named, nothing delivered.
    let list: Vec<u32> = (0..2_500).collect();
    let answer = post_json(
        &client(),
        &format!("http://{addr}/loops"),
        &json!({ "l": list }),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text()
    );
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "TRANSFORM_FAILED");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("celBudget.iterations")),
        "{error}"
    );
    let small = post_json(
        &client(),
        &format!("http://{addr}/loops"),
        &json!({"l": [1, 2]}),
    )
    .await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.text());

    // As many events as the runtime has workers burn their (raised) budget: on the async
    // workers they would hold every one of them; meanwhile health and the other flow answer.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners: Vec<_> = (0..workers)
        .map(|_| {
            let list: Vec<u32> = (0..10_000).collect();
            tokio::spawn(async move {
                post_json(
                    &client(),
                    &format!("http://{addr}/burner"),
                    &json!({ "l": list }),
                )
                .await
            })
        })
        .collect();
    // Probe once the process is visibly burning CPU (half a second beyond what it had).
    fiso.wait_for_cpu(0.5).await;
    let health = format!("http://{}/healthz", fiso.metrics_addr());
    let mut slowest = Duration::ZERO;
    for n in 0..10 {
        let started = Instant::now();
        let status = client()
            .get(&health)
            .send()
            .await
            .expect("/healthz")
            .status();
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, StatusCode::OK);
        let light = post_json(
            &client(),
            &format!("http://{addr}/light"),
            &json!({ "n": n }),
        )
        .await;
        assert_eq!(light.status, StatusCode::OK, "{}", light.text());
    }
    assert!(
        burners.iter().all(|b| !b.is_finished()),
        "the burning events were still being evaluated during the probes"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?} while a flow burned its budget"
    );
    record(
        "cel_isolation",
        Scale::from_env(),
        json!({
            "burning_events": workers,
            "burner_budget_iterations": 50_000_000,
            "healthz_probes": 10,
            "healthz_slowest_ms": (slowest.as_secs_f64() * 10_000.0).round() / 10.0,
            "other_flow_requests_ok": 10,
        }),
    );
    for burner in burners {
        burner.abort();
    }
}
