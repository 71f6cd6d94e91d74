//! The live per-attempt counters of an HTTP pool, snapshot as
//! [`HttpStats`] beside the pool's own stats (the shape lives with
//! [`StatsSnapshot`](crate::StatsSnapshot), in every build).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::histogram::Histogram;
pub use crate::stats::HttpStats;

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
