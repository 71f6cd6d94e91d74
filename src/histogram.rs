//! A fixed-size, lock-free histogram of durations: log-linear buckets (8
//! per power of two, at most 12.5 % relative error), so its memory does not
//! grow with the number of values recorded.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two (2^3 = 8).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Largest recorded value: 2^38 ns ≈ 275 s; larger values land in the last bucket.
const MAX_EXP: u32 = 38;
const BUCKETS: usize = (MAX_EXP as usize - SUB_BITS as usize + 1) * SUB;

/// A fixed-size, lock-free histogram of durations (nanoseconds).
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: Box::new([const { AtomicU64::new(0) }; BUCKETS]),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    fn index(ns: u64) -> usize {
        let ns = ns.min((1 << MAX_EXP) - 1);
        if ns < SUB as u64 {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // >= SUB_BITS
        let sub = (ns >> (exp - SUB_BITS)) as usize & (SUB - 1);
        (exp - SUB_BITS + 1) as usize * SUB + sub
    }

    /// Highest value that falls into bucket `i`.
    fn upper_bound(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let exp = (i / SUB) as u32 + SUB_BITS - 1;
        let sub = (i % SUB) as u64;
        let width = 1u64 << (exp - SUB_BITS);
        ((SUB as u64 + sub) << (exp - SUB_BITS)) + width - 1
    }

    /// Records one value: one bucket increment, a sum, and a max that is only
    /// written when it grows.
    #[inline]
    pub(crate) fn record(&self, d: Duration) {
        if d.is_zero() {
            // The common case on the lease path: nothing to add to sum or max.
            self.buckets[0].fetch_add(1, Ordering::Release);
            return;
        }
        self.record_nonzero(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    fn record_nonzero(&self, ns: u64) {
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Release);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Number of recorded values.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Acquire)).sum()
    }

    pub(crate) fn snapshot(&self) -> WaitStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Acquire))
            .collect();
        let count: u64 = counts.iter().sum();
        let max = self.max_ns.load(Ordering::Relaxed);
        let us = |ns: u64| ns as f64 / 1_000.0;
        let quantile = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return us(Self::upper_bound(i).min(max));
                }
            }
            us(max)
        };
        WaitStats {
            count,
            mean_us: if count == 0 {
                0.0
            } else {
                us(self.sum_ns.load(Ordering::Relaxed)) / count as f64
            },
            p50_us: quantile(0.50),
            p95_us: quantile(0.95),
            p99_us: quantile(0.99),
            max_us: us(max),
        }
    }

    /// Per-bucket counts (not cumulative) for the upper bounds `le`
    /// (seconds, ascending), the sum in seconds and the count: a
    /// Prometheus histogram. A value lands in the first bound at or above
    /// its bucket's upper edge (≤ 12.5 % above the value); those above the
    /// last bound only in the count (`+Inf`).
    pub(crate) fn prometheus(&self, le: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
        let mut out: Vec<(f64, u64)> = le.iter().map(|&b| (b, 0)).collect();
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.load(Ordering::Acquire);
            if n == 0 {
                continue;
            }
            count += n;
            let upper = Self::upper_bound(i) as f64 / 1e9;
            if let Some(slot) = out.iter_mut().find(|(b, _)| upper <= *b) {
                slot.1 += n;
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, out)
    }

    /// Bytes this histogram occupies; constant by construction.
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.buckets)
    }
}

/// Summary of the acquire-wait histogram: how long successful acquisitions
/// waited, in microseconds. Percentiles are bucket upper bounds (at most
/// 12.5 % above the true value, never above `max_us`); `mean_us` and
/// `max_us` are exact.
///
/// ```
/// let w = axum_pools::WaitStats::default();
/// assert_eq!(w.count, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitStats {
    /// Successful acquisitions recorded.
    pub count: u64,
    /// Mean wait.
    pub mean_us: f64,
    /// Median wait.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Longest wait.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for ns in (0..5000u64).chain([1 << 20, 1 << 30, u64::MAX]) {
            let i = Histogram::index(ns);
            assert!(i >= last || ns > 5000, "index must not decrease");
            assert!(i < BUCKETS);
            assert!(Histogram::upper_bound(i) >= ns.min((1 << MAX_EXP) - 1));
            if ns < 5000 {
                last = i;
            }
        }
        // Relative error of the upper bound is at most 1/8.
        for ns in [9u64, 100, 1_000, 123_456, 9_999_999] {
            let ub = Histogram::upper_bound(Histogram::index(ns));
            assert!((ub - ns) as f64 <= ns as f64 / 8.0, "{ns} -> {ub}");
        }
    }

    #[test]
    fn percentiles_and_bounded_memory_after_5000_records() {
        let h = Histogram::new();
        let before = h.memory_bytes();
        for i in 1..=5000u64 {
            h.record(Duration::from_micros(i));
        }
        assert_eq!(h.memory_bytes(), before);
        let s = h.snapshot();
        assert_eq!(s.count, 5000);
        assert!((s.mean_us - 2500.5).abs() < 1e-6, "{}", s.mean_us);
        assert_eq!(s.max_us, 5000.0);
        for (got, want) in [(s.p50_us, 2500.0), (s.p95_us, 4750.0), (s.p99_us, 4950.0)] {
            assert!(got >= want && got <= want * 1.125, "{got} vs {want}");
        }
    }
}
