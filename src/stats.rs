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

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
pub use crate::histogram::WaitStats;

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
    pub(crate) query_timeouts: AtomicU64,
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
            query_timeouts: AtomicU64::new(0),
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// back on a spawned task before the connection was reused, or, for a
    /// MySQL/MariaDB transaction dropped with its request, ended by
    /// discarding the connection.
    pub tx_abandoned: u64,
    /// Connections put back in their initial state before reuse because the
    /// last user left state behind (Redis: an open `MULTI`, a `WATCH`,
    /// another database `SELECT`ed).
    pub resets: u64,
    /// Leases reported as possible leaks (held longer than `leak_threshold`).
    pub leaks: u64,
    /// Round trips that got no answer within `query_timeout`; each cost its
    /// connection. (A statement the server cancelled itself at its own
    /// statement timeout left its connection alive and is not counted.)
    #[serde(default)]
    pub query_timeouts: u64,
    /// What the server told at the last passing health check (Redis:
    /// `redis_version`, `connected_clients`); absent for backends that tell
    /// nothing. Never contains credentials. The pools router shows it whole
    /// only with full health details ([`HealthDetails`](crate::HealthDetails)
    /// `Always` or a passing `when`); otherwise only its `tls` fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<std::collections::BTreeMap<String, String>>,
    /// The pool's circuit breaker.
    pub breaker: crate::breaker::BreakerStats,
    /// Changes of master seen by a Redis pool behind Sentinel (feature
    /// `redis`); absent for other pools. In every build, so the stats and
    /// their OpenAPI document have one shape whatever the features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failovers: Option<u64>,
    /// Requests through an HTTP pool (feature `http`); absent for other
    /// pools. In every build, as `failovers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStats>,
    /// How long successful acquisitions waited.
    pub acquire_wait: WaitStats,
}

impl StatsSnapshot {
    /// The snapshot as the pools router shows it without full health
    /// details: of the server's facts only `tls` (whether and how the
    /// connections are encrypted), not versions, addresses or topology.
    pub(crate) fn summary(mut self) -> Self {
        self.server = self
            .server
            .take()
            .map(|facts| facts.into_iter().filter(|(k, _)| k == "tls").collect())
            .filter(|facts: &std::collections::BTreeMap<String, String>| !facts.is_empty());
        self
    }
}

/// Requests through an HTTP pool: one per attempt, so a retried request
/// counts each try.
///
/// ```
/// let s = axum_pools::HttpStats::default();
/// assert_eq!(s.requests, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpStats {
    /// Attempts: each try and retry that got a connection, or whose
    /// connection could not be opened.
    pub requests: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub status_classes: [u64; 5],
    /// Attempts that got no response (connect refused, reset, timed out).
    pub errors: u64,
    /// Attempts that timed out (also counted in `errors`).
    pub timeouts: u64,
    /// Attempts that were retries (counted when made, not when planned: a
    /// caller that gives up during the backoff adds none).
    pub retries: u64,
    /// Time to response headers of attempts that got a response.
    pub latency: WaitStats,
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

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
