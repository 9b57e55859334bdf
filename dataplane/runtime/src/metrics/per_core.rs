//! Metrics whose updates go to the updating core's own counts. prometheus-client's `Histogram`
//! takes one mutex per observation and its `Counter` is one atomic: with every serving core
//! updating them on every request, the mutex and the counts moved between the cores' caches
//! on each one. A scrape adds the cores' counts up.
//!
//! A histogram's `_count` is the sum of its buckets, so it always equals the `+Inf` bucket;
//! `_sum` may miss observations being made while the scrape reads it, as it would a moment
//! later.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::server::PerCore;

/// Words after a core's counts, so that no cache line holds two cores' counts (their
/// allocations may be adjacent).
const PADDING: usize = 64 / std::mem::size_of::<AtomicU64>();

/// A classic histogram sharded per core; cloning shares it.
#[derive(Debug, Clone)]
pub struct PerCoreHistogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, the last one `+Inf`.
    bounds: Box<[f64]>,
    /// Per core: a count per bucket, then the sum's `f64` bits.
    cores: PerCore<Box<[AtomicU64]>>,
}

impl PerCoreHistogram {
    /// Buckets with these upper bounds (non-finite ones dropped), and `+Inf`, as
    /// prometheus-client's `Histogram::new`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain([f64::INFINITY])
            .collect();
        let cores = per_core_counts(bounds.len() + 1);
        PerCoreHistogram(Arc::new(Inner { bounds, cores }))
    }

    pub fn observe(&self, v: f64) {
        let Inner { bounds, cores } = &*self.0;
        let counts = cores.get();
        // The first bucket whose bound is at least `v`; NaN in `+Inf`, as prometheus-client.
        let bucket = if v.is_nan() {
            bounds.len() - 1
        } else {
            bounds.partition_point(|b| *b < v)
        };
        counts[bucket].fetch_add(1, Relaxed);
        let _ = counts[bounds.len()].fetch_update(Relaxed, Relaxed, |sum| {
            Some((f64::from_bits(sum) + v).to_bits())
        });
    }

    /// `(sum, count, [(upper bound, count in the bucket)])` over every core.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let Inner { bounds, cores } = &*self.0;
        let mut buckets: Vec<(f64, u64)> = bounds.iter().map(|b| (*b, 0)).collect();
        let mut sum = 0.0;
        for counts in cores.iter() {
            for (bucket, count) in buckets.iter_mut().zip(counts.iter()) {
                bucket.1 += count.load(Relaxed);
            }
            sum += f64::from_bits(counts[bounds.len()].load(Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (sum, count, buckets)
    }
}

impl TypedMetric for PerCoreHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for PerCoreHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Cores' counts, each padded to cache lines of its own.
fn per_core_counts(words: usize) -> PerCore<Box<[AtomicU64]>> {
    PerCore::new(|| (0..words + PADDING).map(|_| AtomicU64::new(0)).collect())
}

/// A counter sharded per core; cloning shares it.
#[derive(Debug, Clone)]
pub struct PerCoreCounter(Arc<PerCore<Box<[AtomicU64]>>>);

impl Default for PerCoreCounter {
    fn default() -> Self {
        PerCoreCounter(Arc::new(per_core_counts(1)))
    }
}

impl PerCoreCounter {
    pub fn inc(&self) {
        self.0.get()[0].fetch_add(1, Relaxed);
    }

    /// The total over every core.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|c| c[0].load(Relaxed)).sum()
    }
}

impl TypedMetric for PerCoreCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for PerCoreCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_counter::<NoLabelSet, _, u64>(&self.get(), None::<&Exemplar<NoLabelSet, u64>>)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    fn text(metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = Registry::default();
        registry.register("latency", "help", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn encodes_what_prometheus_client_s_histogram_encodes() {
        let bounds = || exponential_buckets(0.001, 2.0, 8).chain([f64::NAN, f64::INFINITY]);
        let (ours, theirs) = (PerCoreHistogram::new(bounds()), Histogram::new(bounds()));
        let values = [
            0.0,
            0.0005,
            0.001,
            0.0011,
            0.004,
            0.1,
            0.128,
            0.129,
            7.5,
            -1.0,
            f64::NAN,
        ];
        for v in values {
            ours.observe(v);
            theirs.observe(v);
        }
        // NaN makes both sums NaN: compare with it, then again without it.
        assert_eq!(text(ours.clone()), text(theirs.clone()));
        let (fresh_ours, fresh_theirs) =
            (PerCoreHistogram::new(bounds()), Histogram::new(bounds()));
        for v in values.iter().filter(|v| !v.is_nan()) {
            fresh_ours.observe(*v);
            fresh_theirs.observe(*v);
        }
        assert_eq!(text(fresh_ours), text(fresh_theirs));
    }

    #[test]
    fn a_counter_encodes_as_prometheus_client_s_and_counts_every_thread() {
        let (ours, theirs) = (PerCoreCounter::default(), Counter::<u64>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (ours, theirs) = (ours.clone(), theirs.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        ours.inc();
                        theirs.inc();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(ours.get(), 4000);
        assert_eq!(text(ours), text(theirs));
    }

    #[test]
    fn observations_of_every_thread_are_counted() {
        let histogram = PerCoreHistogram::new([0.5]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = histogram.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| h.observe(0.25)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let (sum, count, buckets) = histogram.totals();
        assert_eq!((sum, count), (1000.0, 4000));
        assert_eq!(buckets, vec![(0.5, 4000), (f64::INFINITY, 0)]);
    }
}
