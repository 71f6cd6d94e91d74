//! [`RedisConn`]: a pooled Redis connection for one handler (feature `redis`).

use std::{
    fmt,
    marker::PhantomData,
    ops::{Deref, DerefMut},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use redis::{Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};

use super::{ByType, PoolSelector, conn};
use crate::{
    backend::redis::{Redis, RedisConnection},
    error::PoolError,
    manager::PoolManager,
    pool::Lease,
};

/// A pooled Redis connection leased for one handler. Derefs to
/// [`RedisConnection`], and is itself a [`redis::aio::ConnectionLike`], so
/// both `redis.get("k").await` ([`redis::AsyncCommands`]) and
/// `cmd("PING").query_async(&mut redis)` work.
///
/// `N` picks the pool: by default the only Redis pool; a marker from
/// [`pool_name!`](crate::pool_name) picks one by name. What a handler leaves
/// behind (an open `MULTI`, a `WATCH`, another database) is undone before the
/// next user gets the connection; see the [`redis` backend docs](crate::backend_docs::redis).
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use axum_pools::{PoolError, PoolLayer, PoolManager, RedisConn};
/// use redis::AsyncCommands;
///
/// async fn hits(mut redis: RedisConn) -> Result<String, PoolError> {
///     let n: i64 = redis.incr("hits", 1).await.expect("INCR");
///     Ok(n.to_string())
/// }
///
/// # fn demo(manager: PoolManager) {
/// let app: Router = Router::new().route("/hits", get(hits)).layer(PoolLayer::new(manager));
/// # }
/// ```
pub struct RedisConn<N: PoolSelector = ByType> {
    lease: Lease<Redis>,
    _selector: PhantomData<fn() -> N>,
}

impl<N: PoolSelector> RedisConn<N> {
    /// Leases a connection from `manager` directly (the manager as axum
    /// state, or outside a request).
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) -> Result<(), axum_pools::PoolError> {
    /// let mut redis = axum_pools::RedisConn::<axum_pools::ByType>::acquire(&manager).await?;
    /// let _: () = redis::cmd("PING").query_async(&mut redis).await.expect("PING");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The pool's [`PoolError`].
    pub async fn acquire(manager: &PoolManager) -> Result<Self, PoolError> {
        Self::acquire_for(manager, None).await
    }

    async fn acquire_for(manager: &PoolManager, parts: Option<&Parts>) -> Result<Self, PoolError> {
        let pool = manager.pool::<Redis>(N::NAME, "redis::aio::MultiplexedConnection")?;
        Ok(Self {
            lease: pool.acquire_for(conn::route(pool.shared(), parts)).await?,
            _selector: PhantomData,
        })
    }

    /// The name of the pool the connection came from.
    ///
    /// ```no_run
    /// # fn demo(redis: axum_pools::RedisConn) {
    /// tracing::debug!(pool = redis.pool_name(), "leased");
    /// # }
    /// ```
    #[must_use]
    pub fn pool_name(&self) -> &str {
        self.lease.pool_name()
    }
}

impl<N: PoolSelector> Deref for RedisConn<N> {
    type Target = RedisConnection;
    fn deref(&self) -> &RedisConnection {
        &self.lease
    }
}

impl<N: PoolSelector> DerefMut for RedisConn<N> {
    fn deref_mut(&mut self) -> &mut RedisConnection {
        &mut self.lease
    }
}

impl<N: PoolSelector> ConnectionLike for RedisConn<N> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        (**self).req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        (**self).req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        (**self).get_db()
    }
}

impl<N: PoolSelector> fmt::Debug for RedisConn<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConn")
            .field("pool", &self.pool_name())
            .finish_non_exhaustive()
    }
}

impl<S, N> FromRequestParts<S> for RedisConn<N>
where
    S: Send + Sync,
    N: PoolSelector,
{
    type Rejection = PoolError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Self::acquire_for(conn::manager(parts)?, Some(parts)).await
    }
}

impl<N: PoolSelector> super::RequiresPool for RedisConn<N> {
    fn check(manager: &PoolManager) -> Result<(), PoolError> {
        manager
            .erased_for::<Redis>(N::NAME, "redis::aio::MultiplexedConnection")
            .map(|_| ())
    }
}
