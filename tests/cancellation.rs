//! Cancellation never leaks: a request dropped at an await point leaves no
//! transaction open and every lease back. Against a throwaway Postgres this
//! test freezes (SIGSTOP of the postmaster and its backends) at the moment
//! it wants a round trip to hang.
#![cfg(feature = "postgres")]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{DbConfig, DbError, DbTx, PoolLayer, PoolManager};
use common::{get as get_request, servers::start_cluster};
use diesel::sql_types::Integer;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tower::ServiceExt;

#[tokio::test]
async fn a_response_dropped_while_the_layer_commits_abandons_the_transaction() {
    let Some(server) = start_cluster(None) else {
        return;
    };
    let server = Arc::new(server);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        server.port
    );
    let m = PoolManager::builder()
        .database::<AsyncPgConnection>("primary", DbConfig::from_url(url).max_size(2))
        .build()
        .await
        .unwrap();
    let frozen = server.clone();
    let freeze_once = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let app = Router::new()
        .route(
            "/tx",
            get(move |mut tx: DbTx<AsyncPgConnection>| {
                let frozen = frozen.clone();
                let freeze_once = freeze_once.clone();
                async move {
                    let _: i32 = diesel::select(diesel::dsl::sql::<Integer>("1"))
                        .get_result(&mut *tx)
                        .await?;
                    // The handler is done; the layer's COMMIT will hang.
                    if freeze_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        frozen.freeze();
                    }
                    Ok::<_, DbError>("done")
                }
            }),
        )
        .layer(PoolLayer::new(m.clone()));

    // The client gives up while the layer waits for COMMIT's answer.
    let response = tokio::time::timeout(
        Duration::from_millis(500),
        app.clone().oneshot(get_request("/tx")),
    )
    .await;
    assert!(response.is_err(), "COMMIT on a frozen server cannot answer");
    let stats = m.stats_of("primary").unwrap();
    assert_eq!(stats.tx_abandoned, 1, "{stats:?}");
    assert_eq!(stats.tx_committed, 0);

    // Its COMMIT was cut short: the lease is back and the connection, in a
    // state nobody knows, is not handed out again.
    let stats = m.stats_of("primary").unwrap();
    assert_eq!(stats.active, 0, "{stats:?}");
    server.thaw();
    let r = tokio::time::timeout(Duration::from_secs(20), app.oneshot(get_request("/tx")))
        .await
        .expect("answers once thawed")
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stats = m.stats_of("primary").unwrap();
    assert_eq!(stats.tx_committed, 1, "{stats:?}");
    assert!(
        stats.broken >= 1,
        "the cut connection was discarded: {stats:?}"
    );
}
