//! Hung backends and cancellation: one deadline bounds an acquisition
//! however many steps it takes, and a request dropped at an await point
//! leaves no transaction open and every lease back. Against a throwaway
//! Postgres these tests freeze (SIGSTOP of the postmaster and its backends)
//! at the moment they want a round trip to hang.
#![cfg(feature = "postgres")]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{DbConfig, DbConn, DbError, DbTx, PoolError, PoolLayer, PoolManager};
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
    let url = server.url();
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

#[tokio::test]
async fn one_deadline_bounds_an_acquisition_whose_ping_hangs() {
    let Some(server) = start_cluster(None) else {
        return;
    };
    let url = server.url();
    let m = PoolManager::builder()
        .database::<AsyncPgConnection>(
            "primary",
            DbConfig::from_url(url)
                .min_size(1)
                .max_size(1)
                .acquire_timeout(Duration::from_secs(1))
                // Longer than the acquisition may take: the deadline wins.
                .validation_timeout(Duration::from_secs(5))
                .alive_bypass_window(Duration::from_millis(1))
                .health_check_interval(None),
        )
        .build()
        .await
        .unwrap();
    drop(DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap());
    std::thread::sleep(Duration::from_millis(5)); // past the bypass window

    // The idle connection must be pinged, and the server is frozen: the
    // ping hangs, then opening another would hang too.
    server.freeze();
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let e = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap_err();
    let took = start.elapsed();
    tokio::time::resume();
    server.thaw();
    assert!(matches!(e, PoolError::Timeout { .. }), "{e}");
    // The message gives the setting, not the measured wait to the nanosecond.
    assert!(e.to_string().contains("became free within 1s;"), "{e}");
    // Paused time: exact but for the timer wheel's millisecond.
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_millis(1002),
        "acquire_timeout, not the 5 s ping: {took:?}"
    );
    let stats = m.stats_of("primary").unwrap();
    assert_eq!(stats.timeouts, 1, "{stats:?}");
    assert_eq!(stats.active, 0);

    // Back: the pool opens a new connection.
    let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
    let one: i32 = diesel::select(diesel::dsl::sql::<Integer>("1"))
        .get_result(&mut db)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

/// MySQL's driver is not cancel-safe: a query future dropped mid-way
/// leaves the connection with the answer still coming, and the next query
/// on it would read that answer. A request dropped mid-query (the client
/// gone, a timeout outside the layer) must not hand its connection on.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn a_mysql_request_dropped_mid_query_does_not_hand_its_connection_on() {
    mysql_request_dropped_mid_query(false).await;
}

/// The same through a `DbTx`: its connection must not be handed to a
/// rollback that would read the cut query's answer as its own (and then
/// leave ROLLBACK's answer for the next user).
#[cfg(feature = "mysql")]
#[tokio::test]
async fn a_mysql_transaction_dropped_mid_query_does_not_hand_its_connection_on() {
    mysql_request_dropped_mid_query(true).await;
}

/// `/slow` runs a half-second query on a `DbTx` (`in_tx`) or a `DbConn`;
/// the client gives up on it after 100 ms.
#[cfg(feature = "mysql")]
async fn mysql_request_dropped_mid_query(in_tx: bool) {
    use diesel::{dsl::sql, sql_types::BigInt};
    use diesel_async::AsyncMysqlConnection as My;

    let Some(url) = common::mysql_url() else {
        return;
    };
    let m = PoolManager::builder()
        .database::<My>(
            "db",
            DbConfig::from_url(url)
                .min_size(1)
                .max_size(1)
                .health_check_interval(None),
        )
        .build()
        .await
        .unwrap();
    let sleep = || diesel::select(sql::<BigInt>("CAST(SLEEP(0.5) AS SIGNED)"));
    let slow = if in_tx {
        get(move |mut tx: DbTx<My>| async move {
            let v: i64 = sleep().get_result(&mut *tx).await?;
            Ok::<_, DbError>(v.to_string())
        })
    } else {
        get(move |mut db: DbConn<My>| async move {
            let v: i64 = sleep().get_result(&mut db).await?;
            Ok::<_, DbError>(v.to_string())
        })
    };
    let app = Router::new()
        .route("/slow", slow)
        .route(
            "/answer",
            get(|mut db: DbConn<My>| async move {
                let v: i64 = diesel::select(sql::<BigInt>("CAST(42 AS SIGNED)"))
                    .get_result(&mut db)
                    .await?;
                Ok::<_, DbError>(v.to_string())
            }),
        )
        .layer(PoolLayer::new(m.clone()));

    // The client gives up 100 ms into the half-second query.
    let slow = app.clone().oneshot(get_request("/slow"));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), slow)
            .await
            .is_err()
    );

    // The next request (the pool has one connection) gets its own answer.
    let response = app.clone().oneshot(get_request("/answer")).await.unwrap();
    let status = response.status();
    let body = common::body_text(response).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
    let stats = m.stats_of("db").unwrap();
    assert_eq!(stats.active, 0);
    assert_eq!(stats.broken, 1, "the cut connection was not discarded");
    assert_eq!(stats.tx_abandoned, u64::from(in_tx));
    // Once the old answer would have arrived, still right.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = app.oneshot(get_request("/answer")).await.unwrap();
    assert_eq!(common::body_text(response).await, "42");
}
