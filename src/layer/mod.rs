//! Tower layers. [`PoolLayer`] makes the [`PoolManager`](crate::PoolManager)
//! reachable from every request so the extractors can lease from it, and
//! finishes each request's [`DbTx`](crate::DbTx) by the response: commit on
//! 2xx/3xx, rollback otherwise (see [`extract::tx`](crate::extract::tx)).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use axum_pools::{DbConn, PoolLayer, PoolManager, SqliteConnection};
//!
//! async fn handler(_db: DbConn<SqliteConnection>) -> &'static str { "leased" }
//!
//! # async fn demo(manager: PoolManager) {
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(PoolLayer::new(manager));
//! # }
//! ```

mod pool;

pub use self::pool::{PoolLayer, PoolService, ResponseFuture};
pub(crate) use self::pool::{RequestScope, Scope};
