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

pub mod circuit_breaker;
mod pool;
pub mod rate_limit;

pub(crate) use self::pool::{RequestScope, Scope};
pub use self::{
    circuit_breaker::{
        CircuitBreaker, CircuitBreakerError, CircuitBreakerFuture, CircuitBreakerLayer, Classify,
        ServerErrors,
    },
    pool::{PoolLayer, PoolService, ResponseFuture},
    rate_limit::{
        FailPolicy, KeyBy, KeyFn, RateLimit, RateLimitFuture, RateLimitLayer, TrustedProxies,
    },
};
