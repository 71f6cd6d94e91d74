//! Resilience: load shedding, the pool's circuit breaker, rate limiting and
//! a circuit breaker around any service, together. No server needed.
//!
//! ```sh
//! cargo run --example resilience
//! # load shedding: 2 connections, 2 waiters; the rest get 503 at once
//! for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' localhost:3000/slow & done; wait; echo
//! # rate limit: 5/s per client, bursts of 10, then 429 + Retry-After + RateLimit headers
//! for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' localhost:3000/work; done; echo
//! # the pool's breaker, by hand: open, refused at once, reset
//! curl -s -X POST localhost:3000/admin/breaker/open; curl -si localhost:3000/work | head -5
//! curl -s -X POST localhost:3000/admin/breaker/reset
//! # a breaker around a flaky dependency: 3 failures open it
//! for i in $(seq 5); do curl -s -o /dev/null -w '%{http_code} ' 'localhost:3000/flaky?fail=1'; done; echo
//! curl -s localhost:3000/pools/stats/main
//! ```

#![allow(missing_docs)]

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use axum_pools::{
    BreakerConfig, DbConfig, DbConn, PoolError, PoolLayer, PoolManager, SqliteConnection,
    layer::{CircuitBreakerError, CircuitBreakerLayer, KeyBy, RateLimitLayer},
};
use diesel_async::SimpleAsyncConnection;
use serde::Deserialize;
use tower::ServiceBuilder;

async fn work(mut db: DbConn<SqliteConnection>) -> Result<&'static str, PoolError> {
    db.batch_execute("SELECT 1").await.expect("SELECT 1");
    Ok("done")
}

async fn slow(_db: DbConn<SqliteConnection>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "slow done"
}

#[derive(Deserialize)]
struct Flaky {
    #[serde(default)]
    fail: u8,
}

async fn flaky(Query(q): Query<Flaky>) -> StatusCode {
    if q.fail == 1 {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    }
}

async fn breaker(
    State(manager): State<PoolManager>,
    axum::extract::Path(action): axum::extract::Path<String>,
) -> Result<&'static str, PoolError> {
    match action.as_str() {
        "open" => manager.force_open("main")?,
        "close" => manager.force_closed("main")?,
        _ => manager.reset_breaker("main")?,
    }
    Ok("ok")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let path = std::env::temp_dir().join("axum-pools-resilience.db");
    let manager = PoolManager::builder()
        .database::<SqliteConnection>(
            "main",
            DbConfig::from_url(path.display().to_string())
                .max_size(2)
                .max_waiting(Some(2))
                .acquire_timeout(Duration::from_secs(2))
                .breaker(BreakerConfig {
                    consecutive_failures: 3,
                    open_duration: Duration::from_secs(5),
                    ..BreakerConfig::default()
                })
                // DB_MAX_SIZE, DB_ACQUIRE_TIMEOUT, ... override the above.
                .knobs_from_env("DB")?,
        )
        .build()
        .await?;

    // A breaker around a dependency that is not a pool.
    let guarded_flaky = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(
            |e: CircuitBreakerError<std::convert::Infallible>| async move { e.into_response() },
        ))
        .layer(CircuitBreakerLayer::new(BreakerConfig {
            consecutive_failures: 3,
            open_duration: Duration::from_secs(10),
            ..BreakerConfig::default()
        }))
        .service(axum::routing::get(flaky));

    let app = Router::new()
        .route("/work", get(work))
        .route("/slow", get(slow))
        .route_service("/flaky", guarded_flaky)
        .route("/admin/breaker/{action}", post(breaker))
        .with_state(manager.clone())
        .merge(manager.router())
        .layer(
            RateLimitLayer::new(5, Duration::from_secs(1))
                .burst(10)
                .key(KeyBy::PeerIp),
        )
        .layer(PoolLayer::new(manager.clone()));

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    tracing::info!("listening on http://{bind}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(manager.drain_on(async {
        let _ = tokio::signal::ctrl_c().await;
    }))
    .await?;
    Ok(())
}
