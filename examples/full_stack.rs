//! Full stack: Postgres + Redis + an upstream HTTP API behind one manager.
//!
//! ```sh
//! cargo run --example full_stack --all-features
//! curl -s localhost:3000/notes -H 'content-type: application/json' -d '{"title":"hello"}'
//! curl -si localhost:3000/notes | grep x-cache     # miss, then hit for 30 s, miss again after a POST
//! curl -s localhost:3000/quote
//! curl -s localhost:3000/pools/health             # primary (postgres), cache (redis), quotes (http)
//! ```
//!
//! | variable | default |
//! |---|---|
//! | `DATABASE_URL` | `postgres://test:test@127.0.0.1:5432/test` |
//! | `REDIS_URL` | `redis://127.0.0.1:6379/0` |
//! | `UPSTREAM_URL` | none: a tiny quote service is started on a free port |
//! | `BIND` | `127.0.0.1:3000` |
//! | `DB_*`, `REDIS_*`, `HTTP_*` | every pool knob of the three pools over the code's values (`DB_QUERY_TIMEOUT=500ms`, `REDIS_MAX_SIZE=4`, …; see `PoolConfig::from_env`) |
//!
//! The SQL and Redis pools bound each round trip (`query_timeout`, 2 s): a
//! database that hangs answers 504 instead of holding connections forever.
//!
//! `GET /notes` is cached in Redis for 30 s; `POST /notes` commits its
//! transaction first, then invalidates the cache, so no reader can cache the
//! old list after the write. Ctrl-C drains every pool and exits 0.

#![allow(missing_docs, unreachable_pub)]

use std::time::Duration;

use axum::{
    Json, Router,
    http::{HeaderName, StatusCode},
    response::IntoResponse,
    routing::get,
};
use axum_pools::{
    DbConfig, DbConn, DbError, DbTx, HttpClient, HttpConfig, HttpError, PoolError, PoolLayer,
    PoolManager, RedisConfig, RedisConn, pool_name,
};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

diesel::table! {
    full_stack_notes (id) {
        id -> Integer,
        title -> Text,
    }
}

#[derive(Debug, Serialize, Deserialize, Queryable, Selectable, PartialEq)]
#[diesel(table_name = full_stack_notes)]
pub struct Note {
    pub id: i32,
    pub title: String,
}

#[derive(Deserialize)]
struct NewNote {
    title: String,
}

pool_name!(Quotes = "quotes");

const CACHE_KEY: &str = "full_stack:notes";
const CACHE_TTL_SECS: u64 = 30;
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

#[derive(Debug)]
pub struct Urls {
    pub database: String,
    pub redis: String,
    pub upstream: String,
}

/// Registers the three pools; the manager's build checks that every pool
/// the handlers name exists.
pub async fn manager(urls: &Urls) -> Result<PoolManager, PoolError> {
    let round_trip = Some(Duration::from_secs(2));
    let database = DbConfig::from_url(&urls.database)
        .max_size(16)
        .query_timeout(round_trip)
        .knobs_from_env("DB")?;
    let cache = RedisConfig::from_url(&urls.redis)
        .max_size(16)
        .query_timeout(round_trip)
        .knobs_from_env("REDIS")?;
    let quotes = HttpConfig::new(&urls.upstream)
        .request_timeout(Duration::from_secs(2))
        .knobs_from_env("HTTP")?;
    PoolManager::builder()
        .database::<AsyncPgConnection>("primary", database)
        .redis("cache", cache)
        .http("quotes", quotes)
        .require::<DbTx<AsyncPgConnection>>()
        .require::<RedisConn>()
        .require::<HttpClient<Quotes>>()
        .build()
        .await
}

pub async fn migrate(manager: &PoolManager) -> Result<(), DbError> {
    let mut db = DbConn::<AsyncPgConnection>::acquire(manager).await?;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS full_stack_notes (id SERIAL PRIMARY KEY, title TEXT NOT NULL)",
    )
    .await?;
    Ok(())
}

pub fn app(manager: PoolManager) -> Router {
    Router::new()
        .route("/notes", get(list_notes).post(add_note))
        .route("/quote", get(quote))
        .merge(manager.router())
        .layer(PoolLayer::new(manager))
}

async fn list_notes(
    mut cache: RedisConn,
    mut db: DbConn<AsyncPgConnection>,
) -> Result<impl IntoResponse, AppError> {
    if let Some(cached) = cache.get::<_, Option<String>>(CACHE_KEY).await? {
        let notes: Vec<Note> = serde_json::from_str(&cached).unwrap_or_default();
        return Ok(([(X_CACHE, "hit")], Json(notes)));
    }
    let notes = full_stack_notes::table
        .select(Note::as_select())
        .order(full_stack_notes::id)
        .load(&mut db)
        .await
        .map_err(DbError::from)?;
    let json = serde_json::to_string(&notes).unwrap_or_default();
    let _: () = cache.set_ex(CACHE_KEY, json, CACHE_TTL_SECS).await?;
    Ok(([(X_CACHE, "miss")], Json(notes)))
}

async fn add_note(
    mut tx: DbTx<AsyncPgConnection>,
    mut cache: RedisConn,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), AppError> {
    if new.title.trim().is_empty() {
        return Err(AppError::Invalid);
    }
    let note = diesel::insert_into(full_stack_notes::table)
        .values(full_stack_notes::title.eq(new.title.trim()))
        .returning(Note::as_returning())
        .get_result(&mut tx)
        .await
        .map_err(DbError::from)?;
    // Commit before invalidating: a reader can no longer cache the old list.
    tx.commit().await?;
    let _: () = cache.del(CACHE_KEY).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn quote(quotes: HttpClient<Quotes>) -> Result<Json<serde_json::Value>, HttpError> {
    Ok(Json(quotes.get("/quote").send().await?.json().await?))
}

#[derive(Debug)]
pub enum AppError {
    Db(DbError),
    Redis(redis::RedisError),
    Invalid,
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        match self {
            Self::Db(e) => e.into_response(),
            Self::Redis(e) => {
                tracing::error!(error = %e, "redis command failed");
                (StatusCode::SERVICE_UNAVAILABLE, "cache unavailable").into_response()
            }
            Self::Invalid => {
                (StatusCode::UNPROCESSABLE_ENTITY, "title must not be empty").into_response()
            }
        }
    }
}

/// A stand-in for the upstream quote API, started when `UPSTREAM_URL` is unset.
pub async fn start_upstream() -> std::io::Result<String> {
    let app = Router::new()
        .route("/", get(|| async { "quote service" }))
        .route(
            "/quote",
            get(|| async { Json(serde_json::json!({"symbol": "ACME", "price": 42.5})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,axum_pools=debug".into()),
        )
        .init();
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let upstream = match std::env::var("UPSTREAM_URL") {
        Ok(url) => url,
        Err(_) => start_upstream().await?,
    };
    let urls = Urls {
        database: env("DATABASE_URL", "postgres://test:test@127.0.0.1:5432/test"),
        redis: env("REDIS_URL", "redis://127.0.0.1:6379/0"),
        upstream,
    };
    let manager = manager(&urls).await?;
    migrate(&manager).await?;

    let listener = tokio::net::TcpListener::bind(env("BIND", "127.0.0.1:3000")).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(manager.clone()))
        .with_graceful_shutdown(manager.drain_on(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .await?;
    Ok(())
}
