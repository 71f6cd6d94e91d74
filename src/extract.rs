//! Extractors: [`DbConn`] leases a SQL connection for the handler.
//!
//! The lease is taken only when a handler asks for it, from the pool
//! registered for the connection type (or the one a marker type names),
//! under the pool's `acquire_timeout`. It returns when dropped: at the end
//! of the handler, on a panic, or when the client goes away and the request
//! future is cancelled.
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use axum_pools::{DbConn, PoolError, PoolLayer, PoolManager, SqliteConnection};
//! use diesel::{sql_types::Integer, IntoSql};
//! use diesel_async::RunQueryDsl;
//!
//! async fn one(mut db: DbConn<SqliteConnection>) -> Result<Json<i32>, PoolError> {
//!     let n = diesel::select(1.into_sql::<Integer>())
//!         .get_result::<i32>(&mut db)
//!         .await
//!         .expect("query");
//!     Ok(Json(n))
//! }
//!
//! # fn demo(manager: PoolManager) {
//! let app: Router = Router::new().route("/one", get(one)).layer(PoolLayer::new(manager));
//! # }
//! ```

use std::{
    fmt,
    marker::PhantomData,
    ops::{Deref, DerefMut},
};

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{
    backend::diesel::{DbConnection, Diesel},
    error::PoolError,
    manager::PoolManager,
    pool::Lease,
};

/// Chooses which pool an extractor leases from.
///
/// [`ByType`] (the default) takes the only pool of the connection type;
/// a marker made with [`pool_name!`](crate::pool_name) takes the pool of
/// that name.
///
/// ```
/// axum_pools::pool_name!(pub Replica = "replica");
/// use axum_pools::PoolSelector;
/// assert_eq!(Replica::NAME, Some("replica"));
/// assert_eq!(axum_pools::ByType::NAME, None);
/// ```
pub trait PoolSelector: Send + Sync + 'static {
    /// The pool's name, or `None` for "the only pool of this type".
    const NAME: Option<&'static str>;
}

/// Selects the only pool registered for the connection type. See
/// [`PoolSelector`].
///
/// ```
/// use axum_pools::{ByType, PoolSelector};
/// assert_eq!(ByType::NAME, None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByType;

impl PoolSelector for ByType {
    const NAME: Option<&'static str> = None;
}

/// Declares a marker type selecting the pool of a given name, for
/// `DbConn<C, Marker>` when several pools share a connection type.
///
/// ```
/// axum_pools::pool_name!(
///     /// The read replica.
///     pub Replica = "replica"
/// );
/// # #[cfg(feature = "sqlite")]
/// async fn report(db: axum_pools::DbConn<axum_pools::SqliteConnection, Replica>) {}
/// ```
#[macro_export]
macro_rules! pool_name {
    ($(#[$meta:meta])* $vis:vis $marker:ident = $name:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $marker;

        impl $crate::PoolSelector for $marker {
            const NAME: ::core::option::Option<&'static str> = ::core::option::Option::Some($name);
        }
    };
}

/// A pooled SQL connection leased for one handler. Derefs to `C`, so
/// diesel-async queries take `&mut db`.
///
/// `N` picks the pool: by default the only pool of type `C`; a marker from
/// [`pool_name!`](crate::pool_name) picks one by name. Rejections are
/// [`PoolError`]s (503 with `Retry-After` when the pool is exhausted or
/// draining, 500 naming the fix for setup mistakes). See the
/// [module docs](self) for an example.
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
    pub async fn acquire(manager: &PoolManager) -> Result<Self, PoolError> {
        let pool = manager.pool::<Diesel<C>>(N::NAME, std::any::type_name::<C>())?;
        Ok(Self {
            lease: pool.acquire().await?,
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

impl<S, C, N> FromRequestParts<S> for DbConn<C, N>
where
    S: Send + Sync,
    C: DbConnection,
    N: PoolSelector,
{
    type Rejection = PoolError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let manager = parts
            .extensions
            .get::<PoolManager>()
            .ok_or(PoolError::MissingLayer)?;
        Self::acquire(manager).await
    }
}
