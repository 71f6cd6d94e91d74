//! No password in a log line, an error's text or `Debug`, or a response
//! body, against real servers (a refused build, a working pool's routes).
//! Alone in its binary: the log capture is per thread, and tracing caches
//! each call site's interest process-wide, so tests logging in parallel
//! threads could hide this one's events from it.
#![cfg(all(feature = "postgres", feature = "mysql"))]

mod common;

use std::time::Duration;

use axum::Router;
use axum_pools::{DbConfig, PoolManager};
use common::{body_text, get as req};
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use tower::ServiceExt;

#[tokio::test]
async fn no_password_in_logs_errors_or_responses() {
    let logs = common::Logs::default();
    let _guard = logs.install(tracing::Level::TRACE);

    let mut seen = String::new();
    // Build failures (connection refused) with the password in the URL.
    for url in [
        "postgres://app:hunter2-s3cret@127.0.0.1:1/db?password=hunter2-s3cret",
        "mysql://app:hunter2-s3cret@127.0.0.1:1/db",
    ] {
        let builder = PoolManager::builder();
        let builder = if url.starts_with("postgres") {
            builder.database::<AsyncPgConnection>("p", DbConfig::from_url(url))
        } else {
            builder.database::<AsyncMysqlConnection>("p", DbConfig::from_url(url))
        };
        let err = builder.build().await.unwrap_err();
        seen.push_str(&format!("{err}\n{err:?}\n"));
        seen.push_str(&body_text(axum::response::IntoResponse::into_response(err)).await);
    }
    // A working pool's logs, health and stats bodies.
    let pg = require!(common::pg_url());
    let m = PoolManager::builder()
        .database::<AsyncPgConnection>("ok", DbConfig::from_url(&pg))
        .build()
        .await
        .unwrap();
    let app: Router = m.router();
    for uri in ["/pools/health", "/pools/stats"] {
        seen.push_str(&body_text(app.clone().oneshot(req(uri)).await.unwrap()).await);
    }
    seen.push_str(&format!("{m:?}"));
    m.drain(Duration::from_secs(5)).await;

    let logs = logs.text();
    assert!(
        logs.contains("connect failed"),
        "the failures were logged:\n{logs}"
    );
    assert!(logs.contains("app:***@127.0.0.1:1"), "{logs}");
    assert!(!logs.contains("hunter2"), "password in logs:\n{logs}");
    assert!(
        !seen.contains("hunter2"),
        "password in errors or bodies:\n{seen}"
    );
    // The test password of the working pool does not show either.
    if let Some((_, rest)) = pg.split_once("://")
        && let Some((userinfo, _)) = rest.split_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        let shown = format!(":{password}@");
        assert!(!logs.contains(&shown), "{logs}");
        assert!(!seen.contains(&shown), "{seen}");
    }
}
