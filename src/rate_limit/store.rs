//! Where a limiter keeps its state, behind one trait: [`Local`] (governor's
//! keyed GCRA in this process) or, with feature `redis`, a Redis pool shared
//! by every replica (`super::redis`).

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use futures_util::future::BoxFuture;
use governor::{
    Quota, RateLimiter, clock::Clock, middleware::StateInformationMiddleware,
    state::keyed::DashMapStateStore,
};

use super::keys::Key;

/// What a store says of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Let it through; `remaining` more may go at once.
    Allowed { remaining: u32 },
    /// Refuse it; the client may come back after `wait`.
    Limited { wait: Duration },
}

/// A decision taken at once, or one a store must be asked for.
pub(super) enum Check {
    Decided(Decision),
    /// The store's answer, or why it gave none.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Asking(BoxFuture<'static, Result<Decision, String>>),
}

/// One rate-limit state: GCRA with `burst` cells of `per_cell` each.
pub(super) trait Store: Send + Sync + 'static {
    /// Decides for one request of `key`.
    fn check(&self, key: Key) -> Check;

    /// Clients whose state this process holds.
    fn keys(&self) -> usize {
        0
    }
}

/// A monotonic clock on tokio's time, so tests can pause it.
#[derive(Clone, Debug)]
struct TokioClock {
    base: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.base)
    }
}

type Limiter = RateLimiter<Key, DashMapStateStore<Key>, TokioClock, StateInformationMiddleware>;

/// The state in this process: governor's keyed GCRA, its fresh keys
/// dropped beyond `max_keys` (see the module docs for what that bounds).
pub(super) struct Local {
    limiter: Limiter,
    clock: TokioClock,
    max_keys: usize,
    calls: AtomicU64,
}

impl Local {
    pub(super) fn new(burst: u32, per_cell: Duration, max_keys: usize) -> Self {
        let quota = Quota::with_period(per_cell)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"));
        let clock = TokioClock {
            base: tokio::time::Instant::now(),
        };
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            max_keys,
            calls: AtomicU64::new(0),
        }
    }

    /// Drops keys that are back to a fresh state once too many are held.
    fn bound_memory(&self) {
        if self.calls.fetch_add(1, Ordering::Relaxed) % 1024 == 1023
            && self.limiter.len() > self.max_keys
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

impl Store for Local {
    fn check(&self, key: Key) -> Check {
        self.bound_memory();
        Check::Decided(match self.limiter.check_key(&key) {
            Ok(snapshot) => Decision::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                wait: not_until.wait_time_from(self.clock.now()),
            },
        })
    }

    fn keys(&self) -> usize {
        self.limiter.len()
    }
}
