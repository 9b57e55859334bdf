use super::*;

fn settings(source_yaml: &str, defaults: &[(&str, &str)]) -> ClientConfig {
    let src: KafkaSourceConfig = serde_yaml_ng::from_str(source_yaml).unwrap();
    let options = KafkaSourceOptions {
        consumer_defaults: defaults
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..KafkaSourceOptions::default()
    };
    let mut config = ClientConfig::new();
    consumer_settings(&mut config, &src, &options, "the-group");
    config
}

#[test]
fn fisos_fetch_and_queue_settings_win_over_the_defaults() {
    let config = settings(
        "cluster: main\ntopic: orders\nmaxInFlightPerPartition: 500\n",
        &[("fetch.wait.max.ms", "500"), ("client.rack", "eu-1a")],
    );
    assert_eq!(config.get("fetch.wait.max.ms"), Some(FETCH_WAIT_MAX_MS));
    assert_eq!(
        config.get("fetch.queue.backoff.ms"),
        Some(FETCH_QUEUE_BACKOFF_MS)
    );
    // Four records queued per delivery in flight, at least QUEUED_MIN_MESSAGES.
    assert_eq!(config.get("queued.min.messages"), Some("2000"));
    assert_eq!(
        config.get("queued.max.messages.kbytes"),
        Some(QUEUED_MAX_KBYTES.to_string().as_str())
    );
    assert_eq!(config.get("client.rack"), Some("eu-1a"));
    assert_eq!(config.get("group.id"), Some("the-group"));
    assert_eq!(config.get("auto.offset.reset"), Some("latest"));
    assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
}

#[test]
fn the_flows_consumer_properties_win_except_auto_commit() {
    let config = settings(
        "cluster: main\ntopic: orders\nstartOffset: earliest\nconsumerProperties:\n  \
         fetch.wait.max.ms: \"100\"\n  queued.min.messages: \"50\"\n  \
         enable.auto.commit: \"true\"\n",
        &[],
    );
    assert_eq!(config.get("fetch.wait.max.ms"), Some("100"));
    assert_eq!(config.get("queued.min.messages"), Some("50"));
    assert_eq!(config.get("enable.auto.commit"), Some("false"));
    assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
}
