//! A Prometheus histogram without a lock on the hot path (issue 17): prometheus-client's
//! `Histogram` takes a write lock per observation (one per finalized vertex, per store batch,
//! per query answer), shared by every shard. This one keeps a row of atomic cells per shard,
//! each written by its own shard thread only (uncontended: no cache line moves between cores),
//! and sums the rows when `/metrics` is scraped. A thread says which row is its own once with
//! [`set_shard_slot`] (the shard loop does at start); any other thread uses the spare row, still
//! correct, only shared.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Rows: one per shard (shards beyond it fold onto the existing rows), plus the spare row.
pub const SHARD_SLOTS: usize = 64;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(SHARD_SLOTS) };
}

/// Makes `shard`'s row this thread's row for every [`ShardedHistogram`].
pub fn set_shard_slot(shard: u16) {
    SLOT.with(|s| s.set(usize::from(shard) % SHARD_SLOTS));
}

/// One row: bucket counts (the last one +Inf), the count and the sum (f64 bits), on its own
/// cache lines.
#[repr(align(128))]
#[derive(Debug)]
struct Row {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

/// A histogram with per-shard rows, merged when scraped.
#[derive(Debug, Clone)]
pub struct ShardedHistogram {
    bounds: Arc<[f64]>,
    rows: Arc<[Row]>,
}

impl ShardedHistogram {
    /// Buckets with these upper bounds (ascending), plus +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds.into_iter().collect();
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds ascending");
        let rows = (0..=SHARD_SLOTS)
            .map(|_| Row { buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), count: AtomicU64::new(0), sum_bits: AtomicU64::new(0f64.to_bits()) })
            .collect();
        ShardedHistogram { bounds, rows }
    }

    /// Records `v` in this thread's row: relaxed atomic adds, no lock.
    pub fn observe(&self, v: f64) {
        let row = &self.rows[SLOT.with(Cell::get)];
        let i = self.bounds.partition_point(|b| *b < v);
        row.buckets[i].fetch_add(1, Ordering::Relaxed);
        row.count.fetch_add(1, Ordering::Relaxed);
        // Lock-free f64 add (uncontended on a shard's own row: one compare-exchange).
        let mut old = row.sum_bits.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match row.sum_bits.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(x) => old = x,
            }
        }
    }

    /// (sum, count, per-bucket counts with their upper bounds) over every row.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().copied().chain(std::iter::once(f64::MAX)).map(|b| (b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for row in self.rows.iter() {
            for (acc, cell) in buckets.iter_mut().zip(row.buckets.iter()) {
                acc.1 += cell.load(Ordering::Relaxed);
            }
            count += row.count.load(Ordering::Relaxed);
            sum += f64::from_bits(row.sum_bits.load(Ordering::Relaxed));
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;

    /// Observations from several shard threads and a stray thread merge to exactly what one
    /// locked prometheus-client histogram records, and encode the same text.
    #[test]
    fn shard_rows_merge_to_the_same_histogram_text() {
        let bounds = || prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 8);
        let sharded = ShardedHistogram::new(bounds());
        let locked = Histogram::new(bounds());
        // Binary fractions: every partial sum is exact, so the merge order cannot change the sum.
        let values: Vec<f64> = (0..4_000).map(|i| f64::from(i % 300) / 1024.0).collect();
        std::thread::scope(|s| {
            for t in 0..4u16 {
                let (sh, lk, vs) = (&sharded, &locked, &values);
                s.spawn(move || {
                    if t < 3 {
                        set_shard_slot(t);
                    }
                    for v in vs.iter().skip(usize::from(t)).step_by(4) {
                        sh.observe(*v);
                        lk.observe(*v);
                    }
                });
            }
        });
        let text = |h: Box<dyn Fn(&mut Registry)>| {
            let mut r = Registry::default();
            h(&mut r);
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, &r).expect("encode");
            s
        };
        let (a, b) = (sharded.clone(), locked.clone());
        let ta = text(Box::new(move |r| r.register("lat", "latency", a.clone())));
        let tb = text(Box::new(move |r| r.register("lat", "latency", b.clone())));
        assert_eq!(sharded.snapshot().1, 4_000);
        assert_eq!(ta, tb);
    }
}
