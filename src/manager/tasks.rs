//! Each pool's background task (periodic health checks, reaping, breaker
//! window rotation, leak scans) and what the stats add to a pool's health.

use std::{sync::Arc, time::Duration};

use tokio::{task::AbortHandle, time::Instant};

use crate::{
    config::PoolConfig,
    health::{HealthStatus, PoolHealth},
    pool::ErasedPool,
};

/// Adds what the stats tell to a pool's health: utilization, whether it is
/// required, and `warn` when a passing pool is saturated (every connection
/// busy, or requests waiting).
pub(super) fn annotate(pool: &Arc<dyn ErasedPool>, mut health: PoolHealth) -> PoolHealth {
    let s = pool.snapshot();
    let used = s.size.saturating_sub(s.idle);
    health.utilization_percent = Some((used as f64 * 1000.0 / s.max_size as f64).round() / 10.0);
    health.required = pool.shared().config.required;
    if health.status == HealthStatus::Pass && (s.waiting > 0 || used >= s.max_size) {
        health.status = HealthStatus::Warn;
        health.saturated = true;
        health.error = Some(format!(
            "saturated: {used} of {} connections in use, {} waiting",
            s.max_size, s.waiting
        ));
    }
    health
}

/// Waits for `interval`'s next tick, or forever when there is none.
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How often the reaper looks: a quarter of the shortest of `idle_timeout`
/// and `max_lifetime`, between 250 ms and 30 s.
fn maintenance_interval(config: &PoolConfig) -> Duration {
    [config.idle_timeout, config.max_lifetime]
        .into_iter()
        .flatten()
        .min()
        .map_or(Duration::from_secs(30), |d| d / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// One task per pool: periodic health checks and maintenance. It holds the
/// pool weakly and ends when the pool is gone or the manager drains.
pub(super) fn spawn_maintenance(pool: &Arc<dyn ErasedPool>) -> AbortHandle {
    let weak = Arc::downgrade(pool);
    let config = &pool.shared().config;
    let health_every = config.health_check_interval;
    let maintain_every = maintenance_interval(config);
    let rotate_every = pool.shared().breaker.rotation_interval();
    let leak_threshold = config.leak_threshold;
    // Leaks are looked for four times per threshold (at least every 10 ms).
    let leak_every = leak_threshold.map(|t| (t / 4).max(Duration::from_millis(10)));
    // The schedule starts now, not when the task is first polled.
    let start = Instant::now();
    tokio::spawn(async move {
        let mut health = health_every.map(|p| {
            let mut i = tokio::time::interval_at(start + p, p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut maintain = tokio::time::interval_at(start + maintain_every, maintain_every);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rotate = rotate_every.map(|p| tokio::time::interval_at(start + p, p));
        let mut leaks = leak_every.map(|p| tokio::time::interval_at(start + p, p));
        loop {
            enum Job {
                Check,
                Maintain,
                Rotate,
                Leaks,
            }
            let job = tokio::select! {
                () = tick(health.as_mut()) => Job::Check,
                _ = maintain.tick() => Job::Maintain,
                () = tick(rotate.as_mut()) => Job::Rotate,
                () = tick(leaks.as_mut()) => Job::Leaks,
            };
            let Some(pool) = weak.upgrade() else { break };
            if pool.shared().is_draining() {
                break;
            }
            match job {
                Job::Check => {
                    pool.check_health().await;
                }
                Job::Maintain => pool.maintain().await,
                Job::Rotate => pool.shared().breaker.rotate(),
                Job::Leaks => {
                    let shared = pool.shared();
                    if let Some(threshold) = leak_threshold {
                        shared.leaks.scan(&shared.name, threshold);
                    }
                }
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_interval_bounds() {
        let c = PoolConfig::default();
        assert_eq!(maintenance_interval(&c), Duration::from_secs(30));
        let c = c
            .idle_timeout(Some(Duration::from_secs(2)))
            .max_lifetime(None);
        assert_eq!(maintenance_interval(&c), Duration::from_millis(500));
        let c = c.idle_timeout(Some(Duration::from_millis(100)));
        assert_eq!(maintenance_interval(&c), Duration::from_millis(250));
    }
}
