//! The same pool behaviour against the real servers: Postgres and MariaDB
//! (URLs from `TEST_DATABASE_URL` / `TEST_MYSQL_URL`, loopback defaults).
//! Under CI a missing server fails these tests; elsewhere they skip.
#![cfg(all(feature = "postgres", feature = "mysql", feature = "sqlite"))]

mod common;

use std::time::Duration;

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{
    DbConfig, DbConn, DbConnection, HealthStatus, PoolError, PoolLayer, PoolManager,
    SqliteConnection,
};
use common::{body_json, body_text, get as req, unique};
use diesel::{
    dsl::sql,
    sql_types::{BigInt, Bool, Integer, Unsigned},
};
use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use tower::ServiceExt;

fn quiet(url: &str) -> DbConfig {
    DbConfig::from_url(url)
        .health_check_interval(None)
        .idle_timeout(None)
        .max_lifetime(None)
}

async fn build<C: DbConnection>(name: &str, config: DbConfig) -> PoolManager {
    PoolManager::builder()
        .database::<C>(name, config)
        .build()
        .await
        .expect("build")
}

async fn one<C: DbConnection>(mut db: DbConn<C>) -> StatusCode {
    db.batch_execute("SELECT 1").await.expect("SELECT 1");
    StatusCode::OK
}

// ---------- the same scenarios for every backend ----------

async fn thousand_requests_through_16<C: DbConnection>(url: &str) {
    let m = build::<C>(
        "db",
        quiet(url)
            .max_size(16)
            .acquire_timeout(Duration::from_secs(30)),
    )
    .await;
    let app = Router::new()
        .route("/one", get(one::<C>))
        .layer(PoolLayer::new(m.clone()));
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(app.clone().oneshot(req("/one"))))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // The test plan's bound, generous by design; the real figure printed.
    let took = start.elapsed();
    println!("1000 concurrent requests through a pool of 16: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let s = m.stats_of("db").unwrap();
    assert_eq!(
        (s.leases, s.timeouts, s.shed, s.backend_errors, s.active),
        (1000, 0, 0, 0, 0),
        "no connection error, no exhaustion: {s:?}"
    );
    assert!(s.size <= 16);
    m.drain(Duration::from_secs(5)).await;
}

async fn exact_stats_after_100_leases<C: DbConnection>(url: &str) {
    let m = build::<C>("db", quiet(url).max_size(4)).await;
    for _ in 0..100 {
        let mut db = DbConn::<C>::acquire(&m).await.unwrap();
        db.batch_execute("SELECT 1").await.unwrap();
    }
    let s = m.stats_of("db").unwrap();
    assert_eq!((s.leases, s.active, s.timeouts), (100, 0, 0));
    assert_eq!(s.acquire_wait.count, 100);
    assert_eq!(s.idle, s.size);
    assert_eq!(s.validations, 0, "back-to-back leases are not pinged");
    m.drain(Duration::from_secs(5)).await;
}

/// The pool's only connection is held; the next acquisition times out
/// after `acquire_timeout` on the paused clock (no wall-clock wait).
async fn timeout_while_the_only_connection_is_held<C: DbConnection>(url: &str) {
    let m = build::<C>(
        "db",
        quiet(url)
            .max_size(1)
            .acquire_timeout(Duration::from_secs(5)),
    )
    .await;
    let held = DbConn::<C>::acquire(&m).await.unwrap();
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let err = DbConn::<C>::acquire(&m).await.unwrap_err();
    assert!(start.elapsed() >= Duration::from_secs(5));
    assert!(matches!(err, PoolError::Timeout { .. }), "{err}");
    tokio::time::resume();
    assert_eq!(m.stats_of("db").unwrap().timeouts, 1);
    drop(held);
    DbConn::<C>::acquire(&m).await.expect("usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_thousand_requests_through_a_pool_of_16() {
    thousand_requests_through_16::<AsyncPgConnection>(&require!(common::pg_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_thousand_requests_through_a_pool_of_16() {
    thousand_requests_through_16::<AsyncMysqlConnection>(&require!(common::mysql_url())).await;
}

#[tokio::test]
async fn postgres_stats_exact_after_100_leases() {
    exact_stats_after_100_leases::<AsyncPgConnection>(&require!(common::pg_url())).await;
}

#[tokio::test]
async fn mysql_stats_exact_after_100_leases() {
    exact_stats_after_100_leases::<AsyncMysqlConnection>(&require!(common::mysql_url())).await;
}

#[tokio::test]
async fn postgres_acquire_timeout() {
    timeout_while_the_only_connection_is_held::<AsyncPgConnection>(&require!(common::pg_url()))
        .await;
}

#[tokio::test]
async fn mysql_acquire_timeout() {
    timeout_while_the_only_connection_is_held::<AsyncMysqlConnection>(&require!(
        common::mysql_url()
    ))
    .await;
}

// ---------- broken connections are discarded and replaced ----------

async fn pid_of(db: &mut DbConn<AsyncPgConnection>) -> diesel::QueryResult<i32> {
    diesel::select(sql::<Integer>("pg_backend_pid()"))
        .get_result(db)
        .await
}

async fn id_of(db: &mut DbConn<AsyncMysqlConnection>) -> diesel::QueryResult<u64> {
    diesel::select(sql::<Unsigned<BigInt>>("CONNECTION_ID()"))
        .get_result(db)
        .await
}

#[tokio::test]
async fn postgres_a_killed_connection_is_discarded_and_replaced() {
    let url = require!(common::pg_url());
    // Always validate, so the next checkout pings the killed connection.
    let m = build::<AsyncPgConnection>(
        "db",
        quiet(&url).max_size(1).alive_bypass_window(Duration::ZERO),
    )
    .await;
    let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
    let before = pid_of(&mut db).await.unwrap();
    drop(db);

    let mut admin = AsyncPgConnection::establish(&url).await.unwrap();
    let killed: bool = diesel::select(sql::<Bool>(&format!("pg_terminate_backend({before})")))
        .get_result(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    for _ in 0..100 {
        let alive: i64 = diesel::select(sql::<BigInt>(&format!(
            "(SELECT count(*) FROM pg_stat_activity WHERE pid = {before})"
        )))
        .get_result(&mut admin)
        .await
        .unwrap();
        if alive == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut db = DbConn::<AsyncPgConnection>::acquire(&m)
        .await
        .expect("a fresh connection");
    let after = pid_of(&mut db).await.unwrap();
    assert_ne!(before, after);
    let s = m.stats_of("db").unwrap();
    assert_eq!(s.broken, 1, "{s:?}");
    assert_eq!((s.created, s.closed), (2, 1));
}

#[tokio::test]
async fn mysql_a_killed_connection_is_discarded_and_replaced() {
    let url = require!(common::mysql_url());
    let m = build::<AsyncMysqlConnection>(
        "db",
        quiet(&url).max_size(1).alive_bypass_window(Duration::ZERO),
    )
    .await;
    let mut db = DbConn::<AsyncMysqlConnection>::acquire(&m).await.unwrap();
    let before = id_of(&mut db).await.unwrap();
    drop(db);

    let mut admin = AsyncMysqlConnection::establish(&url).await.unwrap();
    admin
        .batch_execute(&format!("KILL {before}"))
        .await
        .unwrap();

    let mut db = DbConn::<AsyncMysqlConnection>::acquire(&m)
        .await
        .expect("a fresh connection");
    let after = id_of(&mut db).await.unwrap();
    assert_ne!(before, after);
    let s = m.stats_of("db").unwrap();
    assert_eq!(s.broken, 1, "{s:?}");
}

// ---------- build failures ----------

#[tokio::test]
async fn a_failed_build_closes_the_postgres_connections_it_opened() {
    let url = require!(common::pg_url());
    let app = unique("axp_cleanup");
    let sep = if url.contains('?') { '&' } else { '?' };
    let tagged = format!("{url}{sep}application_name={app}");
    let mut admin = AsyncPgConnection::establish(&url).await.unwrap();

    let err = PoolManager::builder()
        .database::<AsyncPgConnection>("primary", quiet(&tagged).min_size(3).max_size(3))
        .database::<SqliteConnection>("broken", DbConfig::from_url("/nonexistent-dir/x.db"))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.pool(), Some("broken"), "{err}");
    assert!(
        err.to_string()
            .starts_with("failed to set up pool 'broken'")
    );

    let mut left = -1;
    for _ in 0..250 {
        left = common::pg_connections_named(&mut admin, &app).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the Postgres pool's 3 connections were closed");

    // The same pool alone opens its 3 connections: the count above is real.
    let m = PoolManager::builder()
        .database::<AsyncPgConnection>("primary", quiet(&tagged).min_size(3).max_size(3))
        .build()
        .await
        .unwrap();
    assert_eq!(common::pg_connections_named(&mut admin, &app).await, 3);
    m.drain(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unreachable_or_refused_servers_fail_the_build_without_leaking_the_password() {
    let cases = [
        (
            "postgres://app:hunter2-s3cret@127.0.0.1:1/db",
            "postgres://app:***@127.0.0.1:1/db",
        ),
        (
            "mysql://app:hunter2-s3cret@127.0.0.1:1/db",
            "mysql://app:***@127.0.0.1:1/db",
        ),
    ];
    for (i, (url, shown)) in cases.into_iter().enumerate() {
        let builder = PoolManager::builder();
        let builder = if i == 0 {
            builder.database::<AsyncPgConnection>("primary", DbConfig::from_url(url))
        } else {
            builder.database::<AsyncMysqlConnection>("primary", DbConfig::from_url(url))
        };
        let err = builder.build().await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("failed to set up pool 'primary' ({shown}): ")),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    // A real server refusing a wrong password.
    let url = require!(common::mysql_url());
    let wrong = url.replacen("test:test@", "test:wr0ng-hunter2@", 1);
    assert_ne!(
        wrong, url,
        "TEST_MYSQL_URL must carry user:password for this test"
    );
    let err = PoolManager::builder()
        .database::<AsyncMysqlConnection>("primary", DbConfig::from_url(&wrong))
        .build()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Access denied"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

// ---------- health across backends ----------

#[tokio::test]
async fn health_checks_every_backend_concurrently_and_a_dropped_database_fails_only_its_pool() {
    let pg = require!(common::pg_url());
    let my = require!(common::mysql_url());
    let (_dir, sqlite) = common::sqlite_file();

    // A throwaway Postgres database this test may drop.
    let db = unique("axp_health");
    let mut admin = AsyncPgConnection::establish(&pg).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let (base, _) = pg.rsplit_once('/').unwrap();
    let doomed = format!("{base}/{db}");

    let m = PoolManager::builder()
        .database::<AsyncPgConnection>("primary", quiet(&pg))
        .database::<AsyncPgConnection>("doomed", quiet(&doomed))
        .database::<AsyncMysqlConnection>("mariadb", quiet(&my))
        .database::<SqliteConnection>("local", quiet(&sqlite))
        .build()
        .await
        .unwrap();
    let report = m.check_health().await;
    assert_eq!(report.status, HealthStatus::Pass, "{report:?}");
    let names: Vec<_> = report.pools.iter().map(|p| p.pool.as_str()).collect();
    assert_eq!(names, ["primary", "doomed", "mariadb", "local"]);
    let backends: Vec<_> = report.pools.iter().map(|p| p.backend.as_str()).collect();
    assert_eq!(backends, ["postgres", "postgres", "mysql", "sqlite"]);

    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();

    // A fresh check (the periodic task would do the same every interval);
    // the route then serves its cached result.
    let fresh = m.check_health().await;
    assert_eq!(fresh.status, HealthStatus::Fail);
    let app: Router = m.router();
    let r = app.clone().oneshot(req("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(r).await;
    assert_eq!(body["status"], "fail");
    let by_name = |name: &str| {
        body["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("doomed")["status"], "fail");
    assert!(by_name("doomed")["error"].as_str().is_some());
    for ok in ["primary", "mariadb", "local"] {
        assert_eq!(by_name(ok)["status"], "pass", "{ok}: {body}");
    }
    let r = app.oneshot(req("/pools/health/primary")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    m.drain(Duration::from_secs(5)).await;
}

axum_pools::pool_name!(Primary = "primary");
axum_pools::pool_name!(Replica = "replica");

#[tokio::test]
async fn two_postgres_pools_are_picked_by_marker_and_checked_at_build() {
    let url = require!(common::pg_url());
    let m = PoolManager::builder()
        .database::<AsyncPgConnection>("primary", quiet(&url))
        .database::<AsyncPgConnection>("replica", quiet(&url))
        .require::<DbConn<AsyncPgConnection, Primary>>()
        .require::<DbConn<AsyncPgConnection, Replica>>()
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/write",
            get(|db: DbConn<AsyncPgConnection, Primary>| async move { db.pool_name().to_owned() }),
        )
        .route(
            "/read",
            get(|db: DbConn<AsyncPgConnection, Replica>| async move { db.pool_name().to_owned() }),
        )
        .route("/either", get(one::<AsyncPgConnection>))
        .layer(PoolLayer::new(m.clone()));
    assert_eq!(
        body_text(app.clone().oneshot(req("/write")).await.unwrap()).await,
        "primary"
    );
    assert_eq!(
        body_text(app.clone().oneshot(req("/read")).await.unwrap()).await,
        "replica"
    );
    let r = app.oneshot(req("/either")).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_text(r).await.contains("(primary, replica)"));

    // Requiring the unnamed extractor fails the build instead of a request.
    let err = PoolManager::builder()
        .database::<AsyncPgConnection>("primary", quiet(&url))
        .database::<AsyncPgConnection>("replica", quiet(&url))
        .require::<DbConn<AsyncPgConnection>>()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, PoolError::AmbiguousPool { .. }), "{err}");
}
