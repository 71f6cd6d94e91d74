//! [`DbConn`]: a pooled connection for one handler.

use super::Diesel;
use crate::extract::{ByType, Pooled};

/// A pooled SQL connection leased for one handler. Derefs to `C`, so
/// diesel-async queries take `&mut db`.
///
/// `N` picks the pool: by default the only pool of type `C`; a marker from
/// [`pool_name!`](crate::pool_name) picks one by name. The rejection is a
/// [`LeaseRejection`](crate::LeaseRejection) (503 with `Retry-After` when
/// the pool is exhausted or draining, 500 naming the fix for setup
/// mistakes). It is the crate's one extractor shape,
/// [`Pooled`](crate::extract::Pooled), over a SQL pool.
///
/// ```no_run
/// use axum::{Json, Router, routing::get};
/// use axum_pools::{DbConn, DbError, PoolLayer, PoolManager, SqliteConnection};
/// use diesel::{sql_types::Integer, IntoSql};
/// use diesel_async::RunQueryDsl;
///
/// async fn one(mut db: DbConn<SqliteConnection>) -> Result<Json<i32>, DbError> {
///     let n = diesel::select(1.into_sql::<Integer>()).get_result::<i32>(&mut db).await?;
///     Ok(Json(n))
/// }
///
/// # fn demo(manager: PoolManager) {
/// let app: Router = Router::new().route("/one", get(one)).layer(PoolLayer::new(manager));
/// # }
/// ```
pub type DbConn<C, N = ByType> = Pooled<Diesel<C>, N>;
