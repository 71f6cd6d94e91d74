//! The distributed store: GCRA in one Lua script on a Redis pool, so every
//! replica of the service draws from the same budget.

use std::{sync::Arc, time::Duration};

use futures_util::FutureExt;

use super::{
    keys::Key,
    store::{Check, Decision, Store},
};
use crate::{PoolManager, backend::redis::Redis};

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

/// The state in Redis, through the manager's Redis pool called `pool`.
pub(super) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    manager: PoolManager,
    pool: String,
    /// `axum-pools:rl:<limiter>:<burst>:<interval µs>:`: limiters of other
    /// names or quotas never share a key.
    prefix: String,
    script: redis::Script,
    interval_us: u64,
    burst: u32,
}

impl RedisStore {
    pub(super) fn new(
        manager: PoolManager,
        pool: String,
        limiter: &str,
        burst: u32,
        per_cell: Duration,
    ) -> Self {
        let interval_us = u64::try_from(per_cell.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            inner: Arc::new(Inner {
                manager,
                pool,
                prefix: format!("axum-pools:rl:{limiter}:{burst}:{interval_us}:"),
                script: redis::Script::new(GCRA),
                interval_us,
                burst,
            }),
        }
    }
}

impl Store for RedisStore {
    fn check(&self, key: Key) -> Check {
        let inner = self.inner.clone();
        Check::Asking(async move { inner.ask(&key).await }.boxed())
    }
}

impl Inner {
    /// One round trip: the script's decision for `key`.
    async fn ask(&self, key: &Key) -> Result<Decision, String> {
        let pool = self
            .manager
            .pool::<Redis>(Some(&self.pool), "redis::aio::MultiplexedConnection")
            .map_err(|e| e.to_string())?;
        let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
        let prefix = &self.prefix;
        let redis_key = match key {
            Key::Ip(ip) => format!("{prefix}ip:{ip}"),
            Key::Text(t) => format!("{prefix}k:{t}"),
            Key::Unknown => format!("{prefix}-"),
        };
        let (allowed, retry_us, remaining): (i64, i64, i64) = self
            .script
            .key(redis_key)
            .arg(self.interval_us)
            .arg(self.burst)
            .invoke_async(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(if allowed == 1 {
            Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
            }
        } else {
            Decision::Limited {
                wait: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
            }
        })
    }
}
