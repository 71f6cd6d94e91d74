//! [`DbConfig`]: a SQL pool's URL and knobs.

use serde::{Deserialize, Serialize};

use crate::config::{PoolConfig, url_config};

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

url_config!(DbConfig, "DB", "notes.db");

#[cfg(test)]
#[test]
fn serde_flattens_the_knobs() {
    let db: DbConfig = serde_json::from_str(r#"{"url": "x.db", "max_size": 3}"#).unwrap();
    assert_eq!(db.pool.max_size, 3);
}
