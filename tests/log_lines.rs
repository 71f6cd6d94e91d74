//! Every log line about a pool names it, the error lines of a handler's
//! `DbError` too (the error itself carries no pool: the request's
//! `PoolLayer` scope knows which pool it leased from). Alone in its binary:
//! the log capture is per thread (see `tests/secrets.rs`).
#![cfg(feature = "sqlite")]

mod common;

use axum::{Router, routing::get};
use axum_pools::{DbConfig, DbConn, DbError, PoolLayer, PoolManager, SqliteConnection};
use diesel_async::RunQueryDsl;
use tower::ServiceExt;

#[tokio::test]
async fn a_database_error_line_names_the_pool_it_came_from() {
    let logs = common::Logs::default();
    let _guard = logs.install(tracing::Level::DEBUG);
    let dir = tempfile::tempdir().unwrap();
    let m = PoolManager::builder()
        .database::<SqliteConnection>(
            "notes-db",
            DbConfig::from_url(dir.path().join("n.db").to_str().unwrap())
                .health_check_interval(None),
        )
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/broken",
            get(|mut db: DbConn<SqliteConnection>| async move {
                diesel::sql_query("SELECT * FROM no_such_table")
                    .execute(&mut db)
                    .await?;
                Ok::<_, DbError>("unreachable")
            }),
        )
        .layer(PoolLayer::new(m.clone()));
    let response = app.oneshot(common::get("/broken")).await.unwrap();
    assert_eq!(response.status(), 500);
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("database error answered"))
        .unwrap_or_else(|| panic!("no database error line:\n{logs}"));
    assert!(line.contains(r#"pool="notes-db""#), "{line}");
    assert!(line.contains("no_such_table"), "{line}");
}
