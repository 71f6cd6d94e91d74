//! [`DbConfig`]: a SQL pool's URL and knobs.

use serde::{Deserialize, Serialize};

use crate::{
    config::{PoolConfig, url_config},
    secret::ConnectionUrl,
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
    /// The database URL (see the type docs for the forms), its password
    /// and secret parameters held as secrets: shown and serialized masked.
    pub url: ConnectionUrl,
    /// The pool knobs; an unknown key among them is an error naming it.
    #[serde(flatten, deserialize_with = "crate::config::strict_knobs")]
    pub pool: PoolConfig,
    /// Postgres behind a pooler in transaction mode (PgBouncer
    /// `pool_mode = transaction`, and the poolers of Supabase, Neon, …),
    /// where consecutive transactions of one client connection may run on
    /// different server sessions. Off by default; `{PREFIX}_TRANSACTION_POOLING`.
    ///
    /// With it on, a pool's connections keep no named statement on the
    /// server (each execution parses its statement again, in the same
    /// message round as its bind, so a statement cannot outlive its
    /// transaction) and refuse a `SET` that would change the session (use
    /// `SET LOCAL` inside a [`DbTx`](crate::DbTx), or `ALTER ROLE … SET`);
    /// `query_timeout` is then enforced by the client alone (a pooler
    /// refuses the `statement_timeout` startup option). Session features do
    /// not work behind such a pooler, with or without it: `LISTEN`, advisory
    /// locks, temporary tables, and session settings made by an
    /// `after_create` hook. See README "Behind PgBouncer".
    ///
    /// Postgres pools only: the build fails when it is set on another
    /// backend.
    #[serde(default)]
    pub transaction_pooling: bool,
}

url_config!(DbConfig, "DB", "notes.db";
    /// Sets [`DbConfig::transaction_pooling`].
    ///
    /// ```
    /// let config = axum_pools::DbConfig::from_url("postgres://app@pgbouncer:6432/app")
    ///     .transaction_pooling(true);
    /// assert!(config.transaction_pooling);
    /// ```
    transaction_pooling: "TRANSACTION_POOLING"
);

#[cfg(test)]
#[test]
fn serde_flattens_the_knobs() {
    let db: DbConfig = serde_json::from_str(r#"{"url": "x.db", "max_size": 3}"#).unwrap();
    assert_eq!(db.pool.max_size, 3);
    assert!(!db.transaction_pooling);
    let db: DbConfig =
        serde_json::from_str(r#"{"url": "postgres://h/d", "transaction_pooling": true}"#).unwrap();
    assert!(db.transaction_pooling);
}

#[cfg(test)]
#[test]
fn the_environment_sets_transaction_pooling() {
    let vars = [
        ("DB_URL", "postgres://h/d"),
        ("DB_TRANSACTION_POOLING", "true"),
    ];
    let lookup = |k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    assert!(
        DbConfig::from_lookup("DB", lookup)
            .unwrap()
            .transaction_pooling
    );
    let bad = [
        ("DB_URL", "postgres://h/d"),
        ("DB_TRANSACTION_POOLING", "maybe"),
    ];
    let lookup = |k: &str| {
        bad.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let err = DbConfig::from_lookup("DB", lookup).unwrap_err();
    assert!(err.to_string().contains("DB_TRANSACTION_POOLING"), "{err}");
}
