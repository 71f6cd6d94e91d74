//! [`HttpStats`]: per-attempt counters of an HTTP pool, shown beside the
//! pool's own stats.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, WaitStats};

/// Requests through an HTTP pool: one per attempt, so a retried request
/// counts each try.
///
/// ```
/// let s = axum_pools::HttpStats::default();
/// assert_eq!(s.requests, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpStats {
    /// Attempts sent.
    pub requests: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub status_classes: [u64; 5],
    /// Attempts that got no response (connect refused, reset, timed out).
    pub errors: u64,
    /// Attempts that timed out (also counted in `errors`).
    pub timeouts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Time to response headers of attempts that got a response.
    pub latency: WaitStats,
}

/// The live counters behind [`HttpStats`].
#[derive(Default)]
pub(crate) struct HttpCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) status_classes: [AtomicU64; 5],
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) latency: HistogramCell,
}

/// A [`Histogram`] that can live in a `Default` struct.
pub(crate) struct HistogramCell(pub(crate) Histogram);

impl Default for HistogramCell {
    fn default() -> Self {
        Self(Histogram::new())
    }
}

impl HttpCounters {
    pub(crate) fn snapshot(&self) -> HttpStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpStats {
            requests: load(&self.requests),
            status_classes: std::array::from_fn(|i| load(&self.status_classes[i])),
            errors: load(&self.errors),
            timeouts: load(&self.timeouts),
            retries: load(&self.retries),
            latency: self.latency.0.snapshot(),
        }
    }
}
