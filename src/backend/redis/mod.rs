//! Redis pools (feature `redis`): `redis` 1.x multiplexed connections, each
//! leased to one handler at a time.
//!
//! No `PING` on every checkout (deadpool-redis pipelines `UNWATCH` + `PING` on
//! each one): like the SQL pools, a connection idle longer than
//! `alive_bypass_window` is pinged, a recently used one is not. What the last
//! user left behind is tracked as commands go out and undone before the next
//! user gets the connection:
//!
//! | left behind | before reuse |
//! |---|---|
//! | `MULTI` without `EXEC`/`DISCARD` | `DISCARD` |
//! | `WATCH` without `EXEC`/`DISCARD`/`UNWATCH` | `UNWATCH` |
//! | `SELECT` of another database | `SELECT` of the pool's database |
//! | `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`, `MONITOR`, `CLIENT REPLY`, `AUTH`, `HELLO`, `RESET`, `QUIT` | the connection is discarded |
//! | an I/O error or a dropped connection | the connection is discarded |
//!
//! URLs: `redis://[user][:password@]host[:port][/db]` and `redis+unix://`.
//! `rediss://host:port/db` speaks TLS (the crate's one stack, rustls with
//! `ring`), checking the server's certificate and host name against the
//! platform's roots (`SSL_CERT_FILE` honoured), or against the CA file that
//! `?sslrootcert=/path/ca.pem` names instead; `?sslcert=…&sslkey=…` (PEM)
//! present a client certificate to a server started with
//! `tls-auth-clients yes`. These parameters are taken out of the URL before
//! the redis crate sees it. Stats show `tls`: `on` or `off`.

use std::{collections::BTreeMap, sync::Arc};

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cmd,
};

mod config;
mod conn;

pub use self::{config::RedisConfig, conn::RedisConn};
use crate::{
    manager::PoolManagerBuilder,
    pool::{Backend, RoundTrip, hooks::Hooks},
    tls,
};

impl PoolManagerBuilder {
    /// Registers a Redis pool called `name` (feature `redis`); handlers take
    /// [`RedisConn`](crate::RedisConn).
    ///
    /// ```no_run
    /// use axum_pools::{PoolManager, RedisConfig};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .redis("cache", RedisConfig::from_url("redis://127.0.0.1:6379/0").max_size(16))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn redis(self, name: impl Into<String>, config: RedisConfig) -> Self {
        let RedisConfig { url, pool } = config;
        self.register(name.into(), Redis::new(&url), &url, pool, Hooks::new())
    }
}

/// A pooled Redis connection: `redis`'s multiplexed connection plus the
/// state its user may leave behind (see the [module docs](self)).
/// Use it with [`redis::AsyncCommands`] or `cmd(..).query_async(&mut *conn)`.
///
/// ```no_run
/// use axum_pools::RedisConn;
/// use redis::AsyncCommands;
///
/// async fn visits(mut redis: RedisConn) -> Result<String, axum_pools::PoolError> {
///     let n: i64 = redis.incr("visits", 1).await.expect("INCR");
///     Ok(n.to_string())
/// }
/// ```
pub struct RedisConnection {
    inner: MultiplexedConnection,
    /// The database the pool's URL names.
    home_db: i64,
    /// The database selected now (`None`: unknown, reset it).
    db: Option<i64>,
    multi: bool,
    watch: bool,
    /// In a state no command can undo: discard.
    poisoned: bool,
    /// The pool's `query_timeout` watch, fired when a command times out.
    round_trip: Option<Arc<RoundTrip>>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("db", &self.db)
            .field("multi", &self.multi)
            .field("watch", &self.watch)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    fn new(inner: MultiplexedConnection, db: i64, round_trip: Option<Arc<RoundTrip>>) -> Self {
        Self {
            inner,
            home_db: db,
            db: Some(db),
            multi: false,
            watch: false,
            poisoned: false,
            round_trip,
        }
    }

    fn dirty(&self) -> bool {
        self.multi || self.watch || self.db != Some(self.home_db)
    }

    /// Notes what `cmd` does to the connection's state before it is sent.
    fn track(&mut self, cmd: &Cmd) {
        let mut args = cmd.args_iter().filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        });
        let Some(name) = args.next() else { return };
        let is = |word: &str| name.eq_ignore_ascii_case(word.as_bytes());
        if is("MULTI") {
            self.multi = true;
        } else if is("EXEC") || is("DISCARD") {
            self.multi = false;
            self.watch = false;
        } else if is("WATCH") {
            self.watch = true;
        } else if is("UNWATCH") {
            self.watch = false;
        } else if is("SELECT") {
            self.db = args
                .next()
                .and_then(|db| std::str::from_utf8(db).ok()?.parse().ok());
        } else if is("CLIENT") {
            if args
                .next()
                .is_some_and(|sub| sub.eq_ignore_ascii_case(b"REPLY"))
            {
                self.poisoned = true;
            }
        } else if [
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "MONITOR",
            "AUTH",
            "HELLO",
            "RESET",
            "QUIT",
        ]
        .iter()
        .any(|w| is(w))
        {
            self.poisoned = true;
        }
    }

    fn note_error(&mut self, e: &redis::RedisError) {
        if e.is_timeout() {
            // The answer may still come, to whatever is sent next.
            self.poisoned = true;
            if let Some(round_trip) = &self.round_trip {
                round_trip.fire();
            }
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            self.poisoned = true;
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.track(cmd);
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.note_error(e);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        for cmd in pipeline.cmd_iter() {
            self.track(cmd);
        }
        Box::pin(async move {
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Err(e) = &result {
                self.note_error(e);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.db.unwrap_or(self.home_db)
    }
}

/// The backend of a Redis pool.
#[doc(hidden)]
pub struct Redis {
    client: redis::Client,
    db: i64,
    tls: bool,
}

/// Takes the TLS file parameters (`sslrootcert`, `sslcert`, `sslkey`) out
/// of a Redis URL's query.
fn take_tls_files(url: &str) -> (String, tls::Files) {
    let mut files = tls::Files::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), files);
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslrootcert" => &mut files.ca,
            "sslcert" => &mut files.cert,
            "sslkey" => &mut files.key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
                .into(),
        );
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, files)
}

/// The certificates to build the client with, read from `files`; `None`
/// without any file.
fn certificates(files: &tls::Files) -> Result<Option<redis::TlsCertificates>, String> {
    let client_tls = match files.identity(["sslcert", "sslkey"])? {
        None => None,
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: tls::read("sslcert", cert)?,
            client_key: tls::read("sslkey", key)?,
        }),
    };
    let root_cert = match &files.ca {
        Some(ca) => Some(tls::read("sslrootcert", ca)?),
        None => None,
    };
    Ok(
        (client_tls.is_some() || root_cert.is_some()).then_some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// Not derived: the client holds the password.
impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Parses `url`; the error is redis' own message (it never echoes the
    /// password).
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let (url, files) = take_tls_files(url);
        let encrypted = url.starts_with("rediss://");
        if encrypted {
            tls::install_default_provider();
        }
        let client = match certificates(&files)? {
            None => redis::Client::open(url.as_str()),
            Some(_) if !encrypted => {
                return Err("sslrootcert, sslcert and sslkey need a rediss:// URL".to_owned());
            }
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
        }
        .map_err(|e| e.to_string())?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(Self {
            client,
            db,
            tls: encrypted,
        })
    }
}

impl Backend for Redis {
    fn type_name() -> &'static str {
        "redis::aio::MultiplexedConnection"
    }

    type Connection = RedisConnection;

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn connect(&self, round_trip: Option<Arc<RoundTrip>>) -> Result<RedisConnection, String> {
        // Without `query_timeout` the redis crate's own response timeout
        // (500 ms) stays.
        let mut config = redis::AsyncConnectionConfig::new();
        if let Some(round_trip) = &round_trip {
            config = config.set_response_timeout(Some(round_trip.limit()));
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| match tls::reason(&e) {
                Some(reason) => reason,
                None => e.to_string(),
            })?;
        Ok(RedisConnection::new(conn, self.db, round_trip))
    }

    async fn ping(&self, conn: &mut RedisConnection) -> Result<(), String> {
        let pong: String = cmd("PING")
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    }

    fn is_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.poisoned
    }

    fn needs_reset(&self, conn: &RedisConnection) -> bool {
        conn.dirty()
    }

    async fn reset(&self, conn: &mut RedisConnection) -> Result<(), String> {
        let mut pipe = redis::pipe();
        if conn.multi {
            pipe.cmd("DISCARD").ignore(); // also forgets WATCHed keys
        } else if conn.watch {
            pipe.cmd("UNWATCH").ignore();
        }
        if conn.db != Some(conn.home_db) {
            pipe.cmd("SELECT").arg(conn.home_db).ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| e.to_string())?;
        // The pipeline's own commands were tracked: the state is clean again.
        debug_assert!(!conn.dirty());
        Ok(())
    }

    async fn server_info(&self, conn: &mut RedisConnection) -> Option<BTreeMap<String, String>> {
        let info: String = cmd("INFO")
            .arg("server")
            .arg("clients")
            .query_async(conn)
            .await
            .ok()?;
        let wanted = [
            "redis_version",
            "redis_mode",
            "connected_clients",
            "maxclients",
        ];
        let mut facts: BTreeMap<String, String> = info
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        facts.insert(
            "tls".to_owned(),
            if self.tls { "on" } else { "off" }.to_owned(),
        );
        Some(facts)
    }
}
