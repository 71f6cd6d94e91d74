//! Lock-free pool statistics: counters and a fixed-size wait histogram.
//!
//! Every counter is an atomic written on the lease path with no lock, so the
//! numbers are exact under any concurrency; a [`StatsSnapshot`] reads them
//! without stopping writers. The acquire-wait histogram has a fixed number of
//! buckets (log-linear, 8 per power of two, ≤ 12.5 % relative error), so its
//! memory does not grow with the number of leases.
//!
//! ```no_run
//! # async fn demo(manager: axum_pools::PoolManager) {
//! for s in manager.stats() {
//!     println!("{}: {} leased, p99 wait {:.0} µs", s.pool, s.active, s.acquire_wait.p99_us);
//! }
//! # }
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
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

/// The live counters of one pool. Written with atomics on the lease path.
pub(crate) struct PoolStats {
    /// Its count is the leases granted (the breaker reads it too).
    pub(crate) acquire_wait: Arc<Histogram>,
    /// How long leases were held; its count is the leases returned.
    pub(crate) use_time: Histogram,
    /// How long opening a connection took.
    pub(crate) create_time: Histogram,
    pub(crate) waiting: AtomicUsize,
    pub(crate) timeouts: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) rejected_draining: AtomicU64,
    pub(crate) backend_errors: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) validations: AtomicU64,
    pub(crate) broken: AtomicU64,
    pub(crate) health_checks: AtomicU64,
    pub(crate) tx_committed: AtomicU64,
    pub(crate) tx_rolled_back: AtomicU64,
    pub(crate) tx_abandoned: AtomicU64,
    pub(crate) resets: AtomicU64,
}

impl PoolStats {
    pub(crate) fn new() -> Self {
        Self {
            acquire_wait: Arc::new(Histogram::new()),
            use_time: Histogram::new(),
            create_time: Histogram::new(),
            waiting: AtomicUsize::new(0),
            timeouts: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            rejected_draining: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            created: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            tx_committed: AtomicU64::new(0),
            tx_rolled_back: AtomicU64::new(0),
            tx_abandoned: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    /// Leases handed out and not yet returned.
    pub(crate) fn active(&self) -> u64 {
        // Returns first: every returned lease was recorded as granted before
        // (release/acquire), so the difference never goes negative.
        let returned = self.use_time.count();
        self.acquire_wait.count().saturating_sub(returned)
    }
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time copy of one pool's statistics (`GET /pools/stats`).
///
/// Counters (`leases`, `timeouts`, ...) count since the pool was built.
/// Gauges (`size`, `active`, `idle`, `waiting`) are the state now.
///
/// ```no_run
/// # async fn demo(manager: axum_pools::PoolManager) {
/// let s = manager.stats_of("primary").expect("registered");
/// assert!(s.active as usize <= s.max_size);
/// println!("{}", serde_json::to_string_pretty(&s).unwrap());
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    /// Pool name.
    pub pool: String,
    /// Backend kind: `postgres`, `mysql`, `sqlite`.
    pub backend: String,
    /// Configured `max_size`.
    pub max_size: usize,
    /// Configured `min_size`.
    pub min_size: usize,
    /// Connections open now (idle and in use).
    pub size: usize,
    /// Leases held by handlers now.
    pub active: u64,
    /// Open connections not in use now.
    pub idle: usize,
    /// Requests waiting for a connection now.
    pub waiting: usize,
    /// Leases granted (successful acquisitions).
    pub leases: u64,
    /// Acquisitions that found no connection within `acquire_timeout`
    /// (pool exhausted).
    pub timeouts: u64,
    /// Acquisitions refused at once because `max_waiting` requests already
    /// waited (load shedding).
    pub shed: u64,
    /// Acquisitions refused because the pool was draining or closed.
    pub rejected_draining: u64,
    /// Failures to open or use a connection (connect refused, failed ping).
    pub backend_errors: u64,
    /// Connections opened.
    pub created: u64,
    /// Connections closed (retired, broken, reaped, or at shutdown).
    pub closed: u64,
    /// Pings sent before handing out a connection idle longer than
    /// `alive_bypass_window`.
    pub validations: u64,
    /// Connections found broken at checkout and discarded.
    pub broken: u64,
    /// Health checks run (periodic, on demand, and the one at build).
    pub health_checks: u64,
    /// [`DbTx`](crate::DbTx) transactions committed.
    pub tx_committed: u64,
    /// [`DbTx`](crate::DbTx) transactions rolled back (by status, by the
    /// handler, after a failed commit, or abandoned).
    pub tx_rolled_back: u64,
    /// Transactions whose `DbTx` was dropped before its request ended them
    /// (a panic, a cancelled request, a `DbTx` outliving its request): rolled
    /// back on a spawned task before the connection was reused.
    pub tx_abandoned: u64,
    /// Connections put back in their initial state before reuse because the
    /// last user left state behind (Redis: an open `MULTI`, a `WATCH`,
    /// another database `SELECT`ed).
    pub resets: u64,
    /// Leases reported as possible leaks (held longer than `leak_threshold`).
    pub leaks: u64,
    /// What the server told at the last passing health check (Redis:
    /// `redis_version`, `connected_clients`); absent for backends that tell
    /// nothing. Never contains credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<std::collections::BTreeMap<String, String>>,
    /// The pool's circuit breaker.
    pub breaker: crate::pool::breaker::BreakerStats,
    /// Requests through an HTTP pool (feature `http`); absent for other pools.
    #[cfg(feature = "http")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::backend::http::HttpStats>,
    /// How long successful acquisitions waited.
    pub acquire_wait: WaitStats,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    #[test]
    fn exact_under_concurrency_10_threads_x_100() {
        let stats = Arc::new(PoolStats::new());
        let threads: Vec<_> = (0..10)
            .map(|t| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        stats.acquire_wait.record(Duration::from_nanos(t * 100 + i));
                        inc(&stats.timeouts);
                        stats.use_time.record(Duration::from_micros(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(stats.acquire_wait.count(), 1000);
        assert_eq!(stats.timeouts.load(Ordering::Relaxed), 1000);
        assert_eq!(stats.active(), 0);
        let s = stats.acquire_wait.snapshot();
        assert_eq!(s.max_us, 0.999);
        assert!((s.mean_us - 0.4995).abs() < 1e-9);
    }
}
