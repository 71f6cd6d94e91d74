//! [`DbTx`]: a transaction per request, finished by [`PoolLayer`](crate::PoolLayer).
//!
//! The transaction begins when the extractor runs (before the handler body).
//! When the handler returns, the `DbTx` hands its connection back to the
//! request's slot; after the response is built, the layer finishes it:
//!
//! | the request ends with | the transaction is |
//! |---|---|
//! | a 2xx or 3xx response | committed; if `COMMIT` fails the response becomes 500 problem+json: "nothing was stored" when the server refused it, "outcome unknown" when the connection was lost while committing |
//! | a 4xx or 5xx response | rolled back |
//! | a panic in the handler | rolled back |
//! | the client going away (request future dropped) | rolled back; on MySQL/MariaDB, whose client cannot cut a round trip cleanly, the connection is discarded instead and the server rolls back as it closes |
//! | `tx.commit().await` / `tx.rollback().await` in the handler | finished there; the layer has nothing to do |
//! | the `DbTx` moved into a task that outlives the request | rolled back when that task drops it; never committed |
//!
//! Rollbacks that cannot happen inline (panic, cancellation, a late drop)
//! run on a spawned task before the connection goes back to the pool, and
//! are counted in [`StatsSnapshot::tx_abandoned`](crate::StatsSnapshot::tx_abandoned).
//! A connection never reaches the next user with a transaction open: if the
//! rollback cannot run, the pool discards the connection at its next checkout.
//!
//! Options per route: put a [`TxOptions`] in the request extensions, e.g.
//! `.route_layer(Extension(TxOptions::default().isolation(IsolationLevel::Serializable)))`.
//!
//! | option | Postgres | MySQL / MariaDB | SQLite |
//! |---|---|---|---|
//! | `isolation` | `BEGIN ISOLATION LEVEL ..` | `SET TRANSACTION ISOLATION LEVEL ..` before `START TRANSACTION` | always serializable: met, nothing sent |
//! | `read_only` | `BEGIN .. READ ONLY` | `START TRANSACTION READ ONLY` | not supported: the extractor answers 500 naming the option |
//!
//! ```no_run
//! use axum::{Json, Router, http::StatusCode, routing::post};
//! use axum_pools::{DbError, DbTx, PoolLayer, PoolManager, SqliteConnection};
//! use diesel_async::SimpleAsyncConnection;
//!
//! async fn transfer(mut tx: DbTx<SqliteConnection>) -> Result<StatusCode, DbError> {
//!     tx.batch_execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1").await?;
//!     tx.batch_execute("UPDATE accounts SET balance = balance + 10 WHERE id = 2").await?;
//!     Ok(StatusCode::NO_CONTENT) // 2xx: committed by the layer
//! }
//!
//! # fn demo(manager: PoolManager) {
//! let app: Router = Router::new()
//!     .route("/transfer", post(transfer))
//!     .layer(PoolLayer::new(manager));
//! # }
//! ```

use std::{
    fmt,
    marker::PhantomData,
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex},
};

use axum::{http::request::Parts, response::Response};
use diesel_async::TransactionManager as _;
use futures_util::future::BoxFuture;

use super::{DbConnection, DbError, Diesel};
use crate::{
    error::PoolError,
    extract::{self, ByType, PoolSelector, Pooled, RequiresPool},
    layer::{self, Finish, FinishFn},
    manager::PoolManager,
    pool::Lease,
    stats::inc,
};

/// Isolation level of a [`DbTx`]. See the [module docs](crate::backend::diesel::tx)
/// for what each backend does with it.
///
/// ```
/// use axum_pools::IsolationLevel;
/// assert_eq!(IsolationLevel::RepeatableRead.sql(), "REPEATABLE READ");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED`.
    ReadUncommitted,
    /// `READ COMMITTED` (Postgres' default).
    ReadCommitted,
    /// `REPEATABLE READ` (MySQL's default).
    RepeatableRead,
    /// `SERIALIZABLE`.
    Serializable,
}

impl IsolationLevel {
    /// The level as SQL spells it.
    ///
    /// ```
    /// assert_eq!(axum_pools::IsolationLevel::Serializable.sql(), "SERIALIZABLE");
    /// ```
    #[must_use]
    pub const fn sql(self) -> &'static str {
        match self {
            Self::ReadUncommitted => "READ UNCOMMITTED",
            Self::ReadCommitted => "READ COMMITTED",
            Self::RepeatableRead => "REPEATABLE READ",
            Self::Serializable => "SERIALIZABLE",
        }
    }
}

/// How a [`DbTx`] begins. Put one in the request extensions of a route
/// (`Extension(options)`) or pass it to [`DbTx::begin_with`].
///
/// Default: the backend's default isolation, read-write.
///
/// ```
/// use axum::{Extension, Router, routing::get};
/// use axum_pools::{IsolationLevel, TxOptions};
///
/// let report_options = TxOptions::default()
///     .isolation(IsolationLevel::RepeatableRead)
///     .read_only();
/// let app: Router = Router::new()
///     .route("/report", get(|| async { "..." }))
///     .route_layer(Extension(report_options));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct TxOptions {
    /// The isolation level; `None` keeps the backend's default.
    pub isolation: Option<IsolationLevel>,
    /// Begin a read-only transaction.
    pub read_only: bool,
}

impl TxOptions {
    /// Sets the isolation level.
    pub const fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// Makes the transaction read-only.
    pub const fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
}

/// A pooled connection inside a transaction, for one handler. Derefs to `C`.
///
/// Extracted, it begins the transaction (with the route's [`TxOptions`], if
/// any) and [`PoolLayer`](crate::PoolLayer) commits it on a 2xx/3xx response
/// and rolls it back otherwise. See the [module docs](crate::backend::diesel::tx) for
/// every case. The rejection is a [`LeaseRejection`](crate::LeaseRejection);
/// a failed `BEGIN` answers as its [`DbError`] would.
pub struct DbTx<C: DbConnection, N: PoolSelector = ByType> {
    lease: Option<Lease<Diesel<C>>>,
    /// The request's slot, which the layer finishes from.
    slot: Option<Arc<TxSlot>>,
    _selector: PhantomData<fn() -> N>,
}

impl<C: DbConnection, N: PoolSelector> DbTx<C, N> {
    /// Begins a transaction outside a request (a background job, a test).
    /// Dropped without [`commit`](Self::commit), it is rolled back.
    ///
    /// ```no_run
    /// use axum_pools::{DbTx, PoolManager, SqliteConnection};
    /// use diesel_async::SimpleAsyncConnection;
    ///
    /// # async fn demo(manager: PoolManager) -> Result<(), axum_pools::DbError> {
    /// let mut tx = DbTx::<SqliteConnection>::begin(&manager).await?;
    /// tx.batch_execute("DELETE FROM sessions WHERE expired").await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The lease's [`PoolError`] or the failed `BEGIN`.
    pub async fn begin(manager: &PoolManager) -> Result<Self, DbError> {
        Self::begin_with(manager, TxOptions::default()).await
    }

    /// [`begin`](Self::begin) with [`TxOptions`].
    ///
    /// ```no_run
    /// use axum_pools::{DbTx, IsolationLevel, PoolManager, SqliteConnection, TxOptions};
    ///
    /// # async fn demo(manager: PoolManager) -> Result<(), axum_pools::DbError> {
    /// let options = TxOptions::default().isolation(IsolationLevel::Serializable);
    /// let tx = DbTx::<SqliteConnection>::begin_with(&manager, options).await?;
    /// tx.rollback().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin); [`DbError::Unsupported`] for an option the
    /// backend lacks.
    pub async fn begin_with(manager: &PoolManager, options: TxOptions) -> Result<Self, DbError> {
        Self::begin_for(manager, options, None).await
    }

    async fn begin_for(
        manager: &PoolManager,
        options: TxOptions,
        parts: Option<&Parts>,
    ) -> Result<Self, DbError> {
        let mut lease = extract::lease::<Diesel<C>, N>(manager, parts).await?;
        // A failed BEGIN leaves no transaction open (or marks the
        // connection broken, so the pool discards it): dropping is safe.
        if let Err(e) = C::begin(&mut lease, options).await {
            return Err(match lease.timed_out() {
                Some(after) => DbError::Pool(PoolError::QueryTimeout {
                    pool: lease.pool_name().to_owned(),
                    after,
                }),
                None => e,
            });
        }
        Ok(Self {
            lease: Some(lease),
            slot: None,
            _selector: PhantomData,
        })
    }

    /// Commits now and returns the connection.
    ///
    /// ```no_run
    /// # async fn demo(tx: axum_pools::DbTx<axum_pools::SqliteConnection>) -> Result<(), axum_pools::DbError> {
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`DbError::Commit`]: the server refused the commit, and nothing was
    /// stored; or the connection was lost while committing, and whether the
    /// transaction was stored is unknown ([`DbError::commit_outcome_unknown`]).
    pub async fn commit(mut self) -> Result<(), DbError> {
        let lease = self
            .lease
            .take()
            .expect("a DbTx holds its connection until it ends");
        finish::<C>(lease, true).await.map_err(DbError::Commit)
    }

    /// Rolls back now and returns the connection.
    ///
    /// ```no_run
    /// # async fn demo(tx: axum_pools::DbTx<axum_pools::SqliteConnection>) -> Result<(), axum_pools::DbError> {
    /// tx.rollback().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`DbError::Query`] when `ROLLBACK` fails (the connection is then
    /// discarded, never reused).
    pub async fn rollback(mut self) -> Result<(), DbError> {
        let lease = self
            .lease
            .take()
            .expect("a DbTx holds its connection until it ends");
        Ok(finish::<C>(lease, false).await?)
    }

    /// The name of the pool the connection came from.
    ///
    /// ```no_run
    /// # fn demo(tx: axum_pools::DbTx<axum_pools::SqliteConnection>) {
    /// tracing::info!(pool = tx.pool_name(), "in a transaction");
    /// # }
    /// ```
    #[must_use]
    pub fn pool_name(&self) -> &str {
        self.lease().pool_name()
    }

    fn lease(&self) -> &Lease<Diesel<C>> {
        self.lease
            .as_ref()
            .expect("a DbTx holds its connection until it ends")
    }
}

impl<C: DbConnection, N: PoolSelector> Deref for DbTx<C, N> {
    type Target = C;
    fn deref(&self) -> &C {
        self.lease()
    }
}

impl<C: DbConnection, N: PoolSelector> DerefMut for DbTx<C, N> {
    fn deref_mut(&mut self) -> &mut C {
        self.lease
            .as_mut()
            .expect("a DbTx holds its connection until it ends")
    }
}

impl<C: DbConnection, N: PoolSelector> Drop for DbTx<C, N> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.note_return();
            if !C::CANCEL_SAFE && crate::pool::lease::cancelling() {
                // The request was dropped, maybe in the middle of a round
                // trip: a ROLLBACK would read that round trip's answer as
                // its own. The lease goes back marked in doubt, so the pool
                // discards the connection, and the server rolls the
                // transaction back when it closes.
                inc(&lease.shared().stats.tx_abandoned);
                tracing::warn!(
                    pool = lease.pool_name(),
                    "transaction dropped with its request: the connection is discarded"
                );
                return;
            }
            let open: Box<dyn OpenTx> = Box::new(Open::<C> {
                lease,
                ending: false,
            });
            match &self.slot {
                Some(slot) => slot.hand_back(open),
                None => open.abandon(),
            }
        }
    }
}

impl<C: DbConnection, N: PoolSelector> fmt::Debug for DbTx<C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbTx")
            .field("pool", &self.lease.as_ref().map(Lease::pool_name))
            .field("backend", &C::BACKEND)
            .finish()
    }
}

extract::leased_extractor!(impl<C: DbConnection, N: PoolSelector> for DbTx<C, N>, |parts| {
    let manager = extract::request_manager()?;
    let slot = layer::finisher::<TxSlot>().ok_or(PoolError::MissingLayer)?;
    let options = parts
        .extensions
        .get::<TxOptions>()
        .copied()
        .unwrap_or_default();
    let mut tx = Self::begin_for(&manager, options, Some(parts)).await?;
    tx.slot = Some(slot);
    Ok(tx)
});

impl<C: DbConnection, N: PoolSelector> RequiresPool for DbTx<C, N> {
    fn check(manager: &PoolManager) -> Result<(), PoolError> {
        <Pooled<Diesel<C>, N> as RequiresPool>::check(manager)
    }
}

/// Ends the transaction on `lease`, then returns the connection, telling
/// the request's scope (for a `query_timeout` that cut the round trip: 504
/// naming the pool, as for any lease).
async fn finish<C: DbConnection>(
    mut lease: Lease<Diesel<C>>,
    commit: bool,
) -> Result<(), diesel::result::Error> {
    let result = finish_on(&mut lease, commit).await;
    lease.note_return();
    result
}

/// Ends the transaction on `lease`, which stays with the caller.
async fn finish_on<C: DbConnection>(
    lease: &mut Lease<Diesel<C>>,
    commit: bool,
) -> Result<(), diesel::result::Error> {
    let conn: &mut C = lease;
    let result = if commit {
        C::TransactionManager::commit_transaction(conn).await
    } else {
        C::TransactionManager::rollback_transaction(conn).await
    };
    let stats = &lease.shared().stats;
    match (&result, commit) {
        (Ok(()), true) => inc(&stats.tx_committed),
        _ => inc(&stats.tx_rolled_back),
    }
    if let Err(e) = &result {
        tracing::warn!(pool = lease.pool_name(), error = %e, commit, "ending the transaction failed");
        // Still inside a transaction (a failed COMMIT may leave one open):
        // try once more to roll back; if that fails too, the pool sees the
        // open transaction at the next checkout and discards the connection.
        let conn: &mut C = lease;
        if diesel_async::pooled_connection::PoolableConnection::is_broken(conn) {
            let _ = C::TransactionManager::rollback_transaction(conn).await;
        }
    }
    result
}

/// A transaction whose handler has returned, waiting for the layer.
trait OpenTx: Send + 'static {
    /// Commits (`true`) or rolls back; the connection stays here until
    /// this is dropped, so a finish cut short can still be abandoned.
    fn finish(&mut self, commit: bool) -> BoxFuture<'_, Result<(), diesel::result::Error>>;

    /// Rolls back on a spawned task (it cannot be awaited here).
    fn abandon(self: Box<Self>);
}

struct Open<C: DbConnection> {
    lease: Lease<Diesel<C>>,
    /// Its COMMIT or ROLLBACK was sent: cut short, the connection's state
    /// is unknown.
    ending: bool,
}

impl<C: DbConnection> OpenTx for Open<C> {
    fn finish(&mut self, commit: bool) -> BoxFuture<'_, Result<(), diesel::result::Error>> {
        self.ending = true;
        Box::pin(finish_on::<C>(&mut self.lease, commit))
    }

    fn abandon(self: Box<Self>) {
        let lease = self.lease;
        inc(&lease.shared().stats.tx_abandoned);
        if self.ending {
            // diesel-async marks a transaction statement cut short as
            // breaking its connection (and refuses more on it): the pool
            // discards it, and the server ends the transaction when it
            // closes.
            tracing::warn!(
                pool = lease.pool_name(),
                "the request was dropped while its transaction was being ended: the connection is discarded"
            );
            return;
        }
        tracing::warn!(
            pool = lease.pool_name(),
            "transaction dropped before the request ended it (panic, cancelled request, or a DbTx that outlived its request): rolling back"
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = finish::<C>(lease, false).await;
                });
            }
            // No runtime to roll back on: returned with its transaction
            // open, the connection is discarded at its next checkout.
            Err(_) => drop(lease),
        }
    }
}

/// The per-request place where `DbTx`s leave their transaction for the
/// layer. Whatever is still in it when the last handle drops (a panic, a
/// cancelled request) is rolled back.
#[derive(Default)]
pub(super) struct TxSlot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    open: Vec<Box<dyn OpenTx>>,
    closed: bool,
}

impl TxSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hand_back(&self, tx: Box<dyn OpenTx>) {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            tx.abandon();
        } else {
            state.open.push(tx);
        }
    }

    /// Takes what the request left; later hand-backs are rolled back.
    fn take_open(&self) -> Vec<Box<dyn OpenTx>> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.open)
    }
}

impl Finish for TxSlot {
    fn close(&self) -> Option<FinishFn> {
        let open = self.take_open();
        if open.is_empty() {
            return None;
        }
        Some(Box::new(move |response| {
            Box::pin(finish_all(open, response))
        }))
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

impl Drop for TxSlot {
    fn drop(&mut self) {
        let open = std::mem::take(&mut self.lock().open);
        for tx in open {
            tx.abandon();
        }
    }
}

/// Transactions the layer has yet to finish. Dropped with some left (the
/// response future was dropped mid-commit: the client went away), those
/// are abandoned: rolled back on a spawned task and counted.
struct Unfinished(std::collections::VecDeque<Box<dyn OpenTx>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        for tx in self.0.drain(..) {
            tx.abandon();
        }
    }
}

/// Finishes the request's transactions by the response's status: commit on
/// 2xx/3xx (stopping at the first failed commit, whose error becomes the
/// response, and rolling back the rest), roll back otherwise.
async fn finish_all(open: Vec<Box<dyn OpenTx>>, response: Response) -> Response {
    let status = response.status();
    let mut commit = status.is_success() || status.is_redirection();
    let mut failed = None;
    let mut unfinished = Unfinished(open.into());
    while let Some(tx) = unfinished.0.front_mut() {
        let result = tx.finish(commit).await;
        // Finished: its connection goes back now.
        drop(unfinished.0.pop_front());
        if let Err(e) = result
            && commit
        {
            commit = false;
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => axum::response::IntoResponse::into_response(DbError::Commit(e)),
        None => response,
    }
}
