//! Extractors: [`DbConn`] leases a SQL connection for the handler,
//! [`DbTx`] a connection inside a transaction that [`PoolLayer`](crate::PoolLayer)
//! commits or rolls back by the response.
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

pub(crate) mod conn;
#[cfg(feature = "redis")]
mod redis;
pub mod tx;

#[cfg(feature = "redis")]
pub use self::redis::RedisConn;

pub use self::{
    conn::DbConn,
    tx::{DbTx, IsolationLevel, TxOptions},
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
