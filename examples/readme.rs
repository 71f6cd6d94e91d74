//! Every Rust snippet of README.md, word for word, in the context it needs
//! to compile (imports, the handlers it names, a listener), so a snippet
//! cannot rot: `tests/readme.rs` checks that each README snippet is here,
//! and CI builds this file (`cargo test --all-targets`, clippy). Running it
//! does nothing.
//!
//! ```sh
//! cargo build --example readme --features postgres,redis,http
//! ```
// The snippets define handlers for the reader to see, not to route here,
// and a few bindings they do not use.
#![allow(dead_code, unused_variables)]

use std::time::Duration;

use axum::{
    Json, Router,
    http::StatusCode,
    routing::{get, post},
};
use axum_pools::{
    DbConfig, DbConn, DbError, DbTx, HttpClient, HttpConfig, HttpError, KeyBy, PoolLayer,
    PoolManager, RateLimitLayer, RedisConfig, RedisConn, diesel,
    diesel::{ExpressionMethods, QueryDsl},
    diesel_async::{AsyncPgConnection, RunQueryDsl},
    pool_name,
};
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

diesel::table! {
    /// The table the snippets store notes in.
    notes (id) {
        /// The note's id.
        id -> Int4,
        /// The note's title.
        title -> Text,
    }
}

async fn list_notes(mut db: DbConn<AsyncPgConnection>) -> Result<Json<Vec<String>>, DbError> {
    let titles = notes::table.select(notes::title).load(&mut *db).await?;
    Ok(Json(titles))
}

async fn search() -> &'static str {
    "results"
}

// Not formatted: each item holds a README snippet as the README shows it.
#[rustfmt::skip]
mod snippets {
    use super::*;

    /// README: the first snippet.
    async fn quick_start(url: &str, listener: tokio::net::TcpListener) -> Result<(), Error> {
        let manager = PoolManager::builder()
            .database::<AsyncPgConnection>("primary", DbConfig::from_url(url).max_size(16))
            .build()
            .await?;                                  // validates, opens, checks; errors name the pool
        let app = Router::new()
            .route("/notes", get(list_notes))         // async fn list_notes(mut db: DbConn<AsyncPgConnection>) ..
            .merge(manager.router())                  // /pools/health, /stats, /metrics, /openapi.json, /docs
            .layer(PoolLayer::new(manager.clone()));
        let shutdown = manager.drain_on(async { tokio::signal::ctrl_c().await.ok(); });
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }

    /// README: `PoolLayer` around the whole router.
    async fn whole_router(
        manager: PoolManager,
        router: Router,
        listener: tokio::net::TcpListener,
    ) -> Result<(), Error> {
        use tower::Layer;
        let app = PoolLayer::new(manager.clone()).layer(router.with_state(())); // handlers made routes once
        axum::serve(listener, axum::ServiceExt::<axum::extract::Request>::into_make_service(app)).await?;
        Ok(())
    }

    /// The snippets' handler that `main` routes.
    pub(super) fn routes() -> Router {
        Router::new().route("/notes", post(add_notes))
    }

    // README: "Transactions".
    async fn add_notes(mut tx: DbTx<AsyncPgConnection>, Json(titles): Json<Vec<String>>)
        -> Result<StatusCode, DbError> {
        for title in titles {
            diesel::insert_into(notes::table).values(notes::title.eq(title)).execute(&mut *tx).await?;
        } // an Err, or any answer but 2xx/3xx, rolls every insert back
        Ok(StatusCode::CREATED)
    }

    /// README: "Redis".
    async fn redis_pool() -> Result<Router, Error> {
        use axum_pools::redis::AsyncCommands; // the redis crate, re-exported
        let manager = PoolManager::builder()
            .redis("cache", RedisConfig::from_url("redis://127.0.0.1:6379/0"))
            .build().await?;
        async fn hits(mut redis: RedisConn) -> String { redis.incr::<_, _, i64>("hits", 1).await.unwrap().to_string() }
        Ok(Router::new().route("/hits", get(hits)).layer(PoolLayer::new(manager)))
    }

    /// README: "Outbound HTTP".
    async fn http_pool() -> Result<Router, Error> {
        pool_name!(Billing = "billing");
        let manager = PoolManager::builder()
            .http("billing", HttpConfig::new("http://billing.internal:8080").max_size(32).retries(2))
            .build().await?;
        async fn invoice(billing: HttpClient<Billing>) -> Result<Json<Value>, HttpError> {
            Ok(Json(billing.get("/invoices/1").send().await?.json().await?))
        }
        Ok(Router::new().route("/invoice", get(invoice)).layer(PoolLayer::new(manager)))
    }

    /// README: "Rate limiting".
    fn rate_limited() -> Result<Router, Error> {
        let app = Router::new()
            .route("/search", get(search))
            .layer(RateLimitLayer::new(10, Duration::from_secs(1)).burst(20)
                .key(KeyBy::client_ip(["10.0.0.0/8"])?));
        Ok(app)
    }

    /// README: "Behind PgBouncer".
    fn behind_pgbouncer() -> DbConfig {
        let config = DbConfig::from_url("postgres://app:secret@pgbouncer:6432/app")
            .transaction_pooling(true); // or DB_TRANSACTION_POOLING=true with .knobs_from_env("DB")
        config
    }

    // README: "Several pools".
    axum_pools::pool_name!(Replica = "replica");
    async fn report(db: DbConn<AsyncPgConnection, Replica>) { /* .. */ }
}

fn main() {
    // Compiled, not run: the snippets need servers. The routes they make:
    let _ = snippets::routes();
}
