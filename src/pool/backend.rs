//! [`Backend`]: what each backend supplies to the pool core.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use super::RoundTrip;
use crate::stats::StatsSnapshot;

/// What a backend must provide; the pool core does the rest.
///
/// Public only so the extractor [`Pooled`](crate::extract::Pooled) can name
/// it in its bounds; it sits in a private module, so no user can implement
/// or call it.
pub trait Backend: Send + Sync + 'static {
    /// The connection a lease derefs to.
    type Connection: Send + 'static;

    /// The connection type as errors name it ("no pool of .. is
    /// registered").
    fn type_name() -> &'static str {
        std::any::type_name::<Self::Connection>()
    }

    /// The health draft's component type of a pool of this backend.
    const COMPONENT_TYPE: &'static str = "datastore";

    /// Whether the backend reports each call's outcome to the breaker itself
    /// (the HTTP pool: an attempt's result, not the lease, is the call).
    const RECORDS_OUTCOMES: bool = false;

    /// Short name of the backend (`postgres`, `mysql`, `sqlite`, ...).
    fn kind(&self) -> &'static str;

    /// Opens a connection. Errors are raw driver text; the pool scrubs them.
    /// With `query_timeout` set, `round_trip` is the connection's watch:
    /// the backend bounds each round trip by its limit where it can and
    /// [`fire`s](RoundTrip::fire) it when one gets no answer.
    fn connect(
        &self,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> impl Future<Output = Result<Self::Connection, String>> + Send;

    /// One round trip proving the connection works.
    fn ping(&self, conn: &mut Self::Connection) -> impl Future<Output = Result<(), String>> + Send;

    /// The health check's round trip; by default the [`ping`](Self::ping).
    fn health_check(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.ping(conn)
    }

    /// A local, non-blocking check that the connection is unusable.
    fn is_broken(&self, conn: &mut Self::Connection) -> bool;

    /// Whether a connection stays usable when the future of one of its
    /// round trips is dropped mid-way (the driver reads and drops the
    /// answer itself, as tokio-postgres and redis do). When not (MySQL), a
    /// lease dropped while [`PoolLayer`](crate::PoolLayer) drops an
    /// unfinished request (client gone, timeout, panic) is discarded.
    const CANCEL_SAFE: bool = true;

    /// Whether the build fails when no connection can be opened (a
    /// database: yes; an upstream HTTP service: no, it may come later).
    fn required_at_build(&self) -> bool {
        true
    }

    /// Adds what the backend counts itself (the HTTP pool: its requests)
    /// to a stats snapshot.
    fn fill_stats(&self, _snapshot: &mut StatsSnapshot) {}

    /// A local check that the last user left state behind (an open `MULTI`,
    /// another database selected) that [`reset`](Self::reset) must undo.
    fn needs_reset(&self, _conn: &Self::Connection) -> bool {
        false
    }

    /// Puts a used connection back in its initial state before the next
    /// user gets it; an error discards the connection.
    fn reset(
        &self,
        _conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Where the connections go when the backend is several servers (a
    /// Redis Cluster's nodes, the master Sentinel names), for the health
    /// report; `None` for one server.
    fn topology(&self) -> Option<BTreeMap<String, String>> {
        None
    }

    /// Facts about the server for the stats (version, clients), read after
    /// a passing health check.
    fn server_info(
        &self,
        _conn: &mut Self::Connection,
    ) -> impl Future<Output = Option<BTreeMap<String, String>>> + Send {
        async { None }
    }
}
