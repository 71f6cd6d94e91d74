//! What a limiter says in the log without flooding it: a setup mistake
//! once, and a shared store that does not answer at most once per
//! [`INTERVAL`], with the count of failures since the last line.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::FailPolicy;

/// The least time between two reports of a store that does not answer.
pub(super) const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Reports {
    /// The missing peer address was reported.
    no_peer: AtomicBool,
    /// Store failures since the last report.
    unreported: AtomicU64,
    /// When the store's failures were last reported.
    last: Mutex<Option<Instant>>,
}

impl Reports {
    /// A key by peer address found none: every client shares one bucket.
    /// Said once per limiter.
    pub(super) fn no_peer(&self, limiter: &str) {
        if !self.no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limiter,
                "RateLimitLayer keys by peer address but the request has none \
                 (ConnectInfo<SocketAddr>), so every client shares one bucket: serve the app with \
                 `into_make_service_with_connect_info::<SocketAddr>()`, or key by something else \
                 (KeyBy::Header, KeyBy::Global)"
            );
        }
    }

    /// The shared store did not answer: reported now if the last report
    /// is [`INTERVAL`] old (or there was none), else counted for the next.
    pub(super) fn store_failed(&self, limiter: &str, policy: FailPolicy, error: &str) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < INTERVAL) {
            self.unreported.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let before = self.unreported.swap(0, Ordering::Relaxed);
        drop(last);
        if before == 0 {
            tracing::warn!(
                limiter, %error, ?policy,
                "the rate limiter's store did not answer; further failures are counted and reported every {}s",
                INTERVAL.as_secs()
            );
        } else {
            tracing::warn!(
                limiter, %error, ?policy, failures = before + 1,
                "the rate limiter's store still does not answer: {} failures since the last report",
                before + 1
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn store_failures_are_reported_once_per_interval_with_a_count() {
        let reports = Reports::default();
        reports.store_failed("api", FailPolicy::Open, "down");
        for _ in 0..5 {
            reports.store_failed("api", FailPolicy::Open, "down");
        }
        assert_eq!(reports.unreported.load(Ordering::Relaxed), 5);
        tokio::time::advance(INTERVAL).await;
        // Reported, with the 5 before it: the count starts again.
        reports.store_failed("api", FailPolicy::Open, "down");
        assert_eq!(reports.unreported.load(Ordering::Relaxed), 0);
        reports.store_failed("api", FailPolicy::Open, "down");
        assert_eq!(reports.unreported.load(Ordering::Relaxed), 1);
    }
}
