//! Leak detection (HikariCP's `leakDetectionThreshold`): with
//! `leak_threshold` set, each lease is noted with its route when taken; the
//! pool's background task warns about every lease held longer than the
//! threshold (pool, route, how long), once, and the lease's return logs a
//! second event. Without a threshold nothing is noted.

use std::{
    collections::HashMap,
    num::NonZeroU64,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

struct Held {
    since: Instant,
    route: Option<Arc<str>>,
    warned: bool,
}

#[derive(Default)]
pub(crate) struct Leaks {
    next: AtomicU64,
    held: Mutex<HashMap<NonZeroU64, Held>>,
    pub(crate) detected: AtomicU64,
}

impl Leaks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NonZeroU64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a lease taken at `since`; returns its ticket.
    pub(crate) fn taken(&self, since: Instant, route: Option<Arc<str>>) -> NonZeroU64 {
        let id = NonZeroU64::MIN.saturating_add(self.next.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(
            id,
            Held {
                since,
                route,
                warned: false,
            },
        );
        id
    }

    /// The lease with `ticket` came back.
    pub(crate) fn returned(&self, pool: &str, ticket: NonZeroU64) {
        if let Some(held) = self.lock().remove(&ticket)
            && held.warned
        {
            tracing::info!(
                pool,
                route = held.route.as_deref().unwrap_or("-"),
                held_for = ?super::clock::now().saturating_duration_since(held.since),
                "a lease reported as a possible leak was returned"
            );
        }
    }

    /// Warns once about each lease held longer than `threshold`.
    pub(crate) fn scan(&self, pool: &str, threshold: Duration) {
        let now = super::clock::now();
        for held in self.lock().values_mut() {
            let held_for = now.saturating_duration_since(held.since);
            if !held.warned && held_for >= threshold {
                held.warned = true;
                self.detected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    pool,
                    route = held.route.as_deref().unwrap_or("-"),
                    held_for = ?held_for,
                    threshold = ?threshold,
                    "possible connection leak: a lease is held longer than leak_threshold"
                );
            }
        }
    }
}
