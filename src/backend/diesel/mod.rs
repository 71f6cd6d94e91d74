//! SQL pools over diesel-async: Postgres (`AsyncPgConnection`, feature
//! `postgres`), MySQL/MariaDB (`AsyncMysqlConnection`, feature `mysql`) and
//! SQLite (`SyncConnectionWrapper<SqliteConnection>`, feature `sqlite`).
//!
//! Validation does not cost a round trip per checkout: the cheap
//! `is_broken` check runs on every checkout, and a real `SELECT 1` only when
//! the connection sat idle longer than `alive_bypass_window`.

use std::{collections::BTreeMap, marker::PhantomData, sync::Arc};

use diesel_async::{AsyncConnection, pooled_connection::PoolableConnection};

mod config;
mod conn;
mod error;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "mysql")]
mod relay;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod silence;
pub mod tx;
#[cfg(feature = "mysql")]
mod verify_ca;

pub use self::{
    config::DbConfig,
    conn::DbConn,
    error::DbError,
    tx::{DbTx, IsolationLevel, TxOptions},
};
use crate::{
    manager::PoolManagerBuilder,
    pool::{Backend, RoundTrip, hooks::Hooks},
};

impl PoolManagerBuilder {
    /// Registers a SQL pool called `name` of connection type `C`
    /// (`AsyncPgConnection`, `AsyncMysqlConnection` or
    /// [`SqliteConnection`](crate::SqliteConnection)).
    ///
    /// ```no_run
    /// use axum_pools::{DbConfig, PoolManager, SqliteConnection};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .database::<SqliteConnection>("notes", DbConfig::from_url("notes.db").max_size(4))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn database<C: DbConnection>(self, name: impl Into<String>, config: DbConfig) -> Self {
        self.database_with_hooks::<C>(name, config, Hooks::new())
    }

    /// [`database`](Self::database) with [`Hooks`](Hooks): code run
    /// when a connection is opened, before each lease, after each release.
    ///
    /// ```no_run
    /// use axum_pools::{DbConfig, Hooks, PoolManager, SqliteConnection};
    /// use diesel_async::SimpleAsyncConnection;
    ///
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let hooks = Hooks::<SqliteConnection>::new().after_create(|conn| {
    ///     Box::pin(async move {
    ///         conn.batch_execute("PRAGMA cache_size = -8000").await.map_err(|e| e.to_string())
    ///     })
    /// });
    /// let manager = PoolManager::builder()
    ///     .database_with_hooks::<SqliteConnection>("main", DbConfig::from_url("app.db"), hooks)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn database_with_hooks<C: DbConnection>(
        self,
        name: impl Into<String>,
        config: DbConfig,
        hooks: Hooks<C>,
    ) -> Self {
        let DbConfig {
            url,
            pool,
            transaction_pooling,
        } = config;
        let backend = Diesel::<C>::new(url.expose_secret(), transaction_pooling);
        self.register(name.into(), backend, &url, pool, hooks)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A diesel-async connection type that can be pooled: implemented for
/// `AsyncPgConnection` (feature `postgres`), `AsyncMysqlConnection`
/// (feature `mysql`) and `SyncConnectionWrapper<SqliteConnection>`
/// (feature `sqlite`, re-exported as [`SqliteConnection`]).
///
/// ```
/// fn pooled<C: axum_pools::DbConnection>() -> &'static str { C::BACKEND }
/// # #[cfg(feature = "sqlite")]
/// assert_eq!(pooled::<axum_pools::SqliteConnection>(), "sqlite");
/// ```
pub trait DbConnection:
    AsyncConnection + PoolableConnection + Send + 'static + sealed::Sealed
{
    /// Short backend name used in stats, health and errors.
    const BACKEND: &'static str;

    /// Statements run on every new connection.
    #[doc(hidden)]
    const SETUP_SQL: Option<&'static str> = None;

    /// Statements run once per pool, on its first connection, before any
    /// other connection finishes opening.
    #[doc(hidden)]
    const FIRST_SETUP_SQL: Option<&'static str> = None;

    /// Whether a query future dropped mid-way leaves the connection usable.
    #[doc(hidden)]
    const CANCEL_SAFE: bool = true;

    /// How a pool opens connections, made once from its URL (Postgres:
    /// the driver's config and the TLS settings taken out of the URL).
    #[doc(hidden)]
    type Connector: Connect<Self>;

    /// Begins a transaction with `options`.
    #[doc(hidden)]
    fn begin(&mut self, options: TxOptions) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// How a pool of `C` opens its connections; made once from the pool's URL.
#[doc(hidden)]
pub trait Connect<C>: Send + Sync + Sized + 'static {
    /// Parses the pool's URL; the error says what is wrong with it.
    fn new(url: &str) -> Result<Self, String>;

    /// Turns `transaction_pooling` on; refused by the backends that have
    /// no such mode.
    fn transaction_pooling(&mut self) -> Result<(), String> {
        Err("transaction_pooling: applies to Postgres pools only; turn it off for this pool".into())
    }

    /// Opens one connection. Errors are raw driver text; the pool scrubs
    /// them. `round_trip`: the pool's `query_timeout` watch, enforced where
    /// the driver lets us.
    fn connect(
        &self,
        round_trip: Option<Arc<RoundTrip>>,
    ) -> impl Future<Output = Result<C, String>> + Send;

    /// What the stats show of the transport (`tls`: a TLS version, `on` or
    /// `off`), for drivers that can tell.
    fn transport(&self) -> Option<String> {
        None
    }
}

/// `BEGIN` through the transaction manager, so diesel tracks the depth.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn begin_plain<C: AsyncConnection>(conn: &mut C) -> Result<(), DbError> {
    use diesel_async::TransactionManager as _;
    Ok(C::TransactionManager::begin_transaction(conn).await?)
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for diesel_async::AsyncPgConnection {}
#[cfg(feature = "postgres")]
impl DbConnection for diesel_async::AsyncPgConnection {
    const BACKEND: &'static str = "postgres";
    type Connector = postgres::PgConnector;

    async fn begin(&mut self, options: TxOptions) -> Result<(), DbError> {
        if options == TxOptions::default() {
            return begin_plain(self).await;
        }
        let mut sql = String::from("BEGIN");
        if let Some(level) = options.isolation {
            sql.push_str(" ISOLATION LEVEL ");
            sql.push_str(level.sql());
        }
        if options.read_only {
            sql.push_str(" READ ONLY");
        }
        Ok(diesel_async::AnsiTransactionManager::begin_transaction_sql(self, &sql).await?)
    }
}

#[cfg(feature = "mysql")]
impl sealed::Sealed for diesel_async::AsyncMysqlConnection {}
#[cfg(feature = "mysql")]
impl DbConnection for diesel_async::AsyncMysqlConnection {
    const BACKEND: &'static str = "mysql";
    /// mysql_async marks a connection whose routine was dropped as
    /// disconnected, but only its own pool looks: diesel-async would send
    /// the next query on it and read the last one's answer.
    const CANCEL_SAFE: bool = false;
    type Connector = mysql::MysqlConnector;

    async fn begin(&mut self, options: TxOptions) -> Result<(), DbError> {
        use diesel_async::SimpleAsyncConnection as _;
        if options == TxOptions::default() {
            return begin_plain(self).await;
        }
        if let Some(level) = options.isolation {
            // Applies to the next transaction only.
            self.batch_execute(&format!("SET TRANSACTION ISOLATION LEVEL {}", level.sql()))
                .await?;
        }
        let sql = if options.read_only {
            "START TRANSACTION READ ONLY"
        } else {
            "START TRANSACTION"
        };
        Ok(diesel_async::AnsiTransactionManager::begin_transaction_sql(self, sql).await?)
    }
}

/// The pooled SQLite connection: diesel's synchronous `SqliteConnection`
/// run on tokio's blocking pool by diesel-async's `SyncConnectionWrapper`.
///
/// Every new connection runs `PRAGMA busy_timeout = 5000` (writers wait
/// for each other instead of failing with "database is locked"),
/// `PRAGMA foreign_keys = ON` and, for files, `PRAGMA journal_mode = WAL`
/// (readers do not block the writer).
#[cfg(feature = "sqlite")]
pub type SqliteConnection =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

/// A SQLite pool's database: the file path or `file:` URI of its URL.
#[cfg(feature = "sqlite")]
#[doc(hidden)]
#[derive(Debug)]
pub struct SqlitePath(String);

#[cfg(feature = "sqlite")]
impl Connect<SqliteConnection> for SqlitePath {
    fn new(url: &str) -> Result<Self, String> {
        Ok(Self(
            url.strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url)
                .to_owned(),
        ))
    }

    /// SQLite has no server to wait for: `query_timeout` does not apply.
    async fn connect(&self, _: Option<Arc<RoundTrip>>) -> Result<SqliteConnection, String> {
        SqliteConnection::establish(&self.0)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(feature = "sqlite")]
impl sealed::Sealed for SqliteConnection {}
#[cfg(feature = "sqlite")]
impl DbConnection for SqliteConnection {
    const BACKEND: &'static str = "sqlite";
    const SETUP_SQL: Option<&'static str> =
        Some("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;");
    // Switching the journal mode needs the database to itself: done once,
    // while the pool's other connections wait (it persists in the file).
    const FIRST_SETUP_SQL: Option<&'static str> = Some("PRAGMA journal_mode = WAL;");

    type Connector = SqlitePath;

    /// SQLite transactions are always serializable, so any isolation level
    /// is met; read-only transactions do not exist.
    async fn begin(&mut self, options: TxOptions) -> Result<(), DbError> {
        if options.read_only {
            return Err(DbError::Unsupported {
                backend: "sqlite",
                option: "read-only transactions; drop `TxOptions::read_only` for this route",
            });
        }
        begin_plain(self).await
    }
}

/// The backend of a SQL pool of connection type `C`.
#[doc(hidden)]
pub struct Diesel<C: DbConnection> {
    connector: C::Connector,
    first_setup: tokio::sync::OnceCell<()>,
    _conn: PhantomData<fn() -> C>,
}

impl<C: DbConnection> std::fmt::Debug for Diesel<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diesel").finish_non_exhaustive()
    }
}

impl<C: DbConnection> Diesel<C> {
    /// The backend of a pool at `url`; the error says what is wrong with
    /// the URL.
    pub(crate) fn new(url: &str, transaction_pooling: bool) -> Result<Self, String> {
        let mut connector = C::Connector::new(url)?;
        if transaction_pooling {
            connector.transaction_pooling()?;
        }
        Ok(Self {
            connector,
            first_setup: tokio::sync::OnceCell::new(),
            _conn: PhantomData,
        })
    }
}

impl<C: DbConnection> Backend for Diesel<C> {
    type Connection = C;
    const CANCEL_SAFE: bool = C::CANCEL_SAFE;

    fn kind(&self) -> &'static str {
        C::BACKEND
    }

    async fn connect(&self, round_trip: Option<Arc<RoundTrip>>) -> Result<C, String> {
        let mut conn = self.connector.connect(round_trip).await?;
        if let Some(sql) = C::SETUP_SQL {
            conn.batch_execute(sql).await.map_err(|e| e.to_string())?;
        }
        if let Some(sql) = C::FIRST_SETUP_SQL {
            self.first_setup
                .get_or_try_init(|| conn.batch_execute(sql))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(conn)
    }

    async fn ping(&self, conn: &mut C) -> Result<(), String> {
        conn.batch_execute("SELECT 1")
            .await
            .map_err(|e| e.to_string())
    }

    fn is_broken(&self, conn: &mut C) -> bool {
        PoolableConnection::is_broken(conn)
    }

    async fn server_info(&self, _conn: &mut C) -> Option<BTreeMap<String, String>> {
        self.connector
            .transport()
            .map(|tls| BTreeMap::from([("tls".to_owned(), tls)]))
    }
}
