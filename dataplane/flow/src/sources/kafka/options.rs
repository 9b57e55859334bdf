//! How a process runs its Kafka sources beyond what the flow files say.

use std::time::Duration;

/// How this process runs Kafka sources. The defaults are production's (`fiso flow`,
/// `fiso run`); [`KafkaSourceOptions::dev`] is `fiso dev`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceOptions {
    /// librdkafka properties set before each flow's own `consumerProperties`, which win.
    pub consumer_defaults: Vec<(String, String)>,
    /// How often a consumer without its partitions says what it is waiting for (and, with
    /// `log_lag`, how often a changed lag is logged).
    pub status_interval: Duration,
    /// Log the consumer lag when it changed.
    pub log_lag: bool,
}

impl Default for KafkaSourceOptions {
    fn default() -> Self {
        KafkaSourceOptions {
            consumer_defaults: Vec::new(),
            status_interval: Duration::from_secs(30),
            log_lag: false,
        }
    }
}

impl KafkaSourceOptions {
    /// For `fiso dev`, where one developer starts, edits, stops and restarts the data plane
    /// against a local broker:
    /// - `session.timeout.ms` 6 s (the brokers' default minimum) and heartbeats every 1.5 s: a
    ///   classic-protocol join is held until the group settles, which some brokers (tansu) let
    ///   take about half the session timeout: 3 s instead of librdkafka's 45 s / 2;
    /// - `max.poll.interval.ms` 10 s: also the group's rebalance timeout, how long a join waits
    ///   for members that have not rejoined (a `fiso dev` killed without leaving), instead of
    ///   5 minutes;
    /// - `topic.metadata.refresh.interval.ms` 1 s: a topic created after the start (the first
    ///   `fiso produce`) is found within a second instead of 5 minutes;
    /// - `reconnect.backoff.max.ms` 2 s: a broker started after `fiso dev` is found quickly.
    ///
    /// Each can still be set in a flow's `consumerProperties`.
    pub fn dev() -> Self {
        let set = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        KafkaSourceOptions {
            consumer_defaults: vec![
                set("session.timeout.ms", "6000"),
                set("heartbeat.interval.ms", "1500"),
                set("max.poll.interval.ms", "10000"),
                set("topic.metadata.refresh.interval.ms", "1000"),
                set("reconnect.backoff.max.ms", "2000"),
            ],
            status_interval: Duration::from_secs(5),
            log_lag: true,
        }
    }
}
