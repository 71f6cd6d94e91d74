//! The one extractor shape: [`Pooled`] leases a connection from the pool a
//! [`PoolSelector`] picks, under the pool's `acquire_timeout`, breaker and
//! load shedding, and returns it when dropped (at the end of the handler, on
//! a panic, or when the request is cancelled).
//!
//! The backends name it: [`DbConn`](crate::DbConn) is
//! `Pooled<Diesel<C>, N>`, [`RedisConn`](crate::RedisConn) is
//! `Pooled<Redis, N>`. [`DbTx`](crate::DbTx) and
//! [`HttpClient`](crate::HttpClient) are built on the same lookup. Every one
//! of them rejects with a [`LeaseRejection`].
//!
//! The manager comes from [`PoolLayer`](crate::PoolLayer), which makes it
//! reachable from the request's task without touching the request (no
//! allocation on routes that never lease).
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use axum_pools::{DbConn, DbError, PoolLayer, PoolManager, SqliteConnection};
//! use diesel::{sql_types::Integer, IntoSql};
//! use diesel_async::RunQueryDsl;
//!
//! async fn one(mut db: DbConn<SqliteConnection>) -> Result<Json<i32>, DbError> {
//!     let n = diesel::select(1.into_sql::<Integer>()).get_result::<i32>(&mut db).await?;
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
    sync::Arc,
};

use axum::{
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};

use crate::{
    error::PoolError,
    layer,
    manager::PoolManager,
    pool::{Backend, Lease, Shared},
    problem::Problem,
};

/// A connection leased from the pool `N` selects among the pools of
/// backend `B`. Derefs to the connection. Public under the backends' names:
/// [`DbConn`](crate::DbConn), [`RedisConn`](crate::RedisConn). See the
/// [module docs](self).
pub struct Pooled<B: Backend, N: PoolSelector = ByType> {
    lease: Lease<B>,
    _selector: PhantomData<fn() -> N>,
}

impl<B: Backend, N: PoolSelector> Pooled<B, N> {
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
        Ok(Self {
            lease: lease::<B, N>(manager, parts).await?,
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

impl<B: Backend, N: PoolSelector> Deref for Pooled<B, N> {
    type Target = B::Connection;
    fn deref(&self) -> &B::Connection {
        &self.lease
    }
}

impl<B: Backend, N: PoolSelector> DerefMut for Pooled<B, N> {
    fn deref_mut(&mut self) -> &mut B::Connection {
        &mut self.lease
    }
}

/// The lease tells the request's [`PoolLayer`](crate::PoolLayer) its pool,
/// and whether a round trip timed out (the layer then answers 504 if the
/// handler failed).
impl<B: Backend, N: PoolSelector> Drop for Pooled<B, N> {
    fn drop(&mut self) {
        self.lease.note_return();
    }
}

impl<B: Backend, N: PoolSelector> fmt::Debug for Pooled<B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("pool", &self.pool_name())
            .field("backend", &self.lease.shared().kind)
            .finish()
    }
}

/// Writes an extractor's [`FromRequestParts`](axum::extract::FromRequestParts)
/// impl. Every extractor of this crate takes any state and rejects with a
/// [`LeaseRejection`]; only how it gets its value from the request's `parts`
/// differs, and that is the body given:
/// `leased_extractor!(impl<N: PoolSelector> for X<N>, |parts| body)`.
macro_rules! leased_extractor {
    ($(#[$doc:meta])* impl<$($p:ident: $bound:path),*> for $ty:ty, |$parts:pat_param| $body:expr) => {
        $(#[$doc])*
        impl<S: Send + Sync, $($p: $bound),*> ::axum::extract::FromRequestParts<S> for $ty {
            type Rejection = $crate::extract::LeaseRejection;

            async fn from_request_parts(
                $parts: &mut ::axum::http::request::Parts,
                _: &S,
            ) -> Result<Self, Self::Rejection> {
                $body
            }
        }
    };
}
pub(crate) use leased_extractor;

leased_extractor!(impl<B: Backend, N: PoolSelector> for Pooled<B, N>, |parts| {
    Ok(Self::acquire_for(&request_manager()?, Some(parts)).await?)
});

impl<B: Backend, N: PoolSelector> RequiresPool for Pooled<B, N> {
    fn check(manager: &PoolManager) -> Result<(), PoolError> {
        manager.erased_for::<B>(N::NAME, B::type_name()).map(|_| ())
    }
}

/// A lease from the pool `N` selects among those of backend `B`, on behalf
/// of the request `parts` when there is one.
pub(crate) async fn lease<B: Backend, N: PoolSelector>(
    manager: &PoolManager,
    parts: Option<&Parts>,
) -> Result<Lease<B>, PoolError> {
    let pool = manager.pool::<B>(N::NAME, B::type_name())?;
    pool.acquire_for(route(pool.shared(), parts)).await
}

/// "METHOD /matched/{path}" of the request, for leak warnings; computed only
/// when the pool watches for leaks.
fn route(shared: &Shared, parts: Option<&Parts>) -> Option<Arc<str>> {
    let parts = parts.filter(|_| shared.config.leak_threshold.is_some())?;
    let path = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or(parts.uri.path(), |m| m.as_str());
    Some(format!("{} {path}", parts.method).into())
}

/// The manager of the [`PoolLayer`](crate::PoolLayer) serving this request.
pub(crate) fn request_manager() -> Result<PoolManager, PoolError> {
    layer::with_scope(|scope| scope.manager.clone()).ok_or(PoolError::MissingLayer)
}

leased_extractor!(
    /// The manager itself is an extractor on routes under [`PoolLayer`](crate::PoolLayer)
    /// (500 naming the fix without it).
    ///
    /// ```no_run
    /// async fn pools(manager: axum_pools::PoolManager) -> String {
    ///     manager.pool_names().join(", ")
    /// }
    /// ```
    impl<> for PoolManager,
    |_| Ok(request_manager()?)
);

/// Why an extractor of this crate gave the handler no connection: the
/// rejection of [`DbConn`](crate::DbConn), [`DbTx`](crate::DbTx),
/// [`RedisConn`](crate::RedisConn), [`HttpClient`](crate::HttpClient) and
/// [`PoolManager`] alike.
///
/// | variant | status |
/// |---|---|
/// | [`LeaseRejection::Pool`] | as [`PoolError::status`]: 503 with `Retry-After` when the pool is exhausted, shedding, open or draining; 500 naming the fix for a missing layer or pool |
/// | [`LeaseRejection::Prepare`] | as [`PrepareFailed::status`]: the connection was leased but could not be made ready (a `DbTx`'s `BEGIN`) |
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use axum_pools::{LeaseRejection, PoolError};
///
/// let rejection = LeaseRejection::from(PoolError::MissingLayer);
/// assert_eq!(rejection.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(rejection.body_text().contains("PoolLayer::new(manager)"));
/// assert_eq!(rejection.into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseRejection {
    /// No connection: the pool refused, or the route is set up wrong.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A connection was leased but could not be made ready for the handler.
    #[error(transparent)]
    Prepare(#[from] PrepareFailed),
}

impl LeaseRejection {
    /// The HTTP status of the rejection.
    ///
    /// ```
    /// let r = axum_pools::LeaseRejection::from(axum_pools::PoolError::MissingLayer);
    /// assert_eq!(r.status(), 500);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Pool(e) => e.status(),
            Self::Prepare(e) => e.status(),
        }
    }

    /// The message sent in the problem's `detail`.
    ///
    /// ```
    /// let r = axum_pools::LeaseRejection::from(axum_pools::PoolError::MissingLayer);
    /// assert!(r.body_text().starts_with("no PoolLayer"));
    /// ```
    #[must_use]
    pub fn body_text(&self) -> String {
        match self {
            Self::Pool(e) => e.to_string(),
            Self::Prepare(e) => e.detail.clone(),
        }
    }
}

impl IntoResponse for LeaseRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Pool(e) => e.into_response(),
            Self::Prepare(e) => e.into_response(),
        }
    }
}

/// A leased connection could not be made ready for the handler (for
/// [`DbTx`](crate::DbTx): `BEGIN` failed, or the backend lacks a
/// transaction option). The cause is logged, never sent.
///
/// ```
/// use axum::http::StatusCode;
/// let e = axum_pools::PrepareFailed::new(
///     StatusCode::INTERNAL_SERVER_ERROR,
///     "begin-failed",
///     "Transaction not begun",
///     "the transaction could not begin",
/// );
/// assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct PrepareFailed {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    pool: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PrepareFailed {
    /// A failure answered with `status`; `slug` names its problem type and
    /// `title` summarizes it.
    #[must_use]
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            pool: None,
            source: None,
        }
    }

    /// Names the pool and keeps the cause (for `source()` and the log).
    #[must_use]
    pub(crate) fn caused_by(
        mut self,
        pool: Option<&str>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.pool = pool.map(str::to_owned);
        self.source = Some(Box::new(source));
        self
    }

    /// The HTTP status.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// let e = axum_pools::PrepareFailed::new(StatusCode::CONFLICT, "conflict", "Conflict", "taken");
    /// assert_eq!(e.status(), StatusCode::CONFLICT);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for PrepareFailed {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(error = %self, cause = ?self.source, "the leased connection could not be prepared");
        }
        Problem::new(self.status, self.slug, self.title, self.detail)
            .pool(self.pool.as_deref())
            .into_response()
    }
}

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

/// An extractor that leases from a pool, so
/// [`PoolManagerBuilder::require`](crate::PoolManagerBuilder::require) can
/// check at build time that its pool exists (and is unambiguous) instead of
/// the first request finding out.
///
/// ```
/// use axum_pools::{DbConfig, DbConn, PoolManager, SqliteConnection, pool_name};
/// pool_name!(Reports = "reports");
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("app.db").display().to_string();
/// let err = PoolManager::builder()
///     .database::<SqliteConnection>("main", DbConfig::from_url(&path))
///     .require::<DbConn<SqliteConnection, Reports>>() // a handler takes this
///     .build()
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains("no pool named 'reports'"));
/// # }
/// ```
pub trait RequiresPool {
    /// Whether `manager` has the pool this extractor would lease from.
    #[doc(hidden)]
    fn check(manager: &crate::PoolManager) -> Result<(), crate::PoolError>;
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
