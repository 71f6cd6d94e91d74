//! [`RoundTrip`]: the `query_timeout` watch over one connection, made by the
//! pool when it opens the connection and handed to the backend, which
//! enforces it where it can (a socket that fails when the server stays
//! silent, a driver's response timeout). When it fires, the connection is
//! discarded at its next return and the request that used it learns which
//! pool timed out.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::Shared;
use crate::stats::inc;

/// The `query_timeout` of one connection, and whether it fired.
///
/// Public only because [`Backend::connect`](super::Backend::connect) names
/// it; it sits in a private module.
pub struct RoundTrip {
    limit: Duration,
    fired: AtomicBool,
    /// The pool it counts in; `None` in unit tests.
    #[allow(dead_code)] // read by `fire`: built without a backend that fires, unread
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for RoundTrip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundTrip")
            .field("limit", &self.limit)
            .field("fired", &self.fired())
            .finish_non_exhaustive()
    }
}

impl RoundTrip {
    pub(super) fn new(limit: Duration, shared: Arc<Shared>) -> Self {
        Self {
            limit,
            fired: AtomicBool::new(false),
            shared: Some(shared),
        }
    }

    /// A watch that counts nowhere, for unit tests of the backends.
    #[cfg(test)]
    #[allow(dead_code)] // for the backends' unit tests, where they are built
    pub(crate) fn detached(limit: Duration) -> Self {
        Self {
            limit,
            fired: AtomicBool::new(false),
            shared: None,
        }
    }

    /// The pool's `query_timeout`.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Records that a round trip got no answer within the limit: counted
    /// and logged once per connection, which is discarded at its return.
    /// Called by the backends that can bound a round trip (Postgres,
    /// Redis); built with neither, nothing calls it.
    #[allow(dead_code)]
    pub(crate) fn fire(&self) {
        if !self.fired.swap(true, Ordering::Relaxed)
            && let Some(shared) = &self.shared
        {
            inc(&shared.stats.query_timeouts);
            tracing::warn!(
                pool = %shared.name,
                query_timeout = %humantime::format_duration(self.limit),
                "query timed out: no answer within query_timeout; the connection is discarded"
            );
        }
    }

    /// Whether [`fire`](Self::fire) was called.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}
