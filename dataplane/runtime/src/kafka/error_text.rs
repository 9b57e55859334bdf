//! librdkafka errors as one line a person reads, and how to fix the ones a person can.
//!
//! `KafkaError`'s own text names the error code twice, as a Rust name and as librdkafka's
//! description (`Meta data fetch error: BrokerTransportFailure (Local: Broker transport
//! failure)`), and `source()` gives the code again, so a chain printed it a third time. Every
//! place that shows a Kafka error (the CLI's `produce` / `consume`, a flow's logs, a sink's
//! delivery error, the Link's answer) formats it here: what was being done, then librdkafka's
//! description, once.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// `err` in one line: `fetching metadata: Broker transport failure`,
/// `consuming: the broker answered Unknown topic or partition`.
pub fn describe(err: &KafkaError) -> String {
    if let KafkaError::Transaction(e) = err {
        // Its own text says more than the code's description.
        return format!("transaction: {}", e.string());
    }
    let Some(code) = err.rdkafka_error_code() else {
        return match err {
            KafkaError::Subscription(why) => format!("subscribing: {why}"),
            other => other.to_string(),
        };
    };
    let why = code_text(code);
    match doing(err) {
        Some(what) => format!("{what}: {why}"),
        None => why,
    }
}

/// [`describe`], followed by [`broker_hint`] when the error says the brokers at `bootstrap`
/// could not be reached.
pub fn describe_at(err: &KafkaError, bootstrap: &str) -> String {
    match err.rdkafka_error_code() {
        Some(code) if unreachable(code) => format!("{}; {}", describe(err), broker_hint(bootstrap)),
        _ => describe(err),
    }
}

/// librdkafka's log line about a failed broker connection (facility `FAIL`) without its thread
/// tag and its count of repeats: `127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed:
/// Connection refused (after 0ms in state CONNECT)`.
pub fn connection_failure(log_message: &str) -> String {
    let text = match log_message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(log_message, |(_, text)| text),
        None => log_message,
    };
    match text.strip_suffix(" identical error(s) suppressed)") {
        Some(head) => match head.rsplit_once(", ") {
            Some((kept, count)) if count.chars().all(|c| c.is_ascii_digit()) => {
                format!("{kept})")
            }
            _ => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

/// What a person can do about brokers that do not answer.
pub fn broker_hint(bootstrap: &str) -> String {
    format!("is the broker at {bootstrap} running? `fiso doctor` checks")
}

/// Whether `code` says the brokers could not be reached (or did not answer in time, which is
/// mostly the same thing seen from a client).
pub fn unreachable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::OperationTimedOut
    )
}

/// librdkafka's description of `code` (`Local: Broker transport failure`), without the
/// `Local: ` that marks a client-side error; a broker's answer says so.
pub fn code_text(code: RDKafkaErrorCode) -> String {
    // `RDKafkaErrorCode`'s text is `{name:?} ({description})`.
    let full = code.to_string();
    let name = format!("{code:?} (");
    let description = full
        .strip_prefix(&name)
        .and_then(|d| d.strip_suffix(')'))
        .unwrap_or(&full);
    if let Some(local) = description.strip_prefix("Local: ") {
        local.to_owned()
    } else if let Some(answer) = description.strip_prefix("Broker: ") {
        format!("the broker answered {answer}")
    } else {
        description.to_owned()
    }
}

/// What the client was doing when `err` happened, for the errors that carry only a code.
fn doing(err: &KafkaError) -> Option<&'static str> {
    Some(match err {
        KafkaError::AdminOp(_) => "admin request",
        KafkaError::ConsumerCommit(_) => "committing offsets",
        KafkaError::ConsumerQueueClose(_) => "closing the consumer",
        KafkaError::Flush(_) => "flushing the producer",
        KafkaError::GroupListFetch(_) => "listing consumer groups",
        KafkaError::MessageConsumption(_) => "consuming",
        KafkaError::MessageConsumptionFatal(_) => "consuming (fatal)",
        KafkaError::MessageProduction(_) => "producing",
        KafkaError::MetadataFetch(_) => "fetching metadata",
        KafkaError::OffsetFetch(_) => "fetching offsets",
        KafkaError::PauseResume(_) => "pausing or resuming partitions",
        KafkaError::Rebalance(_) => "rebalancing",
        KafkaError::Seek(_) => "seeking",
        KafkaError::SetPartitionOffset(_) => "setting a partition offset",
        KafkaError::StoreOffset(_) => "storing an offset",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_said_once_in_words() {
        let e = KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(describe(&e), "fetching metadata: Broker transport failure");
        let e = KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert_eq!(
            describe(&e),
            "consuming: the broker answered Unknown topic or partition"
        );
        assert_eq!(
            describe(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)),
            "All broker connections are down"
        );
        let e = KafkaError::Subscription("no topics".into());
        assert_eq!(describe(&e), "subscribing: no topics");
        // Nothing of the Rust spelling of the code, nothing twice.
        for e in [
            KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
        ] {
            let text = describe(&e);
            assert!(!text.contains("BrokerTransportFailure"), "{text}");
            assert!(!text.contains("MessageTimedOut"), "{text}");
            assert!(!text.contains("AllBrokersDown"), "{text}");
            assert!(!text.contains("Local:"), "{text}");
        }
    }

    #[test]
    fn connection_failures_lose_the_thread_tag_and_the_repeat_count() {
        assert_eq!(
            connection_failure(
                "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to \
                 ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT, 1 \
                 identical error(s) suppressed)"
            ),
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused \
             (after 0ms in state CONNECT)"
        );
        let plain = "b:9092/1: Disconnected (after 5ms in state UP)";
        assert_eq!(connection_failure(plain), plain);
    }

    #[test]
    fn unreachable_brokers_get_the_fix() {
        let e = KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(
            describe_at(&e, "localhost:9092"),
            "fetching metadata: Broker transport failure; is the broker at localhost:9092 \
             running? `fiso doctor` checks"
        );
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(describe_at(&e, "localhost:9092"), describe(&e));
    }
}
