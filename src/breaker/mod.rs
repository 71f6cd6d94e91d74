//! Circuit breaking: one state machine behind both the per-pool breaker (in
//! every pool's acquire path) and [`CircuitBreakerLayer`] (any tower
//! service).
//!
//! closed → open when, over the sliding window, at least `min_calls` calls
//! were made and `failure_rate_percent` of them failed, or after
//! `consecutive_failures` failures in a row; open → half-open after
//! `open_duration`; half-open lets `half_open_probes` acquisitions through:
//! all succeed → closed, one fails → open again.
//!
//! The closed state costs the lease path one atomic load to admit and one
//! counter increment per outcome; the window's two halves are rotated by the
//! pool's background task, so the hot path never reads the clock. A pool
//! whose lease is the call (every SQL and Redis pool) does not even count its
//! successes here: they are its granted leases, which its stats count
//! anyway, and the breaker reads that count when it needs it (on a failure,
//! a rotation, a reset).

mod layer;

pub use self::layer::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerFuture, CircuitBreakerLayer, Classify,
    ServerErrors,
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{config::BreakerConfig, histogram::Histogram};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const FORCED_OPEN: u8 = 3;
const FORCED_CLOSED: u8 = 4;

/// The probe permits left, in the low half of `Breaker::probes`.
const PERMITS: u64 = u32::MAX as u64;

/// The half-open period's number, in the high half of `Breaker::probes`.
fn period(probes: u64) -> u32 {
    (probes >> 32) as u32
}

/// The state of a pool's circuit breaker.
///
/// ```
/// use axum_pools::BreakerState;
/// assert_eq!(serde_json::to_string(&BreakerState::HalfOpen).unwrap(), "\"half_open\"");
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    #[default]
    Closed,
    /// Calls are refused at once until `open_duration` has passed.
    Open,
    /// A few probe calls go through; the rest are refused.
    HalfOpen,
    /// Opened by an operator; stays open until reset.
    ForcedOpen,
    /// Closed by an operator; failures do not open it until reset.
    ForcedClosed,
    /// The breaker is turned off in the config.
    Disabled,
}

/// What the breaker says to one acquisition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as one of the probes of the half-open period numbered here;
    /// report the outcome. An outcome (or a permit given back) that arrives
    /// after that period has ended counts for nothing.
    Probe(u32),
    /// Refused; retry after this long.
    Rejected(Duration),
}

impl Admission {
    /// The half-open period of a probe.
    pub(crate) fn probe(&self) -> Option<u32> {
        match *self {
            Self::Probe(of) => Some(of),
            _ => None,
        }
    }
}

pub(crate) struct Breaker {
    config: BreakerConfig,
    /// What its log lines name: the pool, or `CircuitBreakerLayer`.
    name: String,
    state: AtomicU8,
    /// Time base of `open_until_ns`.
    epoch: Instant,
    open_until_ns: AtomicU64,
    /// `[calls, failures]` of the window's two halves (with `grants`, calls
    /// other than the granted leases: failures).
    halves: [[AtomicU64; 2]; 2],
    /// The pool's granted leases, when they are the successful calls.
    grants: Option<Arc<Histogram>>,
    /// `grants` when each half was last cleared.
    grants_base: [AtomicU64; 2],
    /// `grants` at the last failure: unchanged at the next one means no
    /// success in between.
    grants_at_failure: AtomicU64,
    current: AtomicUsize,
    consecutive: AtomicU32,
    /// The half-open period's number (high 32 bits) and its probe permits
    /// left (low 32 bits), changed together.
    probes: AtomicU64,
    /// Successes of the current half-open period's probes (under
    /// `transition`).
    probe_successes: AtomicU32,
    pub(crate) opened: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// For breakers without a background task: when the window last
    /// rotated (nanoseconds since `epoch`), and calls since it was checked.
    last_rotation_ns: AtomicU64,
    calls_since_check: AtomicU32,
    /// Calls recorded in the current half, for the count-bounded window.
    calls_in_half: AtomicU32,
    /// Serialises state transitions (rare); admission never takes it.
    transition: Mutex<()>,
}

impl Breaker {
    /// A breaker told of every outcome.
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self::counting(config, None)
    }

    /// The breaker of the pool `pool`, as its log lines say.
    pub(crate) fn named(mut self, pool: &str) -> Self {
        self.name = pool.to_owned();
        self
    }

    /// A breaker for a pool whose granted leases (counted by `grants`, the
    /// acquire-wait histogram) are its successful calls: the lease path then
    /// reports only failures and probe outcomes. A count-bounded window
    /// needs every call counted as it happens, so with `window_calls` set
    /// the grants are ignored and successes are reported one by one.
    pub(crate) fn counting(config: BreakerConfig, grants: Option<Arc<Histogram>>) -> Self {
        let grants = grants.filter(|_| config.window_calls == 0);
        Self {
            config,
            name: "CircuitBreakerLayer".to_owned(),
            state: AtomicU8::new(CLOSED),
            epoch: Instant::now(),
            open_until_ns: AtomicU64::new(0),
            halves: Default::default(),
            grants,
            grants_base: Default::default(),
            grants_at_failure: AtomicU64::new(0),
            current: AtomicUsize::new(0),
            consecutive: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            probe_successes: AtomicU32::new(0),
            opened: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_rotation_ns: AtomicU64::new(0),
            calls_since_check: AtomicU32::new(0),
            calls_in_half: AtomicU32::new(0),
            transition: Mutex::new(()),
        }
    }

    /// How often the window's older half is dropped.
    pub(crate) fn rotation_interval(&self) -> Option<Duration> {
        self.config.enabled.then(|| self.config.window / 2)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.transition.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn state(&self) -> BreakerState {
        if !self.config.enabled {
            return BreakerState::Disabled;
        }
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            FORCED_OPEN => BreakerState::ForcedOpen,
            _ => BreakerState::ForcedClosed,
        }
    }

    /// Time left until an open breaker turns half-open.
    pub(crate) fn retry_after(&self) -> Duration {
        let until = self.epoch + Duration::from_nanos(self.open_until_ns.load(Ordering::Acquire));
        until.saturating_duration_since(Instant::now())
    }

    pub(crate) fn admit(&self) -> Admission {
        if !self.config.enabled {
            return Admission::Allowed;
        }
        match self.state.load(Ordering::Acquire) {
            CLOSED | FORCED_CLOSED => Admission::Allowed,
            FORCED_OPEN => self.reject(self.config.open_duration),
            OPEN => {
                let left = self.retry_after();
                if !left.is_zero() {
                    return self.reject(left);
                }
                self.half_open();
                self.admit()
            }
            _ => match self
                .probes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    (v & PERMITS != 0).then(|| v - 1)
                }) {
                Ok(v) => Admission::Probe(period(v)),
                // All probes are out: come back when they have decided.
                Err(_) => self.reject(Duration::from_secs(1)),
            },
        }
    }

    fn reject(&self, retry_after: Duration) -> Admission {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Admission::Rejected(retry_after)
    }

    /// Whether successes of `Allowed` calls need not be reported: they are
    /// the pool's granted leases.
    #[inline]
    pub(crate) fn counts_grants(&self) -> bool {
        self.grants.is_some()
    }

    fn grants_now(&self) -> u64 {
        self.grants.as_ref().map_or(0, |g| g.count())
    }

    /// A call admitted as `admission` succeeded.
    #[inline]
    pub(crate) fn success(&self, admission: &Admission) {
        if self.counts_grants() && *admission == Admission::Allowed {
            return; // counted as a grant
        }
        self.count_success(admission);
    }

    fn count_success(&self, admission: &Admission) {
        if !self.config.enabled {
            return;
        }
        if let Admission::Probe(of) = *admission {
            let _guard = self.lock();
            if self.in_half_open(of) {
                let done = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
                if done >= self.config.half_open_probes {
                    self.reset_counts();
                    self.state.store(CLOSED, Ordering::Release);
                    tracing::info!(pool = %self.name, "circuit breaker closed: probes succeeded");
                }
            }
            return;
        }
        let half = &self.halves[self.current.load(Ordering::Relaxed)];
        half[0].fetch_add(1, Ordering::Relaxed);
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        self.count_call();
    }

    /// The count-bounded window: rotate once a half holds
    /// `window_calls / 2` calls.
    fn count_call(&self) {
        let per_half = self.config.window_calls / 2;
        if per_half > 0 && self.calls_in_half.fetch_add(1, Ordering::Relaxed) + 1 >= per_half {
            self.calls_in_half.store(0, Ordering::Relaxed);
            self.rotate();
        }
    }

    /// A call admitted as `admission` failed.
    pub(crate) fn failure(&self, admission: &Admission) {
        if !self.config.enabled {
            return;
        }
        if let Admission::Probe(of) = *admission {
            let _guard = self.lock();
            if self.in_half_open(of) {
                self.open_locked("a half-open probe failed");
            }
            return;
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            return; // admitted before it opened, or forced closed
        }
        let half = &self.halves[self.current.load(Ordering::Relaxed)];
        half[0].fetch_add(1, Ordering::Relaxed);
        half[1].fetch_add(1, Ordering::Relaxed);
        let consecutive = if self.counts_grants() {
            // A lease granted since the last failure was a success.
            let grants = self.grants_now();
            if self.grants_at_failure.swap(grants, Ordering::Relaxed) == grants {
                self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                self.consecutive.store(1, Ordering::Relaxed);
                1
            }
        } else {
            self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
        };
        let (calls, failures) = self.window_counts();
        let by_run =
            self.config.consecutive_failures > 0 && consecutive >= self.config.consecutive_failures;
        let by_rate = calls >= u64::from(self.config.min_calls)
            && failures * 100 >= u64::from(self.config.failure_rate_percent) * calls;
        if by_run || by_rate {
            let _guard = self.lock();
            if self.state.load(Ordering::Acquire) == CLOSED {
                self.open_locked(if by_run {
                    "consecutive failures"
                } else {
                    "failure rate over the window"
                });
            }
        } else {
            self.count_call();
        }
    }

    /// An admitted call that neither succeeded nor failed (shed, draining):
    /// a probe permit goes back.
    pub(crate) fn neutral(&self, admission: &Admission) {
        // Only into the half-open period it was taken from, and never above
        // its number: a permit of an earlier one is void.
        if let Admission::Probe(of) = *admission {
            let most = u64::from(self.config.half_open_probes);
            let _ = self
                .probes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    (period(v) == of && v & PERMITS < most).then(|| v + 1)
                });
        }
    }

    fn window_counts(&self) -> (u64, u64) {
        let sum = |i: usize| {
            self.halves[0][i].load(Ordering::Relaxed) + self.halves[1][i].load(Ordering::Relaxed)
        };
        let mut calls = sum(0);
        if self.counts_grants() {
            // Grants since the older half started: the smaller base, which
            // stays right while a rotation is half done (a new base stored,
            // `current` not yet switched) without ordering the two.
            let base = self.grants_base[0]
                .load(Ordering::Relaxed)
                .min(self.grants_base[1].load(Ordering::Relaxed));
            calls += self.grants_now().saturating_sub(base);
        }
        (calls, sum(1))
    }

    /// Drops the window's older half (called every `window / 2`).
    pub(crate) fn rotate(&self) {
        let next = 1 - self.current.load(Ordering::Relaxed);
        for counter in &self.halves[next] {
            counter.store(0, Ordering::Relaxed);
        }
        self.grants_base[next].store(self.grants_now(), Ordering::Relaxed);
        self.current.store(next, Ordering::Relaxed);
    }

    /// Rotation for a breaker with no task to drive it: on every failure
    /// and every 64th call, rotate once per half-window that has passed.
    pub(crate) fn maybe_rotate(&self, failed: bool) {
        if !failed && self.calls_since_check.fetch_add(1, Ordering::Relaxed) % 64 != 63 {
            return;
        }
        let Some(half) = self.rotation_interval() else {
            return;
        };
        let now = u64::try_from((Instant::now() - self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_rotation_ns.load(Ordering::Relaxed);
        let half_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        let passed = now.saturating_sub(last) / half_ns;
        if passed > 0
            && self
                .last_rotation_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            for _ in 0..passed.min(2) {
                self.rotate();
            }
        }
    }

    fn reset_counts(&self) {
        for half in &self.halves {
            for counter in half {
                counter.store(0, Ordering::Relaxed);
            }
        }
        let grants = self.grants_now();
        for base in &self.grants_base {
            base.store(grants, Ordering::Relaxed);
        }
        self.grants_at_failure.store(grants, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
    }

    fn open_locked(&self, why: &str) {
        let until = Instant::now() + self.config.open_duration;
        self.open_until_ns.store(
            u64::try_from((until - self.epoch).as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.state.store(OPEN, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.reset_counts();
        tracing::warn!(pool = %self.name, reason = why, open_for = ?self.config.open_duration, "circuit breaker opened");
    }

    fn half_open(&self) {
        let _guard = self.lock();
        if self.state.load(Ordering::Acquire) == OPEN && self.retry_after().is_zero() {
            self.probe_successes.store(0, Ordering::Release);
            let next = period(self.probes.load(Ordering::Acquire)).wrapping_add(1);
            self.probes.store(
                (u64::from(next) << 32) | u64::from(self.config.half_open_probes),
                Ordering::Release,
            );
            self.state.store(HALF_OPEN, Ordering::Release);
            tracing::info!(pool = %self.name, "circuit breaker half-open: probing");
        }
    }

    /// Whether the half-open period numbered `of` is still on (under
    /// `transition`).
    fn in_half_open(&self, of: u32) -> bool {
        self.state.load(Ordering::Acquire) == HALF_OPEN
            && period(self.probes.load(Ordering::Acquire)) == of
    }

    /// Operator control: open until [`reset`](Self::reset).
    pub(crate) fn force_open(&self) {
        let _guard = self.lock();
        self.state.store(FORCED_OPEN, Ordering::Release);
        tracing::warn!(pool = %self.name, "circuit breaker forced open");
    }

    /// Operator control: closed, whatever fails, until [`reset`](Self::reset).
    pub(crate) fn force_closed(&self) {
        let _guard = self.lock();
        self.reset_counts();
        self.state.store(FORCED_CLOSED, Ordering::Release);
        tracing::warn!(pool = %self.name, "circuit breaker forced closed");
    }

    /// Operator control: closed, counts cleared, automatic again.
    pub(crate) fn reset(&self) {
        let _guard = self.lock();
        self.reset_counts();
        self.state.store(CLOSED, Ordering::Release);
        tracing::info!(pool = %self.name, "circuit breaker reset");
    }
}

/// The breaker part of a pool's stats.
///
/// ```
/// let b: axum_pools::BreakerStats = serde_json::from_str(
///     r#"{"state":"closed","opened":0,"rejected":0,"retry_after_ms":0}"#,
/// ).unwrap();
/// assert_eq!(b.state, axum_pools::BreakerState::Closed);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Times it opened.
    pub opened: u64,
    /// Acquisitions refused because it was open (or half-open with every
    /// probe out).
    pub rejected: u64,
    /// While open: milliseconds until half-open.
    pub retry_after_ms: u64,
}

impl Breaker {
    pub(crate) fn stats(&self) -> BreakerStats {
        let state = self.state();
        BreakerStats {
            state,
            opened: self.opened.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            retry_after_ms: if state == BreakerState::Open {
                u64::try_from(self.retry_after().as_millis()).unwrap_or(u64::MAX)
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests;
