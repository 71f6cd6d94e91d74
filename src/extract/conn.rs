//! [`DbConn`]: a pooled connection for one handler.

use std::{
    fmt,
    marker::PhantomData,
    ops::{Deref, DerefMut},
    sync::Arc,
};

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{ByType, PoolSelector};
use crate::{
    backend::diesel::{DbConnection, Diesel},
    error::PoolError,
    layer::{RequestScope, Scope},
    manager::PoolManager,
    pool::Lease,
};

/// A pooled SQL connection leased for one handler. Derefs to `C`, so
/// diesel-async queries take `&mut db`.
///
/// `N` picks the pool: by default the only pool of type `C`; a marker from
/// [`pool_name!`](crate::pool_name) picks one by name. Rejections are
/// [`PoolError`]s (503 with `Retry-After` when the pool is exhausted or
/// draining, 500 naming the fix for setup mistakes). See the
/// [module docs](crate::extract) for an example.
pub struct DbConn<C: DbConnection, N: PoolSelector = ByType> {
    lease: Lease<Diesel<C>>,
    _selector: PhantomData<fn() -> N>,
}

impl<C: DbConnection, N: PoolSelector> DbConn<C, N> {
    /// Leases a connection from `manager` directly, e.g. with the manager as
    /// axum state or outside a request.
    ///
    /// ```no_run
    /// use axum::extract::State;
    /// use axum_pools::{DbConn, PoolError, PoolManager, SqliteConnection};
    ///
    /// async fn handler(State(manager): State<PoolManager>) -> Result<&'static str, PoolError> {
    ///     let _db = DbConn::<SqliteConnection>::acquire(&manager).await?;
    ///     Ok("leased")
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// The pool's [`PoolError`]: timeout, overload, draining, backend
    /// failure, or no matching pool.
    pub fn acquire(
        manager: &PoolManager,
    ) -> impl Future<Output = Result<Self, PoolError>> + Send + '_ {
        // Not an `async fn` of its own: one state machine less for the lease
        // to be moved through on its way out.
        Self::acquire_for(manager, None)
    }

    async fn acquire_for(manager: &PoolManager, parts: Option<&Parts>) -> Result<Self, PoolError> {
        let pool = manager.pool::<Diesel<C>>(N::NAME, std::any::type_name::<C>())?;
        let lease = pool.acquire_for(route(pool.shared(), parts)).await?;
        Ok(Self {
            lease,
            _selector: PhantomData,
        })
    }

    /// The name of the pool the connection came from.
    ///
    /// ```no_run
    /// # fn demo(db: axum_pools::DbConn<axum_pools::SqliteConnection>) {
    /// tracing::info!(pool = db.pool_name(), "leased");
    /// # }
    /// ```
    #[must_use]
    pub fn pool_name(&self) -> &str {
        self.lease.pool_name()
    }
}

impl<C: DbConnection, N: PoolSelector> Deref for DbConn<C, N> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.lease
    }
}

impl<C: DbConnection, N: PoolSelector> DerefMut for DbConn<C, N> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.lease
    }
}

impl<C: DbConnection, N: PoolSelector> fmt::Debug for DbConn<C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConn")
            .field("pool", &self.pool_name())
            .field("backend", &C::BACKEND)
            .finish()
    }
}

/// A lease from the pool `N` selects for connection type `C`, on behalf of
/// the request `parts` when there is one.
pub(crate) async fn lease<C: DbConnection, N: PoolSelector>(
    manager: &PoolManager,
    parts: Option<&Parts>,
) -> Result<Lease<Diesel<C>>, PoolError> {
    let pool = manager.pool::<Diesel<C>>(N::NAME, std::any::type_name::<C>())?;
    pool.acquire_for(route(pool.shared(), parts)).await
}

/// "METHOD /matched/{path}" of the request, for leak warnings; computed only
/// when the pool watches for leaks.
pub(crate) fn route(shared: &crate::pool::Shared, parts: Option<&Parts>) -> Option<Arc<str>> {
    let parts = parts.filter(|_| shared.config.leak_threshold.is_some())?;
    let path = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or(parts.uri.path(), |m| m.as_str());
    Some(format!("{} {path}", parts.method).into())
}

/// The scope [`PoolLayer`](crate::PoolLayer) put into the request.
pub(crate) fn scope(parts: &Parts) -> Result<&Arc<Scope>, PoolError> {
    parts
        .extensions
        .get::<RequestScope>()
        .map(|s| &s.0)
        .ok_or(PoolError::MissingLayer)
}

/// The manager [`PoolLayer`](crate::PoolLayer) put into the request.
pub(crate) fn manager(parts: &Parts) -> Result<&PoolManager, PoolError> {
    scope(parts).map(|s| &s.manager)
}

/// The manager itself is an extractor on routes under [`PoolLayer`](crate::PoolLayer)
/// (500 naming the fix without it).
///
/// ```no_run
/// async fn pools(manager: axum_pools::PoolManager) -> String {
///     manager.pool_names().join(", ")
/// }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for PoolManager {
    type Rejection = PoolError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        manager(parts).cloned()
    }
}

impl<S, C, N> FromRequestParts<S> for DbConn<C, N>
where
    S: Send + Sync,
    C: DbConnection,
    N: PoolSelector,
{
    type Rejection = PoolError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Self::acquire_for(manager(parts)?, Some(parts)).await
    }
}

impl<C: DbConnection, N: PoolSelector> super::RequiresPool for DbConn<C, N> {
    fn check(manager: &PoolManager) -> Result<(), PoolError> {
        manager
            .erased_for::<Diesel<C>>(N::NAME, std::any::type_name::<C>())
            .map(|_| ())
    }
}
