//! [`ErasedPool`]: a pool with its backend type erased, as the manager
//! holds it, and what the manager does with every pool alike (drain, cached
//! health).

use std::{
    any::Any,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{Backend, Pool, Shared};
use crate::{error::PoolError, health::PoolHealth, stats::StatsSnapshot};

/// A pool with its backend type erased, as the manager holds it.
pub(crate) trait ErasedPool: Send + Sync + 'static {
    fn shared(&self) -> &Arc<Shared>;
    fn snapshot(&self) -> StatsSnapshot;
    fn check_health(&self) -> BoxFuture<'_, PoolHealth>;
    fn maintain(&self) -> BoxFuture<'_, ()>;
    fn close(&self);
    fn as_any(&self) -> &dyn Any;
}

impl<B: Backend> ErasedPool for Pool<B> {
    fn shared(&self) -> &Arc<Shared> {
        Pool::shared(self)
    }
    fn snapshot(&self) -> StatsSnapshot {
        Pool::snapshot(self)
    }
    fn check_health(&self) -> BoxFuture<'_, PoolHealth> {
        Box::pin(Pool::check_health(self))
    }
    fn maintain(&self) -> BoxFuture<'_, ()> {
        Box::pin(Pool::maintain(self))
    }
    fn close(&self) {
        Pool::close(self);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Shared {
    /// `work`, unless draining starts first: then `work` is dropped (a
    /// wait for a slot, a connect that hangs) and the drain's refusal is
    /// the answer.
    pub(super) async fn unless_draining<T>(
        &self,
        work: impl Future<Output = Result<T, PoolError>>,
    ) -> Result<T, PoolError> {
        // Created before the check: it sees a drain that begins in between.
        let drain_started = self.drain_started.notified();
        if self.is_draining() {
            return Err(self.refuse_draining());
        }
        tokio::select! {
            biased;
            () = drain_started => Err(self.refuse_draining()),
            got = work => got,
        }
    }
}

impl dyn ErasedPool {
    /// Starts draining: new acquisitions and current waiters are refused.
    pub(crate) fn begin_drain(&self) {
        let shared = self.shared();
        shared.draining.store(true, Ordering::Release);
        shared.drain_started.notify_waiters();
    }

    /// Waits until every lease is back or `deadline` passes; returns how
    /// many are still out.
    pub(crate) async fn wait_returned(&self, deadline: Instant) -> u64 {
        let shared = self.shared();
        loop {
            let returned = shared.lease_returned.notified();
            let active = shared.stats.active();
            if active == 0 {
                return 0;
            }
            if Instant::now() >= deadline {
                return active;
            }
            // Re-check at least every 50 ms: a lease returned just as draining
            // began may have missed the flag and not notified.
            let recheck = deadline.min(Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(recheck, returned).await;
        }
    }

    /// The cached health, refreshed on demand (at most once a second) when
    /// periodic checks are off.
    pub(crate) async fn health(&self) -> PoolHealth {
        let shared = self.shared();
        if shared.is_draining() {
            // No I/O: reports "draining" at once.
            return self.check_health().await;
        }
        let (cached, at) = shared.cached_health();
        if shared.config.health_check_interval.is_some() {
            return cached;
        }
        if at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return cached;
        }
        match shared.checking.try_lock() {
            Ok(_guard) => self.check_health().await,
            Err(_) => cached,
        }
    }
}
