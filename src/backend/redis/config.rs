//! [`RedisConfig`]: a Redis pool's URL and knobs.

use serde::{Deserialize, Serialize};

use crate::config::{PoolConfig, url_config};

/// Configuration of one Redis pool (feature `redis`): the URL plus the
/// shared [`PoolConfig`] knobs.
///
/// URLs: `redis://[user][:password@]host[:port][/db]`. The URL is never shown
/// unredacted.
///
/// ```
/// use axum_pools::RedisConfig;
///
/// let config = RedisConfig::from_url("redis://:s3cret@127.0.0.1:6379/2").max_size(32);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub struct RedisConfig {
    /// The Redis URL.
    pub url: String,
    /// The pool knobs.
    #[serde(flatten)]
    pub pool: PoolConfig,
}

url_config!(RedisConfig, "REDIS", "redis://127.0.0.1:6379/1");
