//! `fiso produce` / `fiso consume` against the real Kafka-protocol broker of `cargo xtask infra`
//! (`FISO_E2E_KAFKA_BROKERS`): three JSON Lines with a key and headers go in, and come back out
//! of `consume --format json` with their keys, headers, values, partitions and offsets.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use fiso_e2e::fiso_bin;
use fiso_e2e::kafka::{brokers, unique};
use serde_json::{json, Value};

fn fiso(args: &[&str]) -> Output {
    let out = Command::new(fiso_bin())
        .args(args)
        .env_remove("FISO_KAFKA_BROKERS")
        .output()
        .expect("running fiso");
    assert!(
        out.status.success(),
        "fiso {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn produce_then_consume_round_trip() {
    let brokers = brokers();
    let topic = unique("fiso-e2e-cli");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.jsonl");
    std::fs::write(
        &file,
        "{\"order_id\":\"1\",\"amount\":10}\n{\"order_id\":\"2\",\"amount\":20.5}\n\n{\"order_id\":\"3\",\"items\":[1,2]}\n",
    )
    .unwrap();

    let produced = fiso(&[
        "produce",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--file",
        file.to_str().unwrap(),
        "--key",
        "customer-7",
        "--header",
        "source=e2e",
        "--header",
        "trace=a=b",
    ]);
    let stdout = String::from_utf8_lossy(&produced.stdout);
    assert!(stdout.contains("sent 3 message(s)"), "{stdout}");

    let consumed = fiso(&[
        "consume",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--from-beginning",
        "--max-messages",
        "3",
        "--format",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&consumed.stdout);
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(records.len(), 3, "{stdout}");

    // One key → one partition, offsets 0, 1, 2 in produce order.
    let partition = records[0]["partition"].as_i64().expect("partition");
    assert!(partition >= 0);
    let expected_values = [
        json!({"order_id":"1","amount":10}),
        json!({"order_id":"2","amount":20.5}),
        json!({"order_id":"3","items":[1,2]}),
    ];
    for (i, (record, value)) in records.iter().zip(&expected_values).enumerate() {
        assert_eq!(record["topic"], json!(topic));
        assert_eq!(record["partition"].as_i64(), Some(partition), "{record}");
        assert_eq!(record["offset"].as_i64(), Some(i as i64), "{record}");
        assert_eq!(record["key"], json!("customer-7"));
        let headers: BTreeMap<String, Value> =
            serde_json::from_value(record["headers"].clone()).unwrap();
        assert_eq!(
            headers,
            BTreeMap::from([
                ("source".to_string(), json!("e2e")),
                ("trace".to_string(), json!("a=b")),
            ])
        );
        assert_eq!(&record["value"], value);
    }

    // With --exit-at-end it stops at the end of the topic.
    let again = fiso(&[
        "consume",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).lines().count(), 3);
}

/// `consume` waits for records, on a topic that does not exist yet too, like kcat -C; and
/// `produce --raw` sends values that are not JSON (a poison record) as they are.
#[test]
fn consume_waits_for_records_and_produce_sends_raw_values() {
    let brokers = brokers();
    let topic = unique("fiso-e2e-wait");
    let consumer = Command::new(fiso_bin())
        .args([
            "consume",
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--from-beginning",
            "--max-messages",
            "2",
            "--format",
            "json",
        ])
        .env_remove("FISO_KAFKA_BROKERS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running fiso consume");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("poison.txt");
    std::fs::write(&file, "not json {\n\n{\"ok\":true}\n").unwrap();
    let produced = fiso(&[
        "produce",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--file",
        file.to_str().unwrap(),
        "--raw",
        "--key",
        "one-partition",
    ]);
    assert!(String::from_utf8_lossy(&produced.stdout).contains("sent 2 message(s)"));
    // Only the two records end it: it waited for the topic and for them.
    let out = consumer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone())
        .collect();
    assert_eq!(values, vec![json!("not json {"), json!({"ok": true})]);

    // --timeout ends the wait once nothing arrived for that long (here after the two records,
    // short of --max-messages).
    let idle = fiso(&[
        "consume",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--from-beginning",
        "--max-messages",
        "5",
        "--timeout",
        "1s",
        "--format",
        "json",
    ]);
    assert_eq!(String::from_utf8_lossy(&idle.stdout).lines().count(), 2);

    // Without JSON, and without --raw, produce says how to send it.
    let refused = Command::new(fiso_bin())
        .args([
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--raw"));
}

#[test]
fn produce_to_an_unreachable_broker_fails_clearly() {
    let out = Command::new(fiso_bin())
        .args([
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "nowhere",
            "--json",
            "{\"a\":1}",
        ])
        .output()
        .expect("running fiso");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not delivered"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
