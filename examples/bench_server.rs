//! The load-benchmark app: the peers' three routes served through
//! axum-pools (see `scripts/bench-http.sh`).
//!
//! | route | does |
//! |---|---|
//! | `GET /db` | `DbConn<AsyncPgConnection>`, `SELECT 1` through diesel, returns `1` |
//! | `GET /redis` | `RedisConn`, `PING`, returns `PONG` |
//! | `GET /http` | `HttpClient` `GET` of the upstream's `/plain`, returns its body |
//! | `GET /plain` | returns `ok` |
//! | `GET /mysql` | with feature `mysql` and `MYSQL_URL` set: `SELECT 1` on MySQL/MariaDB |
//!
//! Env: `DATABASE_URL`, `REDIS_URL` (required), `UPSTREAM_URL` (the base URL
//! of `/http`'s upstream, e.g. `http://127.0.0.1:3007`; unset, there is no
//! HTTP pool and `/http` answers 500), `BIND` (`127.0.0.1:3003`),
//! `POOL_MAX` (16, every pool), `LAYER` (`router` puts `PoolLayer` on the
//! router with `Router::layer`, `none` leaves it out so only `/plain`
//! works; by default it wraps the whole router). Every pool knob is read
//! from the environment over those defaults, prefixed `DB_`, `REDIS_` and
//! `HTTP_` (`DB_QUERY_TIMEOUT=1s DB_ACQUIRE_TIMEOUT=2s DB_MAX_SIZE=8`; see
//! `PoolConfig::from_env`). `RUST_LOG` turns logging on (off by default).
//!
//! The benchmark scripts build it through the `benchmarks` package
//! (`cargo build --release -p benchmarks`, binary `target/release/bench_server`):
//! as an example it would get this crate's dev-dependencies, tokio's
//! `test-util` clock among them, which no production binary has.

#![allow(missing_docs)]

use axum::{Router, ServiceExt, routing::get};
use axum_pools::{
    DbConfig, DbConn, DbError, HttpClient, HttpConfig, HttpError, PoolError, PoolLayer,
    PoolManager, RedisConfig, RedisConn,
};
use diesel::{IntoSql, sql_types::Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tower::Layer;

async fn db(mut db: DbConn<AsyncPgConnection>) -> Result<String, DbError> {
    let one: i32 = diesel::select(1.into_sql::<Integer>())
        .get_result(&mut db)
        .await?;
    Ok(one.to_string())
}

/// `GET /mysql`: the same `SELECT 1` on MySQL/MariaDB (feature `mysql`,
/// `MYSQL_URL` set, knobs `MYSQL_*`).
#[cfg(feature = "mysql")]
async fn mysql(mut db: DbConn<diesel_async::AsyncMysqlConnection>) -> Result<String, DbError> {
    let one: i32 = diesel::select(1.into_sql::<Integer>())
        .get_result(&mut db)
        .await?;
    Ok(one.to_string())
}

async fn redis_ping(mut redis: RedisConn) -> Result<String, PoolError> {
    Ok(redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .unwrap_or_else(|e| e.to_string()))
}

async fn http(upstream: HttpClient) -> Result<String, HttpError> {
    upstream.get("/plain").send().await?.text().await
}

async fn plain() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Silent unless asked (`RUST_LOG=warn`): logging costs the benchmark.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let pool_max: usize = std::env::var("POOL_MAX")
        .unwrap_or_else(|_| "16".into())
        .parse()?;
    let mut builder = PoolManager::builder()
        .database::<AsyncPgConnection>(
            "db",
            DbConfig::from_url(env("DATABASE_URL")?)
                .max_size(pool_max)
                .knobs_from_env("DB")?,
        )
        .redis(
            "redis",
            RedisConfig::from_url(env("REDIS_URL")?)
                .max_size(pool_max)
                .knobs_from_env("REDIS")?,
        );
    if let Ok(upstream) = std::env::var("UPSTREAM_URL") {
        let config = HttpConfig::new(upstream)
            .max_size(pool_max)
            .knobs_from_env("HTTP")?;
        builder = builder.http("upstream", config);
    }
    #[cfg(feature = "mysql")]
    if let Ok(url) = std::env::var("MYSQL_URL") {
        let config = DbConfig::from_url(url)
            .max_size(pool_max)
            .knobs_from_env("MYSQL")?;
        builder = builder.database::<diesel_async::AsyncMysqlConnection>("mysql", config);
    }
    let manager = builder.build().await?;
    let app = Router::new();
    #[cfg(feature = "mysql")]
    let app = app.route("/mysql", get(mysql));
    let app = app
        .route("/db", get(db))
        .route("/redis", get(redis_ping))
        .route("/http", get(http))
        .route("/plain", get(plain))
        .merge(manager.router());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3003".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("bench_server listening on {bind} (POOL_MAX={pool_max})");
    let shutdown = manager.drain_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    let layer = PoolLayer::new(manager.clone());
    let placement = std::env::var("LAYER").unwrap_or_default();
    if placement == "none" {
        // No PoolLayer: only routes that never lease answer (the baseline
        // of the layer's own cost on `/plain`).
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
    } else if placement == "router" {
        // `Router::layer`: every route wrapped in a boxed service cloned per
        // request, a cost axum charges for any layer placed this way.
        let app = app.layer(layer);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
    } else {
        // Around the whole router: the layer's own cost only.
        // `with_state(())` turns the handlers into routes once, as
        // `axum::serve(listener, router)` would; without it the router
        // would do that again for every request.
        let app = layer.layer(app.with_state::<()>(()));
        let app = ServiceExt::<axum::extract::Request>::into_make_service(app);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
    }
    Ok(())
}
