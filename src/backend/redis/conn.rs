//! [`RedisConn`]: a pooled Redis connection for one handler.

use super::Redis;
use crate::extract::{ByType, PoolSelector, Pooled};

/// A pooled Redis connection leased for one handler. Derefs to
/// [`RedisConnection`](super::RedisConnection), and is itself a
/// [`redis::aio::ConnectionLike`], so both `redis.get("k").await`
/// ([`redis::AsyncCommands`]) and `cmd("PING").query_async(&mut redis)`
/// work.
///
/// `N` picks the pool: by default the only Redis pool; a marker from
/// [`pool_name!`](crate::pool_name) picks one by name. What a handler leaves
/// behind (an open `MULTI`, a `WATCH`, another database) is undone before the
/// next user gets the connection; see the [`redis` backend docs](super).
/// It is the crate's one extractor shape, [`Pooled`], over a Redis pool.
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
pub type RedisConn<N = ByType> = Pooled<Redis, N>;

super::connection::connection_like!(impl<N: PoolSelector> for Pooled<Redis, N>, |this| {
    command(cmd) => (**this).req_packed_command(cmd),
    pipeline(pipeline, offset, count) => (**this).req_packed_commands(pipeline, offset, count),
    db => (**this).get_db(),
});
