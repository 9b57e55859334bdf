//! A Kafka flow whose events burn their CEL budget on every partition holds up no other Kafka
//! flow. Partition workers run on per-core threads that every flow's partitions share; a heavy
//! flow's events are evaluated off those threads, so a light flow's partition on the same core
//! keeps delivering. In a file of its own, like `flow_cel_isolation`: nothing else of the suite
//! competes for the CPU while the events burn.

use fiso_e2e::kafka::{create_topic, kafka_source, producer, send, unique};
use fiso_e2e::{eventually, FisoProcess, FlowDir, LogLine, SinkServer, DEADLINE};
use reqwest::StatusCode;
use serde_json::json;

/// An HTTP-sink flow reading `topic` with `transform` (YAML under `transform:`) and `extra`.
fn kafka_flow(name: &str, topic: &str, sink: &SinkServer, field: &str, extra: &str) -> String {
    format!(
        "name: {name}\n{}transform:\n  fields:\n    out: {field}\n{extra}\
         sink:\n  type: http\n  config:\n    url: {}\n",
        kafka_source(topic, &unique(&format!("{name}-group"))),
        sink.url(&format!("/{name}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_flow_burning_its_budget_on_every_core_holds_up_no_other_flow() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (burning, light) = (unique("burning"), unique("light"));
    create_topic(&burning, cores as i32).await;
    create_topic(&light, 1).await;
    // One event per partition, each burning the highest budget for seconds before it fails:
    // whatever core a partition's worker is on, a burning partition shares it.
    let list: Vec<u32> = (0..10_000).collect();
    let events = producer();
    for partition in 0..cores as i32 {
        send(
            &events,
            &burning,
            partition,
            &json!({ "l": list }).to_string(),
        )
        .await;
    }
    let sink = SinkServer::ok().await;
    let dir = FlowDir::new();
    dir.write(
        "burner.yaml",
        &kafka_flow(
            "burner",
            &burning,
            &sink,
            "size(data.l.map(x, data.l.map(y, x + y)))",
            "celBudget:\n  iterations: 100000000\nerrorHandling:\n  maxRetries: 0\n",
        ),
    );
    dir.write(
        "light.yaml",
        &kafka_flow("light", &light, &sink, "data.n", ""),
    );
    let fiso = FisoProcess::start(&dir.path()).await;
    // Both consumers joined their groups: every partition has its worker.
    fiso.wait_for_readyz(StatusCode::OK).await;
    // A burning event ends with its budget named in the log.
    let burned = |l: &LogLine| l.raw.contains("celBudget.iterations");
    // The burning events are being evaluated.
    fiso.wait_for_cpu(0.5).await;
    let n = 10;
    for i in 0..n {
        send(&events, &light, 0, &json!({ "n": i }).to_string()).await;
    }
    let delivered = eventually(DEADLINE, || async {
        let light: Vec<_> = sink
            .requests()
            .into_iter()
            .filter(|r| r.path == "/light")
            .collect();
        (light.len() >= n).then_some(light)
    })
    .await;
    let burning_still = fiso.logs().matching(0, burned).is_empty();
    assert!(
        delivered.is_some(),
        "the light flow's {n} records were not delivered\n{}",
        fiso.logs().tail(30)
    );
    assert!(
        burning_still,
        "the burning events were still being evaluated while the light flow delivered\n{}",
        fiso.logs().tail(30)
    );
    let outs: Vec<i64> = delivered.unwrap()[..n]
        .iter()
        .map(|r| r.json()["data"]["out"].as_i64().unwrap())
        .collect();
    assert_eq!(outs, (0..n as i64).collect::<Vec<_>>(), "in offset order");
}
