//! `query_timeout`: a slow statement on a healthy server is cancelled by
//! the server (its connection survives) and answers 504; a frozen Postgres
//! (SIGSTOP of the postmaster and its backends) is cut off by the client,
//! the connection is discarded, the request answers 504 naming the pool,
//! and the pool serves again once the server is back; a frozen MariaDB
//! (SIGSTOP) is cut off the same way, through the relay in front of each
//! MySQL connection. Redis commands obey the same knob. Real servers throughout.
#![cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]

mod common;

use std::time::Duration;

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{PoolLayer, PoolManager};
use common::{body_json, get as get_request};
use tower::ServiceExt;

/// Every answer must come: a hang is the failure this file is about.
async fn answer(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        app.clone().oneshot(get_request(uri)),
    )
    .await
    .unwrap_or_else(|_| panic!("{uri} did not answer"))
    .unwrap();
    let status = response.status();
    let body = body_json(response).await;
    (status, body)
}

#[cfg(feature = "postgres")]
mod postgres {
    use axum_pools::{DbConfig, DbConn, DbError, DbTx};
    use diesel::sql_types::Integer;
    use diesel_async::{AsyncPgConnection, RunQueryDsl};

    use super::*;
    use crate::common::servers::start_cluster;

    async fn in_tx(mut tx: DbTx<AsyncPgConnection>) -> Result<String, DbError> {
        let n: i32 = diesel::select(diesel::dsl::sql::<Integer>("1"))
            .get_result(&mut *tx)
            .await?;
        Ok(n.to_string())
    }

    async fn select(mut db: DbConn<AsyncPgConnection>, sql: &str) -> Result<String, DbError> {
        let n: i32 = diesel::select(diesel::dsl::sql::<Integer>(sql))
            .get_result(&mut db)
            .await?;
        Ok(n.to_string())
    }

    fn app(manager: &PoolManager) -> Router {
        Router::new()
            .route("/one", get(|db| select(db, "1")))
            .route("/tx", get(in_tx))
            .route("/slow", get(|db| select(db, "(SELECT 1 FROM pg_sleep(5))")))
            .layer(PoolLayer::new(manager.clone()))
    }

    async fn manager(url: &str) -> PoolManager {
        PoolManager::builder()
            .database::<AsyncPgConnection>(
                "primary",
                DbConfig::from_url(url)
                    .min_size(1)
                    .max_size(2)
                    .query_timeout(Some(Duration::from_millis(300))),
            )
            .build()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_slow_statement_is_cancelled_by_the_server_and_its_connection_survives() {
        let url = require!(common::pg_url());
        let m = manager(&url).await;
        let app = app(&m);
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);
        let created = m.stats_of("primary").unwrap().created;

        let (status, body) = answer(&app, "/slow").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["type"], "urn:axum-pools:problem:query-timeout");

        // The server cancelled it: the same connection answers the next.
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);
        let stats = m.stats_of("primary").unwrap();
        assert_eq!(stats.created, created, "no new connection");
        assert_eq!(stats.query_timeouts, 0, "the client cut nothing");
        assert_eq!(stats.active, 0);
    }

    #[tokio::test]
    async fn a_frozen_server_is_cut_off_the_pool_refills_and_serves_after_thaw() {
        let Some(server) = start_cluster(None) else {
            return;
        };
        let url = server.url();
        let m = manager(&url).await;
        let app = app(&m);
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);

        server.freeze();
        let (status, body) = answer(&app, "/one").await;
        server.thaw();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["type"], "urn:axum-pools:problem:query-timeout");
        assert_eq!(body["pool"], "primary");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("did not answer within query_timeout (300ms)"),
            "{body}"
        );

        // Back: a new connection serves, the old one was discarded.
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);

        // A DbTx whose BEGIN gets no answer: the same 504.
        assert_eq!(answer(&app, "/tx").await.0, StatusCode::OK);
        server.freeze();
        let (status, body) = answer(&app, "/tx").await;
        server.thaw();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["pool"], "primary");
        assert_eq!(answer(&app, "/tx").await.0, StatusCode::OK);

        let stats = m.stats_of("primary").unwrap();
        assert_eq!(stats.query_timeouts, 2);
        assert!(stats.broken >= 1, "{stats:?}");
        assert_eq!(stats.active, 0);
        let metrics = m
            .router()
            .oneshot(get_request("/pools/metrics"))
            .await
            .unwrap();
        let text = common::body_text(metrics).await;
        assert!(
            text.contains("axum_pools_query_timeouts_total{pool_name=\"primary\"} 2"),
            "{text}"
        );
    }

    /// A `COMMIT` sent to a server that then freezes: `query_timeout` cuts
    /// the connection, and the request answers 504 naming the pool, as any
    /// round trip cut there does. It does not claim that nothing was
    /// stored: the `COMMIT` waits in the server's socket, and the server
    /// applies it when it thaws.
    #[tokio::test]
    async fn a_commit_cut_at_query_timeout_answers_504_and_does_not_claim_nothing_was_stored() {
        use std::sync::Arc;

        use diesel_async::SimpleAsyncConnection as _;

        let Some(server) = start_cluster(None) else {
            return;
        };
        let server = Arc::new(server);
        let m = manager(&server.url()).await;
        let frozen = server.clone();
        let layer_frozen = server.clone();
        let app = Router::new()
            .route(
                "/setup",
                get(|mut db: DbConn<AsyncPgConnection>| async move {
                    db.batch_execute("CREATE TABLE stored (x INT)").await?;
                    Ok::<_, DbError>("0")
                }),
            )
            .route(
                "/commit",
                get(move |mut tx: DbTx<AsyncPgConnection>| async move {
                    tx.batch_execute("INSERT INTO stored VALUES (1)").await?;
                    frozen.freeze();
                    tx.commit().await?;
                    Ok::<_, DbError>("1")
                }),
            )
            .route(
                "/by-the-layer",
                get(move |mut tx: DbTx<AsyncPgConnection>| async move {
                    tx.batch_execute("INSERT INTO stored VALUES (2)").await?;
                    layer_frozen.freeze();
                    Ok::<_, DbError>("1")
                }),
            )
            .route(
                "/count",
                get(|db| select(db, "(SELECT count(*)::int FROM stored)")),
            )
            .layer(PoolLayer::new(m.clone()));
        assert_eq!(answer(&app, "/setup").await.0, StatusCode::OK);

        let (status, body) = answer(&app, "/commit").await;
        server.thaw();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["type"], "urn:axum-pools:problem:query-timeout");
        assert_eq!(body["pool"], "primary");
        assert!(!body.to_string().contains("nothing was stored"), "{body}");

        // The same COMMIT sent by the layer after a 2xx: the response
        // becomes a 500 that says the outcome is unknown.
        let (status, body) = answer(&app, "/by-the-layer").await;
        server.thaw();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(
            body["type"],
            "urn:axum-pools:problem:commit-outcome-unknown"
        );
        assert!(!body.to_string().contains("nothing was stored"), "{body}");

        // The server applied both COMMITs it had received.
        let mut stored = None;
        for _ in 0..50 {
            let (status, body) = answer(&app, "/count").await;
            if status == StatusCode::OK && body == 2 {
                stored = Some(body);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stored, Some(serde_json::json!(2)), "both rows were stored");
        assert_eq!(m.stats_of("primary").unwrap().active, 0);
    }

    /// The server answers part of a statement (a notice, sent at once) and
    /// its backend is then stopped: the wait for the rest is bounded too.
    /// The same watch covers a request written before the last one's answer
    /// was read (tokio-postgres sends the Close of a statement diesel could
    /// not cache without waiting for its answer): an answer that ends one
    /// round does not make the next look answered. Only this backend is
    /// stopped, 200 ms into a statement that would run 3 s, long before the
    /// server's own `statement_timeout` (1 s) could end it.
    #[tokio::test]
    async fn a_backend_stopped_after_part_of_its_answer_is_cut_off() {
        use std::sync::{Arc, Mutex};

        let Some(server) = start_cluster(None) else {
            return;
        };
        let url = server.url();
        let m = PoolManager::builder()
            .database::<AsyncPgConnection>(
                "primary",
                DbConfig::from_url(url)
                    .max_size(1)
                    .query_timeout(Some(Duration::from_secs(1))),
            )
            .build()
            .await
            .unwrap();
        let stopped: Arc<Mutex<Option<u32>>> = Arc::default();
        let app = {
            let stopped = stopped.clone();
            Router::new()
                .route(
                    "/notice",
                    get(move |mut db: DbConn<AsyncPgConnection>| async move {
                        let pid: i32 =
                            diesel::select(diesel::dsl::sql::<Integer>("pg_backend_pid()"))
                                .get_result(&mut db)
                                .await?;
                        let pid = pid as u32;
                        *stopped.lock().unwrap() = Some(pid);
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_millis(200));
                            common::servers::signal_process(pid, "STOP");
                        });
                        diesel::sql_query(
                            "DO $$ BEGIN RAISE NOTICE 'working'; PERFORM pg_sleep(3); END $$",
                        )
                        .execute(&mut db)
                        .await?;
                        Ok::<_, DbError>("finished")
                    }),
                )
                .route("/one", get(|db| select(db, "1")))
                .layer(PoolLayer::new(m.clone()))
        };

        // Answered while the backend is still stopped: a hang fails here.
        let (status, body) = answer(&app, "/notice").await;
        let pid = stopped.lock().unwrap().expect("the handler ran");
        assert!(
            common::servers::is_stopped(pid),
            "answered {status} only once the backend ran again: {body}"
        );
        common::servers::signal_process(pid, "CONT");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["type"], "urn:axum-pools:problem:query-timeout");
        assert_eq!(m.stats_of("primary").unwrap().query_timeouts, 1);

        // The connection was discarded; a new one serves.
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);
        assert_eq!(m.stats_of("primary").unwrap().active, 0);
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use axum_pools::{DbConfig, DbConn, DbError};
    use diesel::sql_types::Integer;
    use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

    use super::*;

    /// One connection, 300 ms for a round trip.
    async fn manager(url: &str) -> PoolManager {
        PoolManager::builder()
            .database::<AsyncMysqlConnection>(
                "mysql",
                DbConfig::from_url(url)
                    .max_size(1)
                    .query_timeout(Some(Duration::from_millis(300))),
            )
            .build()
            .await
            .unwrap()
    }

    async fn run(mut db: DbConn<AsyncMysqlConnection>, sql: &str) -> Result<String, DbError> {
        let n: i32 = diesel::select(diesel::dsl::sql::<Integer>(sql))
            .get_result(&mut db)
            .await?;
        Ok(n.to_string())
    }

    #[tokio::test]
    async fn the_server_cancels_a_slow_statement_and_the_request_answers_504() {
        let url = require!(common::mysql_url());
        let m = manager(&url).await;
        let app = Router::new()
            .route(
                "/slow",
                get(|db| run(db, "(SELECT COUNT(*) FROM (SELECT SLEEP(5)) t)")),
            )
            .route("/one", get(|db| run(db, "1")))
            .layer(PoolLayer::new(m.clone()));
        let (status, body) = answer(&app, "/slow").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["type"], "urn:axum-pools:problem:query-timeout");
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);
        assert_eq!(
            m.stats_of("mysql").unwrap().created,
            1,
            "the connection survived"
        );
    }

    /// A frozen MariaDB (SIGSTOP): the pool's relay cuts the round trip
    /// off, the request answers 504 naming the pool, the connection is
    /// discarded, and the pool serves again after SIGCONT. Over TLS with
    /// `VERIFY_IDENTITY`, so the relay keeps the server's name checked.
    #[tokio::test]
    async fn a_frozen_server_is_cut_off_by_the_client_and_serves_after_thaw() {
        let dir = tempfile::tempdir().unwrap();
        let certs = common::certs::make_certs(dir.path());
        let Some((server, port)) = common::servers::mariadb(&certs, dir.path(), None) else {
            return;
        };
        let url = format!(
            "mysql://root@localhost:{port}/mysql?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            certs.ca.display()
        );
        let m = manager(&url).await;
        let app = Router::new()
            .route("/one", get(|db| run(db, "1")))
            .layer(PoolLayer::new(m.clone()));
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);
        assert_eq!(
            common::certs::tls_in_stats(&m, "mysql").as_deref(),
            Some("on")
        );

        common::servers::signal_process(server.0.id(), "STOP");
        let (status, body) = answer(&app, "/one").await;
        common::servers::signal_process(server.0.id(), "CONT");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["type"], "urn:axum-pools:problem:query-timeout");
        assert_eq!(body["pool"], "mysql");

        // Back: a new connection serves, the cut one was discarded.
        assert_eq!(answer(&app, "/one").await.0, StatusCode::OK);
        let stats = m.stats_of("mysql").unwrap();
        assert_eq!(stats.query_timeouts, 1, "{stats:?}");
        assert_eq!(stats.created, 2, "{stats:?}");
        assert_eq!(stats.active, 0);
    }
}

#[cfg(feature = "redis")]
mod redis_pool {
    use axum_pools::{RedisConfig, RedisConn};

    use super::*;

    #[tokio::test]
    async fn a_command_without_answer_costs_its_connection_and_answers_504() {
        let url = require!(common::redis_url());
        let m = PoolManager::builder()
            .redis(
                "cache",
                RedisConfig::from_url(&url)
                    .max_size(1)
                    .query_timeout(Some(Duration::from_millis(200))),
            )
            .build()
            .await
            .unwrap();
        let key = common::unique("qt");
        let app = Router::new()
            .route(
                "/wait",
                get(move |mut redis: RedisConn| {
                    let key = key.clone();
                    async move {
                        // Blocks for 2 s on the server: no answer within 200 ms.
                        let popped: Result<Option<(String, String)>, _> = redis::cmd("BLPOP")
                            .arg(&key)
                            .arg(2)
                            .query_async(&mut redis)
                            .await;
                        match popped {
                            Ok(_) => (StatusCode::OK, "popped".to_owned()),
                            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                        }
                    }
                }),
            )
            .route(
                "/ping",
                get(|mut redis: RedisConn| async move {
                    let pong: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
                    pong
                }),
            )
            .layer(PoolLayer::new(m.clone()));
        let (status, body) = answer(&app, "/wait").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["pool"], "cache");
        let stats = m.stats_of("cache").unwrap();
        assert_eq!(stats.query_timeouts, 1);
        assert_eq!(stats.active, 0);
        // A new connection answers; the timed-out one was not reused.
        let ping = app.clone().oneshot(get_request("/ping")).await.unwrap();
        assert_eq!(ping.status(), StatusCode::OK);
        assert_eq!(m.stats_of("cache").unwrap().created, 2);
    }
}
