//! Our deadpool `Manager`: opens connections under `acquire_timeout`, counts
//! them, and on recycle does only the cheap local checks (broken, or left in
//! doubt by a round trip cut short). Undoing a user's state, the ping past
//! the bypass window and lifetime retirement happen in
//! [`Pool::acquire`](super::Pool::acquire), which already holds the current
//! time.

use std::{
    hash::{BuildHasher, RandomState},
    ops::{Deref, DerefMut},
    sync::Arc,
    time::Duration,
};

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use tokio::time::Instant;

use super::{Backend, Shared};
use crate::{error::BackendError, stats::inc};

pub(crate) struct Managed<B: Backend> {
    pub(super) backend: B,
    shared: Arc<Shared>,
    pub(super) hooks: super::hooks::Hooks<B::Connection>,
}

impl<B: Backend> Managed<B> {
    pub(super) fn new(
        backend: B,
        shared: Arc<Shared>,
        hooks: super::hooks::Hooks<B::Connection>,
    ) -> Self {
        Self {
            backend,
            shared,
            hooks,
        }
    }
}

/// A pooled connection with what the pool needs to know about it.
///
/// The connection itself is boxed: deadpool moves its slot by value several
/// times per checkout and return, and a slot this small is moved in
/// registers, where a driver connection inline (88 bytes for SQLite, 424 for
/// Postgres) made each move a `memcpy` call.
pub(crate) struct Conn<C> {
    pub(crate) conn: Box<C>,
    /// In the pool: when it was returned (or opened), so "idle for" is
    /// exact. Leased: when the lease was taken, for its hold time.
    pub(crate) since: Instant,
    /// When it must be retired (`max_lifetime` minus jitter).
    expires_at: Option<Instant>,
    /// A round trip the pool started on it (reset, ping, `before_lease`
    /// hook, health check) has not been seen through: if the future running
    /// it was dropped there, the connection's state is unknown and the next
    /// recycle discards it rather than hand it out.
    pub(crate) in_doubt: bool,
    /// The `query_timeout` watch, when the pool has one.
    pub(crate) round_trip: Option<Arc<super::RoundTrip>>,
    pub(crate) shared: Arc<Shared>,
}

impl<C> Conn<C> {
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

impl<C> Drop for Conn<C> {
    fn drop(&mut self) {
        inc(&self.shared.stats.closed);
        tracing::trace!(pool = %self.shared.name, "connection closed");
    }
}

impl<C> Deref for Conn<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Conn<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

/// Up to 2.5 % of `lifetime`, different for each connection, so a pool's
/// connections do not all expire at once.
fn jitter(lifetime: Duration) -> Duration {
    let r = RandomState::new().hash_one(Instant::now());
    lifetime.mul_f64((r % 1000) as f64 / 1000.0 * 0.025)
}

impl<B: Backend> Managed<B> {
    /// Undoes what the last user left behind ([`Backend::reset`]), bounded
    /// by `validation_timeout`; `false` means the connection must go.
    pub(super) async fn reset(&self, conn: &mut Conn<B::Connection>) -> bool {
        let shared = &self.shared;
        inc(&shared.stats.resets);
        conn.in_doubt = true;
        let reset = self.backend.reset(&mut conn.conn);
        match tokio::time::timeout(shared.config.validation_timeout, reset).await {
            Ok(Ok(())) => {
                conn.in_doubt = false;
                true
            }
            failed => {
                inc(&shared.stats.broken);
                let why = match failed {
                    Ok(Err(msg)) => shared.redactor.scrub(&msg),
                    _ => "reset timed out".to_owned(),
                };
                tracing::debug!(pool = %shared.name, reason = %why, "connection left in a state it cannot leave; discarded");
                false
            }
        }
    }

    async fn open(&self) -> Result<Conn<B::Connection>, BackendError> {
        let shared = &self.shared;
        let timeout = shared.config.acquire_timeout;
        let started = super::clock::now();
        let round_trip = shared
            .config
            .query_timeout
            .map(|limit| Arc::new(super::RoundTrip::new(limit, shared.clone())));
        let connect = async {
            let mut conn = self.backend.connect(round_trip.clone()).await?;
            if let Some(hook) = &self.hooks.after_create {
                hook(&mut conn)
                    .await
                    .map_err(|why| format!("after_create hook: {why}"))?;
            }
            Ok::<_, String>(conn)
        };
        let conn = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(conn)) => conn,
            failed => {
                inc(&shared.stats.backend_errors);
                let message = match failed {
                    Ok(Err(msg)) => shared.redactor.scrub(&msg),
                    _ => format!(
                        "connecting timed out after {}",
                        humantime::format_duration(timeout)
                    ),
                };
                tracing::warn!(pool = %shared.name, url = %shared.redactor.url(), error = %message, "connect failed");
                return Err(BackendError::new(message));
            }
        };
        inc(&shared.stats.created);
        let now = super::clock::now();
        shared.stats.create_time.record(now - started);
        tracing::debug!(pool = %shared.name, took = ?(now - started), "connection opened");
        Ok(Conn {
            conn: Box::new(conn),
            since: now,
            expires_at: shared.config.max_lifetime.map(|l| now + l - jitter(l)),
            in_doubt: false,
            round_trip,
            shared: shared.clone(),
        })
    }
}

impl<B: Backend> deadpool::managed::Manager for Managed<B> {
    type Type = Conn<B::Connection>;
    type Error = BackendError;

    /// Boxed: opening a connection is rare and its future is large; kept
    /// out of line, it does not bloat every checkout's future. Boxed when
    /// first polled: the fast path's checkout builds this future and drops
    /// it unpolled whenever it finds no idle connection.
    async fn create(&self) -> Result<Self::Type, BackendError> {
        Box::pin(self.open()).await
    }

    /// Only local checks, which never wait: the pool's fast path polls
    /// deadpool once and relies on a checkout finishing in that poll.
    /// Undoing a user's state ([`reset`](Self::reset)), which needs a round
    /// trip, happens in the pool's acquire path instead.
    async fn recycle(&self, conn: &mut Self::Type, _: &Metrics) -> RecycleResult<BackendError> {
        if conn.in_doubt {
            inc(&self.shared.stats.broken);
            tracing::debug!(pool = %self.shared.name, "a round trip on this connection was cut short; discarded");
            return Err(RecycleError::message("connection left in doubt"));
        }
        if conn.round_trip.as_ref().is_some_and(|r| r.fired()) {
            inc(&self.shared.stats.broken);
            tracing::debug!(pool = %self.shared.name, "a round trip on this connection timed out; discarded");
            return Err(RecycleError::message("query timed out"));
        }
        if self.backend.is_broken(&mut conn.conn) {
            inc(&self.shared.stats.broken);
            return Err(RecycleError::message("connection is broken"));
        }
        Ok(())
    }
}
