//! Where a consumer stands with its group, for `/readyz` and the log: the partitions it has
//! and, until it has them, what it is waiting for (the brokers, the topic, the group's join).
//!
//! A consumer serves once the group assigned it its share of the topic's partitions. That
//! share may be none: a group with more members than the topic has partitions leaves some
//! idle, and an idle member is healthy (a Deployment with more replicas than partitions must
//! still roll out). An empty assignment counts only while the topic exists, though: librdkafka
//! joins the group with nothing to assign for a topic not created yet. A revocation that
//! leaves the consumer nothing (an eager rebalance, the group lost) makes it wait again until
//! the next assignment.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use fiso_runtime::kafka::error_text::broker_hint;
use rdkafka::statistics::Statistics;

/// A consumer's standing in its group, shared by its librdkafka callbacks and its loop.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) group: String,
    pub(super) topic: String,
    /// `bootstrap.servers`, for the hint when they cannot be reached.
    pub(super) bootstrap: String,
    standing: Mutex<Standing>,
}

#[derive(Debug, Default)]
struct Standing {
    /// The partitions assigned now; `None` before the first assignment and after a revocation
    /// that left none, until the next assignment.
    assigned: Option<BTreeSet<i32>>,
    /// The topic did not exist at the last empty assignment or consumer error about it.
    topic_missing: bool,
    /// No broker could be reached, with librdkafka's last word on why; cleared once a broker
    /// connection is up.
    unreachable: Option<String>,
    /// librdkafka's last word on a failed broker connection.
    last_failure: Option<String>,
    /// From the last statistics: the group handler's state (`up` once the coordinator is
    /// known) and join state.
    coordinator: Option<String>,
    join_state: Option<String>,
}

/// What a consumer without its partitions is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Waiting {
    /// No broker answers (with librdkafka's reason, when it gave one).
    Unreachable(Option<String>),
    /// The topic does not exist yet.
    NoTopic,
    /// The group's coordinator is not known yet.
    Coordinator,
    /// The join is under way (librdkafka's join state, when known).
    Joining(Option<String>),
}

impl Membership {
    pub(super) fn new(group: String, topic: String, bootstrap: String) -> Self {
        Membership {
            group,
            topic,
            bootstrap,
            standing: Mutex::new(Standing::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Standing> {
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group assigned `partitions` (an increment under a cooperative protocol, the whole
    /// share under an eager one). `topic_exists` matters only when they are none.
    pub(super) fn assigned(&self, partitions: &[i32], topic_exists: bool) {
        let mut s = self.lock();
        s.assigned
            .get_or_insert_with(BTreeSet::new)
            .extend(partitions);
        s.topic_missing = partitions.is_empty() && !topic_exists;
        // Only a connected consumer is assigned anything.
        s.unreachable = None;
    }

    /// The group took `partitions` away.
    pub(super) fn revoked(&self, partitions: &[i32]) {
        let mut s = self.lock();
        if let Some(assigned) = &mut s.assigned {
            for p in partitions {
                assigned.remove(p);
            }
            if assigned.is_empty() {
                s.assigned = None;
            }
        }
    }

    /// The partitions assigned now.
    #[cfg(test)]
    pub(super) fn partitions(&self) -> Vec<i32> {
        self.lock().assigned.iter().flatten().copied().collect()
    }

    /// Whether the consumer is a settled member of its group (with partitions or without),
    /// not in the middle of a join.
    pub(super) fn joined(&self) -> bool {
        self.lock().assigned.is_some()
    }

    /// Whether no broker could be reached since one was last up.
    pub(super) fn is_unreachable(&self) -> bool {
        self.lock().unreachable.is_some()
    }

    /// Whether the consumer serves: it has its share of the partitions of an existing topic.
    pub(super) fn serving(&self) -> bool {
        let s = self.lock();
        match &s.assigned {
            Some(p) => !p.is_empty() || !s.topic_missing,
            None => false,
        }
    }

    /// No broker could be reached. `true` when this starts an outage (the first report since
    /// a broker was last up), which is worth a warning; later reports repeat it.
    pub(super) fn unreachable(&self) -> bool {
        let mut s = self.lock();
        let new = s.unreachable.is_none();
        s.unreachable = Some(s.last_failure.clone().unwrap_or_default());
        new
    }

    /// librdkafka's words for a failed broker connection (its `FAIL` log line).
    pub(super) fn connection_failed(&self, why: &str) {
        self.lock().last_failure = Some(why.to_owned());
    }

    /// The topic does not exist. `true` when that is news.
    pub(super) fn topic_missing(&self) -> bool {
        let mut s = self.lock();
        !std::mem::replace(&mut s.topic_missing, true)
    }

    /// Takes in librdkafka's statistics. `true` when they show a broker connection up again
    /// after an outage (the consumer reconnected).
    pub(super) fn statistics(&self, stats: &Statistics) -> bool {
        let up = stats.brokers.values().any(|b| {
            // Bootstrap and learned brokers, not the internal or logical (coordinator) ones.
            matches!(b.source.as_str(), "configured" | "learned") && b.state == "UP"
        });
        let mut s = self.lock();
        if let Some(cgrp) = &stats.cgrp {
            s.coordinator = Some(cgrp.state.clone());
            s.join_state = Some(cgrp.join_state.clone());
        }
        if up {
            s.last_failure = None;
            return s.unreachable.take().is_some();
        }
        false
    }

    /// What the consumer waits for, most fundamental first.
    pub(super) fn waiting(&self) -> Waiting {
        let s = self.lock();
        if let Some(why) = &s.unreachable {
            return Waiting::Unreachable(Some(why.clone()).filter(|w| !w.is_empty()));
        }
        if s.topic_missing {
            return Waiting::NoTopic;
        }
        match s.coordinator.as_deref() {
            Some("up") | None => Waiting::Joining(s.join_state.clone()),
            Some(_) => Waiting::Coordinator,
        }
    }

    /// `/readyz`'s reason while the consumer is not serving.
    pub(super) fn reason(&self) -> String {
        format!(
            "waiting for partition assignment (group {}, topic {}): {}",
            self.group,
            self.topic,
            self.describe(&self.waiting())
        )
    }

    /// `waiting` in words.
    pub(super) fn describe(&self, waiting: &Waiting) -> String {
        match waiting {
            Waiting::Unreachable(why) => format!(
                "cannot reach the broker{}; {}",
                why.as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default(),
                broker_hint(&self.bootstrap)
            ),
            Waiting::NoTopic => format!("topic {} does not exist yet", self.topic),
            Waiting::Coordinator => "looking for the group's coordinator".to_owned(),
            Waiting::Joining(_) => "joining the group".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership {
        Membership::new("g".into(), "orders".into(), "localhost:9092".into())
    }

    #[test]
    fn serves_with_partitions_or_with_none_of_an_existing_topic() {
        let m = membership();
        assert!(!m.serving());
        assert_eq!(
            m.reason(),
            "waiting for partition assignment (group g, topic orders): joining the group"
        );
        m.assigned(&[0, 1], true);
        assert!(m.serving());
        assert_eq!(m.partitions(), [0, 1]);
        // An eager rebalance: everything revoked, then reassigned.
        m.revoked(&[0, 1]);
        assert!(!m.serving());
        m.assigned(&[1], true);
        assert!(m.serving());
        // A cooperative one: a partition moves away, one stays.
        m.assigned(&[2], true);
        m.revoked(&[1]);
        assert_eq!(m.partitions(), [2]);
        assert!(m.serving());

        // More members than partitions: an idle member serves.
        let idle = membership();
        idle.assigned(&[], true);
        assert!(idle.serving());
        // No partitions because there is no topic: it waits for the topic.
        let early = membership();
        early.assigned(&[], false);
        assert!(!early.serving());
        assert_eq!(early.waiting(), Waiting::NoTopic);
        assert!(early.reason().ends_with("topic orders does not exist yet"));
        early.assigned(&[0], true);
        assert!(early.serving());
    }

    #[test]
    fn an_outage_is_news_once_and_says_how_to_fix_it() {
        let m = membership();
        m.connection_failed("localhost:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed");
        assert!(m.unreachable());
        assert!(!m.unreachable(), "the same outage");
        assert_eq!(
            m.reason(),
            "waiting for partition assignment (group g, topic orders): cannot reach the broker \
             (localhost:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed); is the broker \
             at localhost:9092 running? `fiso doctor` checks"
        );
        // A broker up again ends it: the next failure is news again.
        let mut up = Statistics::default();
        up.brokers.insert(
            "localhost:9092/1".into(),
            rdkafka::statistics::Broker {
                source: "learned".into(),
                state: "UP".into(),
                ..Default::default()
            },
        );
        up.cgrp = Some(rdkafka::statistics::ConsumerGroup {
            state: "up".into(),
            join_state: "wait-join".into(),
            ..Default::default()
        });
        assert!(m.statistics(&up));
        assert!(!m.statistics(&up));
        assert_eq!(m.waiting(), Waiting::Joining(Some("wait-join".into())));
        assert!(m.topic_missing());
        assert!(!m.topic_missing(), "not news twice");
        assert_eq!(m.waiting(), Waiting::NoTopic);
        assert!(m.unreachable());
        assert_eq!(m.waiting(), Waiting::Unreachable(None));
    }
}
