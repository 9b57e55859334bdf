//! New UUIDv7s (event ids, correlation ids) from a generator per thread. `Uuid::now_v7` takes
//! one process-wide mutex per id, for its counter, and the serving cores took it twice per event.
//! A thread's ids keep the counter's order (RFC 9562 §6.2, method 1, per generator); ids made
//! on different threads in one millisecond differ in their random bits.

use uuid::timestamp::context::ContextV7;
use uuid::{Timestamp, Uuid};

thread_local! {
    static CONTEXT: ContextV7 = const { ContextV7::new() };
}

/// A new UUIDv7, in its hyphenated lower-case form.
pub fn new_uuid_v7() -> String {
    let id = CONTEXT.with(|context| Uuid::new_v7(Timestamp::now(context)));
    id.hyphenated()
        .encode_lower(&mut Uuid::encode_buffer())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_thread_are_v7_and_increase() {
        let ids: Vec<String> = (0..1000).map(|_| new_uuid_v7()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        let parsed = Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.hyphenated().to_string(), ids[0]);
    }

    #[test]
    fn threads_make_distinct_ids() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| new_uuid_v7()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
