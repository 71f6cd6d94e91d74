//! [`Lease`]: the guard a handler holds; its `Drop` returns the connection.

use std::{
    fmt,
    num::NonZeroU64,
    ops::{Deref, DerefMut},
};

use deadpool::managed::Object;

use super::{Backend, Shared, managed::Managed};

tokio::task_local! {
    /// Set while a request that did not finish is being dropped.
    static CANCELLING: ();
}

/// Runs `f` (which drops a request's future) as the cancellation of that
/// request: the leases it drops of a backend that is not
/// [cancel-safe](Backend::CANCEL_SAFE) are discarded, since a round trip
/// may have been cut in the middle.
pub(crate) fn while_cancelling(f: impl FnOnce()) {
    CANCELLING.sync_scope((), f);
}

/// Whether the request being dropped is a cancellation (see
/// [`while_cancelling`]).
pub(crate) fn cancelling() -> bool {
    CANCELLING.try_with(|_| ()).is_ok()
}

/// A leased connection. Dropping it — at the end of a handler, on a panic,
/// or when the request future is cancelled — returns the connection and
/// records the return.
pub(crate) struct Lease<B: Backend> {
    /// The connection; its `since` is when the lease was taken.
    obj: Object<Managed<B>>,
    /// Granted as a probe of this half-open period of the breaker.
    probe: Option<u32>,
    /// The leak watch's ticket, when `leak_threshold` is set.
    ticket: Option<NonZeroU64>,
}

impl<B: Backend> Lease<B> {
    pub(super) fn new(
        obj: Object<Managed<B>>,
        probe: Option<u32>,
        ticket: Option<NonZeroU64>,
    ) -> Self {
        Self { obj, probe, ticket }
    }

    /// How the breaker admitted this lease, for backends that report
    /// outcomes themselves.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn admission(&self) -> crate::breaker::Admission {
        match self.probe {
            Some(of) => crate::breaker::Admission::Probe(of),
            None => crate::breaker::Admission::Allowed,
        }
    }

    pub(crate) fn pool_name(&self) -> &str {
        &self.obj.shared.name
    }

    /// The pool's shared state (an `Arc`, to keep after the lease has gone
    /// back).
    pub(crate) fn shared(&self) -> &std::sync::Arc<Shared> {
        &self.obj.shared
    }

    /// Tells the request's [`PoolLayer`](crate::PoolLayer) scope, as the
    /// lease returns, which pool it came from (its error log lines name it)
    /// and whether a round trip timed out (the layer then answers 504 if
    /// the handler failed).
    pub(crate) fn note_return(&self) {
        crate::layer::note_return(&self.obj.shared, self.timed_out());
    }

    /// The pool's `query_timeout`, when a round trip on this connection
    /// exceeded it.
    pub(crate) fn timed_out(&self) -> Option<std::time::Duration> {
        let round_trip = self.obj.round_trip.as_ref()?;
        round_trip.fired().then(|| round_trip.limit())
    }
}

impl<B: Backend> Deref for Lease<B> {
    type Target = B::Connection;
    fn deref(&self) -> &B::Connection {
        &self.obj.conn
    }
}

impl<B: Backend> DerefMut for Lease<B> {
    fn deref_mut(&mut self) -> &mut B::Connection {
        &mut self.obj.conn
    }
}

impl<B: Backend> Drop for Lease<B> {
    fn drop(&mut self) {
        let now = super::clock::now();
        let held = now.saturating_duration_since(self.obj.since);
        self.obj.since = now;
        let shared = &self.obj.shared;
        shared.stats.use_time.record(held);
        if let Some(hook) = &shared.after_release {
            hook(&super::hooks::Released {
                pool: &shared.name,
                held,
            });
        }
        if let Some(ticket) = self.ticket {
            shared.leaks.returned(&shared.name, ticket);
        }
        if shared.is_draining() {
            shared.lease_returned.notify_waiters();
        }
        if !B::CANCEL_SAFE && cancelling() {
            // The next checkout discards it, and counts it as broken.
            self.obj.in_doubt = true;
        }
        // `obj` drops next and goes back to the pool.
    }
}

impl<B: Backend> fmt::Debug for Lease<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("pool", &self.pool_name())
            .finish_non_exhaustive()
    }
}
