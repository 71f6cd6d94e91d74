//! The distributed limiter: GCRA in one Lua script on a Redis pool, so
//! every replica of the service draws from the same budget.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    http::{Request, StatusCode},
    response::{IntoResponse, Response},
};
use tower_service::Service;

use super::{FailPolicy, Key, Shared};
use crate::{PoolManager, backend::redis::Redis, problem::Problem};

/// GCRA on Redis' clock, atomically: returns {allowed, retry_after_us,
/// remaining}. KEYS[1]: the client's key; ARGV: emission interval (µs),
/// burst.
const GCRA: &str = r"
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(tolerance / 1000) + 1000)
return {1, 0, math.floor((now + tolerance - new_tat) / interval)}
";

pub(super) struct Distributed {
    manager: PoolManager,
    pool: String,
    on_error: FailPolicy,
    script: redis::Script,
    pub(super) errors: AtomicU64,
}

impl Distributed {
    pub(super) fn new((manager, pool, on_error): (PoolManager, String, FailPolicy)) -> Self {
        Self {
            manager,
            pool,
            on_error,
            script: redis::Script::new(GCRA),
            errors: AtomicU64::new(0),
        }
    }

    /// `Ok(Ok(remaining))` allowed, `Ok(Err(retry_after))` limited.
    async fn check(
        &self,
        shared: &Shared,
        key: &Key,
    ) -> Result<Result<u32, std::time::Duration>, String> {
        let pool = self
            .manager
            .pool::<Redis>(Some(&self.pool), "redis::aio::MultiplexedConnection")
            .map_err(|e| e.to_string())?;
        let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
        let redis_key = match key {
            Key::Ip(ip) => format!("axum-pools:rl:ip:{ip}"),
            Key::Text(t) => format!("axum-pools:rl:k:{t}"),
            Key::Unknown => "axum-pools:rl:-".to_owned(),
        };
        let interval_us = u64::try_from(shared.per_cell.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let (allowed, retry_us, remaining): (i64, i64, i64) = self
            .script
            .key(redis_key)
            .arg(interval_us)
            .arg(shared.burst)
            .invoke_async(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(if allowed == 1 {
            Ok(u32::try_from(remaining).unwrap_or(0))
        } else {
            Err(std::time::Duration::from_micros(
                u64::try_from(retry_us).unwrap_or(0),
            ))
        })
    }
}

pub(super) async fn call<S, B>(
    shared: Arc<Shared>,
    key: Key,
    mut inner: S,
    req: Request<B>,
) -> Result<Response, S::Error>
where
    S: Service<Request<B>, Response = Response>,
{
    let d = shared.distributed.as_ref().expect("distributed limiter");
    match d.check(&shared, &key).await {
        Ok(Ok(remaining)) => {
            let mut response = inner.call(req).await?;
            if shared.headers {
                let h = response.headers_mut();
                h.insert("ratelimit-policy", shared.policy());
                h.insert("ratelimit", shared.state(remaining));
            }
            Ok(response)
        }
        Ok(Err(wait)) => Ok(shared.limited(wait)),
        Err(error) => {
            d.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, policy = ?d.on_error, "the Redis rate limiter did not answer");
            match d.on_error {
                FailPolicy::Open => inner.call(req).await,
                FailPolicy::Closed => Ok(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate-limiter-unavailable",
                    "Rate limiter unavailable",
                    "the rate limiter cannot decide; retry later".to_owned(),
                )
                .retry_after(Some(std::time::Duration::from_secs(1)))
                .into_response()),
            }
        }
    }
}
