//! The pool's life outside the lease path: warm-up, health checks, reaping
//! and topping up, stats snapshots, close.

use std::{sync::atomic::Ordering, time::SystemTime};

use deadpool::managed::{Object, PoolError as DpError};
use futures_util::future::join_all;
use tokio::time::Instant;

use super::{Backend, NO_WAIT, Pool, clock};
use crate::{
    breaker::BreakerState,
    error::BackendError,
    health::{HealthStatus, PoolHealth},
    stats::{StatsSnapshot, inc},
};

impl<B: Backend> Pool<B> {
    /// Opens `max(min_size, 1)` connections at once: proves the backend is
    /// reachable and leaves them idle.
    pub(crate) async fn warm_up(&self) -> Result<(), BackendError> {
        let n = self.shared.config.min_size.max(1);
        let got = join_all((0..n).map(|_| self.dp.get())).await;
        for result in got {
            if let Err(e) = result {
                return Err(match e {
                    DpError::Backend(e) => e,
                    other => BackendError::new(other.to_string()),
                });
            }
        }
        Ok(())
    }

    /// A real round trip, bounded by `validation_timeout`; the result is
    /// cached and returned.
    pub(crate) async fn check_health(&self) -> PoolHealth {
        let shared = &*self.shared;
        inc(&shared.stats.health_checks);
        let start = Instant::now();
        let deadline = start + shared.config.validation_timeout;
        let limit = humantime::format_duration(shared.config.validation_timeout);
        let outcome = if shared.is_draining() {
            Err((HealthStatus::Fail, "pool is draining".to_owned(), false))
        } else {
            match tokio::time::timeout_at(deadline, self.clean_checkout()).await {
                Err(_) => {
                    let status = self.dp.status();
                    if status.size >= status.max_size && status.available == 0 {
                        Err((
                            HealthStatus::Warn,
                            format!("pool saturated: no connection free within {limit}"),
                            false,
                        ))
                    } else {
                        Err((
                            HealthStatus::Fail,
                            format!("no connection within {limit}"),
                            false,
                        ))
                    }
                }
                Ok(Err(e)) => Err((HealthStatus::Fail, self.map_error(e).to_string(), true)),
                Ok(Ok(mut obj)) => {
                    obj.in_doubt = true;
                    match tokio::time::timeout_at(
                        deadline,
                        self.backend().health_check(&mut obj.conn),
                    )
                    .await
                    {
                        Ok(Ok(())) => {
                            let info = self.backend().server_info(&mut obj.conn);
                            if let Ok(Some(info)) = tokio::time::timeout_at(deadline, info).await {
                                *shared.server.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(info);
                            }
                            obj.since = clock::now();
                            obj.in_doubt = false;
                            Ok(())
                        }
                        failed => {
                            inc(&shared.stats.backend_errors);
                            drop(Object::take(obj));
                            match failed {
                                Ok(Err(msg)) => {
                                    Err((HealthStatus::Fail, shared.redactor.scrub(&msg), true))
                                }
                                _ => Err((
                                    HealthStatus::Fail,
                                    format!("ping timed out after {limit}"),
                                    false,
                                )),
                            }
                        }
                    }
                }
            }
        };
        let latency = Instant::now() - start;
        let (mut status, mut error, from_driver) = match outcome {
            Ok(()) => (HealthStatus::Pass, None, false),
            Err((status, error, from_driver)) => (status, Some(error), from_driver),
        };
        match shared.breaker.state() {
            BreakerState::Open | BreakerState::ForcedOpen => {
                status = HealthStatus::Fail;
                error.get_or_insert_with(|| "circuit breaker open".to_owned());
            }
            BreakerState::HalfOpen if status == HealthStatus::Pass => {
                status = HealthStatus::Warn;
                error = Some("circuit breaker half-open: probing".to_owned());
            }
            _ => {}
        }
        let health = PoolHealth {
            pool: shared.name.clone(),
            backend: shared.kind.to_owned(),
            status,
            latency_ms: Some((latency.as_secs_f64() * 1e6).round() / 1e3),
            checked_at: Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
            error,
            utilization_percent: None,
            required: shared.config.required,
            saturated: false,
            topology: self.backend().topology(),
            component_type: shared.component_type,
            from_driver,
        };
        shared.store_health(health.clone());
        health
    }

    /// Closes expired and (above `min_size`) long-idle connections, then
    /// opens connections up to `min_size`. Connections in use are untouched.
    pub(crate) async fn maintain(&self) {
        let shared = &*self.shared;
        let config = &shared.config;
        let now = clock::now();
        let mut removable_idle = self.dp.status().size.saturating_sub(config.min_size);
        let removed = self
            .dp
            .retain(|conn, _| {
                if conn.expired(now) {
                    return false;
                }
                match config.idle_timeout {
                    Some(idle) if removable_idle > 0 && now.duration_since(conn.since) >= idle => {
                        removable_idle -= 1;
                        false
                    }
                    _ => true,
                }
            })
            .removed;
        if !removed.is_empty() {
            tracing::debug!(pool = %shared.name, closed = removed.len(), "reaped idle or expired connections");
        }
        drop(removed);
        let mut held = Vec::new();
        while !shared.is_draining() && self.dp.status().size < config.min_size {
            match self.dp.timeout_get(&NO_WAIT).await {
                Ok(obj) => held.push(obj),
                Err(_) => break,
            }
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let shared = &*self.shared;
        let s = &shared.stats;
        let status = self.dp.status();
        let returned = s.use_time.count();
        let wait = s.acquire_wait.snapshot();
        #[allow(clippy::needless_update)]
        let mut snapshot = StatsSnapshot {
            pool: shared.name.clone(),
            backend: shared.kind.to_owned(),
            max_size: shared.config.max_size,
            min_size: shared.config.min_size,
            size: status.size,
            active: wait.count.saturating_sub(returned),
            idle: status.available,
            waiting: s.waiting.load(Ordering::Relaxed),
            leases: wait.count,
            timeouts: s.timeouts.load(Ordering::Relaxed),
            shed: s.shed.load(Ordering::Relaxed),
            rejected_draining: s.rejected_draining.load(Ordering::Relaxed),
            backend_errors: s.backend_errors.load(Ordering::Relaxed),
            created: s.created.load(Ordering::Relaxed),
            closed: s.closed.load(Ordering::Relaxed),
            validations: s.validations.load(Ordering::Relaxed),
            broken: s.broken.load(Ordering::Relaxed),
            health_checks: s.health_checks.load(Ordering::Relaxed),
            tx_committed: s.tx_committed.load(Ordering::Relaxed),
            tx_rolled_back: s.tx_rolled_back.load(Ordering::Relaxed),
            tx_abandoned: s.tx_abandoned.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
            leaks: shared.leaks.detected.load(Ordering::Relaxed),
            query_timeouts: s.query_timeouts.load(Ordering::Relaxed),
            breaker: shared.breaker.stats(),
            server: shared
                .server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            acquire_wait: wait,
            // Fields a backend fills in (`fill_stats`), present with its
            // feature only: the core names none of them.
            ..StatsSnapshot::default()
        };
        self.backend().fill_stats(&mut snapshot);
        snapshot
    }

    /// Closes the pool: waiters are refused and every idle connection is
    /// closed now, every leased one when it returns.
    pub(crate) fn close(&self) {
        self.dp.close();
        // deadpool's close shrinks the pool by the slots it can take: an
        // idle connection whose slot was just handed to a waiter (which
        // then gives it back to the closed semaphore, not to a slot) would
        // stay open. Closing whatever is idle closes it too.
        drop(self.dp.retain(|_, _| false));
    }
}
