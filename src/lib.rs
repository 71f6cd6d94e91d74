//! # axum-pools
//!
//! Connection pools as a first-class part of an axum/tower service. Put one
//! [`PoolLayer`] on the router, take a [`DbConn`] in a handler, and get:
//!
//! - acquisition bounded by `acquire_timeout`, answered **503 with
//!   `Retry-After`** (RFC 9457 problem+json) instead of hanging or 500;
//! - load shedding (`max_waiting`) and a draining shutdown that refuses new
//!   leases while the ones in use finish;
//! - validation without a round trip per checkout (a ping only after the
//!   connection sat idle past `alive_bypass_window`), `max_lifetime` with
//!   jitter, idle reaping, `min_size` kept warm;
//! - exact lock-free stats with a bounded wait histogram, periodic cached
//!   health checks, and a router serving both;
//! - no password in any log line, error, or response.
//!
//! Pools are diesel-async connections over deadpool.
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use axum_pools::{DbConfig, DbConn, PoolError, PoolLayer, PoolManager, SqliteConnection};
//! use diesel::{sql_types::Integer, IntoSql};
//! use diesel_async::RunQueryDsl;
//!
//! async fn answer(mut db: DbConn<SqliteConnection>) -> Result<Json<i32>, PoolError> {
//!     let n = diesel::select(42.into_sql::<Integer>()).get_result(&mut db).await.expect("query");
//!     Ok(Json(n))
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PoolManager::builder()
//!     .database::<SqliteConnection>("main", DbConfig::from_url("app.db").max_size(8))
//!     .build()
//!     .await?; // validates, opens, health-checks; an error names the pool
//!
//! let app = Router::new()
//!     .route("/answer", get(answer))
//!     .merge(manager.router()) // /pools/health, /pools/stats
//!     .layer(PoolLayer::new(manager.clone()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(manager.drain_on(async { let _ = tokio::signal::ctrl_c().await; }))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Several pools of one kind
//!
//! `DbConn<C>` leases from the only pool of connection type `C`. With several
//! (a primary and a replica, two Redis databases), a marker type names the
//! pool, and [`PoolManagerBuilder::require`] checks at build time that every
//! pool a handler names exists:
//!
//! ```
//! use axum::{Router, routing::get};
//! use axum_pools::{DbConfig, DbConn, PoolLayer, PoolManager, SqliteConnection, pool_name};
//!
//! pool_name!(Primary = "primary");
//! pool_name!(Replica = "replica");
//!
//! async fn write(db: DbConn<SqliteConnection, Primary>) -> String { db.pool_name().to_owned() }
//! async fn read(db: DbConn<SqliteConnection, Replica>) -> String { db.pool_name().to_owned() }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), axum_pools::PoolError> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
//! # let (primary_url, replica_url) = (a.display().to_string(), b.display().to_string());
//! let manager = PoolManager::builder()
//!     .database::<SqliteConnection>("primary", DbConfig::from_url(primary_url))
//!     .database::<SqliteConnection>("replica", DbConfig::from_url(replica_url))
//!     .require::<DbConn<SqliteConnection, Primary>>()
//!     .require::<DbConn<SqliteConnection, Replica>>()
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/write", get(write))
//!     .route("/read", get(read))
//!     .layer(PoolLayer::new(manager.clone()));
//!
//! // `DbConn<SqliteConnection>` without a marker would be ambiguous here: a
//! // 500 naming both pools (and an error at build, were it `require`d).
//! let err = axum_pools::DbConn::<SqliteConnection>::acquire(&manager).await.unwrap_err();
//! assert!(err.to_string().contains("(primary, replica)"));
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `sqlite` | yes | `SqliteConnection` pools (bundled SQLite, no system library) |
//! | `postgres` | no | `diesel_async::AsyncPgConnection` pools |
//! | `mysql` | no | `diesel_async::AsyncMysqlConnection` pools (MySQL, MariaDB) |
//! | `redis` | no | Redis pools and the `RedisConn` extractor |
//! | `http` | no | outbound HTTP pools (hyper, tower, tower-http) and the `HttpClient` extractor |
//! | `test-util` | no | for dev-dependencies: connection ageing (idle for, lifetime, hold time, leak watch) follows tokio's clock, so tests that pause and advance time see it; also enables `tokio/test-util` |
//!
//! ## What answers what
//!
//! | situation | answer |
//! |---|---|
//! | no connection free within `acquire_timeout` | 503, `Retry-After: 1`, counted in `timeouts` |
//! | `max_waiting` requests already waiting | 503 at once, `Retry-After: 1`, counted in `shed` |
//! | the pool's circuit breaker is open | 503 at once, `Retry-After` = seconds to half-open |
//! | backend unreachable / connection fails | 503, `Retry-After: 1`, counted in `backend_errors` |
//! | manager draining or closed | 503 "shutting down", `Retry-After: 5` |
//! | extractor without `PoolLayer`, unknown or ambiguous pool | 500 naming the fix |
//! | invalid config or URL at build | `Err` naming pool and field; URL redacted |
//!
//! ## Architecture
//!
//! One request's path, and the folder that owns each step:
//!
//! 1. [`layer`] — [`PoolLayer`] makes the manager reachable from the
//!    request's task (no allocation on routes that never lease).
//! 2. [`extract`] — the one extractor shape, [`Pooled`](extract::Pooled),
//!    finds the pool a [`PoolSelector`] names and asks it for a lease;
//!    every extractor rejects with a [`LeaseRejection`].
//! 3. [`manager`] — the registry of named pools, their build, background
//!    tasks (health, reaping, breaker windows, leak scans) and drain.
//! 4. `pool/` (private) — the backend-agnostic core: the acquire fast and
//!    slow paths, the lease guard, its clock, leak watch, hooks and
//!    maintenance. It knows no backend and no cargo feature.
//! 5. [`backend`] — one folder per backend (`diesel`, `redis`, `http`),
//!    each owning its config, extractors, errors and stats extras; the
//!    feature gates sit at these folders.
//!
//! And back: the handler's lease returns to the pool when dropped (end of
//! handler, panic, cancelled request), and the layer finishes what the
//! request left (a [`DbTx`]'s commit or rollback) by the response's status.
//!
//! Around that path: [`breaker`] (one state machine for the pools' breakers
//! and [`CircuitBreakerLayer`]), [`rate_limit`] ([`RateLimitLayer`], local or
//! on Redis), [`routes`] (health, stats, metrics, OpenAPI and its docs page),
//! `problem` (the one builder of RFC 9457 answers with `Retry-After`),
//! [`stats`], [`health`], [`config`], [`secret`] (a pool's URL as a
//! [`ConnectionUrl`], its passwords and tokens held as secrets) and
//! [`redact`] (the backstop that scrubs driver messages).
//!
//! MSRV: Rust 1.88.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod backend;
pub mod breaker;
pub mod config;
pub mod error;
pub mod extract;
pub mod health;
mod histogram;
pub mod layer;
pub mod manager;
mod pool;
mod problem;
pub mod rate_limit;
pub mod redact;
pub mod routes;
pub mod secret;
pub mod stats;
#[cfg(feature = "tls")]
// Only Postgres takes every verification mode; without it (or alone) some
// of the stack goes unused.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
mod tls;

/// The diesel crate the SQL pools are built on, for the query DSL in
/// handlers (`axum_pools::diesel::select(..)`). Its derives and `table!`
/// expand to `diesel::` paths: a crate using them adds `diesel` itself, at
/// this version (see README, "Dependencies").
pub use diesel;
/// diesel-async, whose `RunQueryDsl` runs queries on a [`DbConn`].
pub use diesel_async;
/// The redis crate behind [`RedisConn`] (feature `redis`), for
/// `redis::AsyncCommands` and `redis::cmd`, as deadpool-redis re-exports it.
#[cfg(feature = "redis")]
pub use redis;

#[cfg(feature = "sqlite")]
pub use crate::backend::diesel::SqliteConnection;
#[cfg(feature = "http")]
pub use crate::backend::http::{
    ConnectionGuard, HttpBody, HttpClient, HttpConfig, HttpError, HttpResponse, RequestBuilder,
};
#[cfg(feature = "redis")]
pub use crate::backend::redis::{RedisConfig, RedisConn, RedisConnection};
pub use crate::{
    backend::diesel::{DbConfig, DbConn, DbConnection, DbError, DbTx, IsolationLevel, TxOptions},
    breaker::{
        BreakerState, BreakerStats, CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer,
        Classify, ServerErrors,
    },
    config::{BreakerConfig, ConfigError, PoolConfig},
    error::{BackendError, PoolError},
    extract::{ByType, LeaseRejection, PoolSelector, PrepareFailed, RequiresPool},
    health::{HealthCheck, HealthDetails, HealthReport, HealthStatus, PoolHealth},
    layer::{PoolLayer, PoolService, ResponseFuture},
    manager::{DrainReport, PoolManager, PoolManagerBuilder},
    pool::hooks::{ConnectionHook, Hooks, LeaseHook, Leased, ReleaseHook, Released},
    rate_limit::{FailPolicy, KeyBy, RateLimitLayer, TrustedProxies},
    redact::{Redactor, redact_url},
    secret::{ConnectionUrl, ExposeSecret, SecretString},
    stats::{HttpStats, StatsSnapshot, WaitStats},
};
