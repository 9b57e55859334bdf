//! Values whose destruction blocks, destroyed off the async workers.
//!
//! A librdkafka client's drop purges, flushes for up to 500 ms and joins its threads. Run on an
//! async worker, that stalls every task scheduled there; a hot reload retires the replaced
//! pipeline's producers when its last record in flight lets go of them, on whichever worker
//! that record ran, while the consumer keeps draining on the same workers.

/// Owns a `T` and, when dropped inside a Tokio runtime, drops the `T` on the runtime's blocking
/// pool instead of the current thread (outside a runtime, where nothing else waits on the
/// thread, it drops in place).
pub struct BlockingDrop<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> BlockingDrop<T> {
    pub fn new(value: T) -> Self {
        BlockingDrop(Some(value))
    }
}

impl<T: Send + 'static> std::ops::Deref for BlockingDrop<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("the value is only taken by drop")
    }
}

impl<T: Send + 'static> Drop for BlockingDrop<T> {
    fn drop(&mut self) {
        let Some(value) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // A runtime already shutting down drops the closure, and with it the value.
                runtime.spawn_blocking(move || drop(value));
            }
            Err(_) => drop(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread::ThreadId;

    use super::BlockingDrop;

    /// Reports the thread it is dropped on.
    struct Reporter(mpsc::Sender<ThreadId>);

    impl Drop for Reporter {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn inside_a_runtime_the_value_is_dropped_on_another_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (tx, rx) = mpsc::channel();
        let worker = runtime.block_on(async move {
            drop(BlockingDrop::new(Reporter(tx)));
            std::thread::current().id()
        });
        let dropped_on = rx.recv().expect("the value was dropped");
        assert_ne!(dropped_on, worker);
    }

    #[test]
    fn outside_a_runtime_the_value_is_dropped_in_place() {
        let (tx, rx) = mpsc::channel();
        drop(BlockingDrop::new(Reporter(tx)));
        assert_eq!(
            rx.try_recv().expect("dropped at once"),
            std::thread::current().id()
        );
    }

    #[test]
    fn the_value_is_reachable_until_then() {
        let kept = BlockingDrop::new(vec![1, 2, 3]);
        assert_eq!(kept.len(), 3);
    }
}
