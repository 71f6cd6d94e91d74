//! [`DbConfig`]: a SQL pool's URL and knobs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    config::{ConfigError, PoolConfig, pool_setters, url_and_knobs},
    redact::redact_url,
};

/// Configuration of one SQL pool: the database URL plus the shared
/// [`PoolConfig`] knobs.
///
/// URLs: `postgres://user:password@host:port/db` (any `tokio-postgres`
/// form), `mysql://user:password@host:port/db`, and for SQLite a file path
/// or a `file:` URI. A SQLite `:memory:` database is one database *per
/// connection*, so connections of one pool would not see each other's
/// data: use a file, or a shared-cache URI such as
/// `file:notes?mode=memory&cache=shared`.
///
/// The URL is never shown unredacted: `Debug`, errors and logs print
/// `postgres://user:***@host/db`.
///
/// ```
/// use std::time::Duration;
/// use axum_pools::DbConfig;
///
/// let config = DbConfig::from_url("postgres://app:s3cret@127.0.0.1/app")
///     .max_size(16)
///     .acquire_timeout(Duration::from_secs(1));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub struct DbConfig {
    /// The database URL (see the type docs for the forms).
    pub url: String,
    /// The pool knobs.
    #[serde(flatten)]
    pub pool: PoolConfig,
}

impl DbConfig {
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
    /// let config = axum_pools::DbConfig::from_env("DATABASE")?; // DATABASE_URL, DATABASE_MAX_SIZE, ...
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(prefix, |key| std::env::var(key).ok())
    }

    /// [`DbConfig::from_env`] over any source of variables.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use axum_pools::DbConfig;
    ///
    /// let vars = HashMap::from([("DB_URL", "notes.db"), ("DB_MAX_SIZE", "4")]);
    /// let config = DbConfig::from_lookup("DB", |k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!((config.url.as_str(), config.pool.max_size), ("notes.db", 4));
    ///
    /// let err = DbConfig::from_lookup("DB", |_| None).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid pool config: DB_URL is not set: set it to the server URL");
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (url, pool) = url_and_knobs(prefix, lookup)?;
        Ok(Self { url, pool })
    }

    fn knobs(&mut self) -> &mut PoolConfig {
        &mut self.pool
    }

    pool_setters!();
}

#[cfg(test)]
#[test]
fn serde_flattens_the_knobs() {
    let db: DbConfig = serde_json::from_str(r#"{"url": "x.db", "max_size": 3}"#).unwrap();
    assert_eq!(db.pool.max_size, 3);
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("pool", &self.pool)
            .finish()
    }
}
