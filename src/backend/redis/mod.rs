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
//!
//! **Redis Cluster**: `redis+cluster://[user][:password@]h1:p1,h2:p2,h3:p3/`
//! (`rediss+cluster://` with TLS) names nodes to start from; each lease is
//! then a cluster connection (the redis crate's `cluster-async`) that routes
//! every command to the node owning its key's slot and follows `MOVED` and
//! `ASK`. A pipeline goes to one node: its keys must share a slot (a
//! cross-slot error says when they do not), as must an atomic pipeline's
//! (`redis::pipe().atomic()`, the way to run `MULTI`/`EXEC` there). `MULTI`,
//! `WATCH` and `SELECT` sent as separate commands are refused with an error
//! saying so, and a database other than 0 in the URL fails the build. The
//! stats show the cluster's state, slots, and masters and replicas.
//!
//! **Sentinel**: `redis+sentinel://[user][:password@]s1:p1,s2:p2/name[/db]`
//! (port 26379 when none is given; `rediss+sentinel://` when the sentinels
//! and the master speak TLS, with the same `sslrootcert`/`sslcert`/`sslkey`)
//! asks the sentinels for the master called `name` on each new connection.
//! The health report (`topology`) and the stats show the cluster's nodes or
//! the master's name, its address and the failovers seen.

use std::{collections::BTreeMap, sync::Arc};

use redis::cmd;

mod cluster;
mod config;
mod conn;
mod connection;
mod sentinel;
mod url;

pub use self::{config::RedisConfig, conn::RedisConn, connection::RedisConnection};
use self::{
    connection::Link,
    url::{certificates, take_tls_files},
};
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
        let name = name.into();
        let backend = Redis::new(&name, url.expose_secret());
        self.register(name, backend, &url, pool, Hooks::new())
    }
}

/// The backend of a Redis pool.
#[doc(hidden)]
pub struct Redis {
    /// The pool's name, for the logs.
    name: String,
    client: Client,
    db: i64,
    tls: bool,
    /// A cluster's topology as the last health check saw it.
    cluster_topology: std::sync::Mutex<Option<BTreeMap<String, String>>>,
}

/// How a pool reaches Redis (boxed: made once per pool, and the two
/// differ in size by hundreds of bytes).
enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
    Sentinel(Box<sentinel::Sentinels>),
}

/// The response timeout of a connection without `query_timeout`: the
/// redis crate's default for one server (its cluster client has none).
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

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
    pub(crate) fn new(name: &str, url: &str) -> Result<Self, String> {
        let (url, files) = take_tls_files(url);
        // `rediss://`, `rediss+cluster://` and `rediss+sentinel://`.
        let encrypted = url.starts_with("rediss://") || url.starts_with("rediss+");
        let certs = certificates(&files)?;
        if certs.is_some() && !encrypted {
            return Err(NEEDS_TLS.to_owned());
        }
        if encrypted {
            tls::install_default_provider();
        }
        let (client, db) = if let Some(sentinels) = sentinel::Sentinels::parse(&url, certs.clone())?
        {
            let db = sentinels.db;
            (Client::Sentinel(Box::new(sentinels)), db)
        } else if let Some(nodes) = cluster::cluster_nodes(&url)? {
            let mut builder =
                redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str));
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(|e| format!("url: {e}"))?;
            (Client::Cluster(Box::new(client)), 0)
        } else {
            let client = match certs {
                None => redis::Client::open(url.as_str()),
                Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
            }
            .map_err(|e| format!("url: {e}"))?;
            let db = client.get_connection_info().redis_settings().db();
            (Client::Single(Box::new(client)), db)
        };
        Ok(Self {
            name: name.to_owned(),
            client,
            db,
            tls: encrypted,
            cluster_topology: std::sync::Mutex::default(),
        })
    }
}

const NEEDS_TLS: &str = "sslrootcert, sslcert and sslkey need a rediss:// URL \
     (rediss+cluster:// for a cluster, rediss+sentinel:// behind Sentinel)";

impl Backend for Redis {
    fn type_name() -> &'static str {
        "redis::aio::MultiplexedConnection"
    }

    type Connection = RedisConnection;

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn connect(&self, round_trip: Option<Arc<RoundTrip>>) -> Result<RedisConnection, String> {
        let explain = |e: redis::RedisError| match tls::reason(&e) {
            Some(reason) => reason,
            None => e.to_string(),
        };
        let config = one_server(&round_trip);
        let link = match &self.client {
            Client::Single(client) => {
                let conn = client.get_multiplexed_async_connection_with_config(&config);
                Link::Single(conn.await.map_err(explain)?)
            }
            Client::Sentinel(sentinels) => {
                let client = sentinels.master(&self.name).await.map_err(explain)?;
                let conn = client.get_multiplexed_async_connection_with_config(&config);
                Link::Single(conn.await.map_err(explain)?)
            }
            Client::Cluster(client) => {
                let limit = round_trip.as_ref().map_or(RESPONSE_TIMEOUT, |r| r.limit());
                let cluster = redis::cluster::ClusterConfig::new().set_response_timeout(limit);
                let conn = client.get_async_connection_with_config(cluster);
                Link::Cluster(conn.await.map_err(explain)?)
            }
        };
        Ok(RedisConnection::new(link, self.db, round_trip))
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

    /// Behind Sentinel: the master's name, the master the last connection
    /// went to, and the changes of master seen, as they are now.
    fn fill_stats(&self, snapshot: &mut crate::stats::StatsSnapshot) {
        if let Client::Sentinel(sentinels) = &self.client {
            snapshot.failovers = Some(sentinels.failovers());
            snapshot
                .server
                .get_or_insert_default()
                .extend(sentinels.facts());
        }
    }

    /// A cluster's state, slots and nodes (as the last check saw them);
    /// behind Sentinel the master's name, its address and the failovers.
    fn topology(&self) -> Option<BTreeMap<String, String>> {
        match &self.client {
            Client::Single(_) => None,
            Client::Cluster(_) => self
                .cluster_topology
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            Client::Sentinel(sentinels) => Some(sentinels.facts().into_iter().collect()),
        }
    }

    async fn server_info(&self, conn: &mut RedisConnection) -> Option<BTreeMap<String, String>> {
        let mut facts = match &self.client {
            Client::Single(_) => single_info(conn).await?,
            // The sentinel facts are added live, by `fill_stats`.
            Client::Sentinel(_) => single_info(conn).await?,
            Client::Cluster(_) => {
                let topology = cluster_info(conn).await?;
                *self
                    .cluster_topology
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(topology.clone());
                topology
            }
        };
        facts.insert(
            "tls".to_owned(),
            if self.tls { "on" } else { "off" }.to_owned(),
        );
        Some(facts)
    }
}

/// A one-server connection's config: the response timeout is
/// `query_timeout`, else the redis crate's own (500 ms).
fn one_server(round_trip: &Option<Arc<RoundTrip>>) -> redis::AsyncConnectionConfig {
    let config = redis::AsyncConnectionConfig::new();
    match round_trip {
        Some(round_trip) => config.set_response_timeout(Some(round_trip.limit())),
        None => config,
    }
}

/// What `INFO` says of one server.
async fn single_info(conn: &mut RedisConnection) -> Option<BTreeMap<String, String>> {
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
    Some(
        info.lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// The cluster's topology: its state and slots (`CLUSTER INFO`), and its
/// masters and replicas (`CLUSTER NODES`), asked of any node.
async fn cluster_info(conn: &mut RedisConnection) -> Option<BTreeMap<String, String>> {
    let info: String = cmd("CLUSTER").arg("INFO").query_async(conn).await.ok()?;
    let nodes: String = cmd("CLUSTER").arg("NODES").query_async(conn).await.ok()?;
    Some(cluster::topology(&info, &nodes))
}
