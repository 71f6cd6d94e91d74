//! [`RedisConfig`]: a Redis pool's URL and knobs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    config::{ConfigError, PoolConfig, pool_setters, url_and_knobs},
    redact::redact_url,
};

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

impl RedisConfig {
    /// A config for `url` with default knobs.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool: PoolConfig::default(),
        }
    }

    /// Reads `{PREFIX}_URL` (required) and the knobs of
    /// [`PoolConfig::from_env`].
    ///
    /// ```no_run
    /// let config = axum_pools::RedisConfig::from_env("REDIS")?; // REDIS_URL, REDIS_MAX_SIZE, ...
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        let (url, pool) = url_and_knobs(prefix, |key| std::env::var(key).ok())?;
        Ok(Self { url, pool })
    }

    fn knobs(&mut self) -> &mut PoolConfig {
        &mut self.pool
    }

    pool_setters!();
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool", &self.pool)
            .finish()
    }
}
