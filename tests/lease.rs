//! The lease path on a real SQLite file: timeouts, load shedding, leaks,
//! validation bypass, lifetime and idle reaping, exact stats. Timing is
//! tested with tokio's paused clock (SQLite runs on the blocking pool, which
//! holds auto-advance back while a query runs); the tests of connection
//! ageing need the `test-util` feature, and `tests/clock.rs` covers the
//! default clock.
#![cfg(feature = "sqlite")]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    http::{StatusCode, header},
    routing::get,
};
use axum_pools::{DbConfig, DbConn, PoolError, PoolLayer, PoolManager, SqliteConnection};
use common::{body_json, eventually, get as req};
use diesel::{IntoSql, sql_types::Integer};
use diesel_async::RunQueryDsl;
use tokio::{sync::Semaphore, time::Instant};
use tower::ServiceExt;

type Db = DbConn<SqliteConnection>;

async fn manager(config: DbConfig) -> PoolManager {
    PoolManager::builder()
        .database::<SqliteConnection>("main", config)
        .build()
        .await
        .expect("build")
}

fn quiet(path: &str) -> DbConfig {
    DbConfig::from_url(path)
        .health_check_interval(None)
        .idle_timeout(None)
        .max_lifetime(None)
}

async fn select_one(db: &mut Db) -> i32 {
    diesel::select(1.into_sql::<Integer>())
        .get_result(db)
        .await
        .expect("SELECT 1")
}

/// A gate the test opens to let held handlers finish.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

async fn one(mut db: Db) -> String {
    select_one(&mut db).await.to_string()
}

async fn hold(Extension(gate): Extension<Gate>, mut db: Db) -> &'static str {
    select_one(&mut db).await;
    let _permit = gate.0.acquire().await.unwrap();
    "released"
}

async fn fail(mut db: Db) -> Result<&'static str, StatusCode> {
    select_one(&mut db).await;
    Err(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn boom(mut db: Db) -> &'static str {
    select_one(&mut db).await;
    panic!("handler panicked while holding a lease");
}

fn app(manager: &PoolManager, gate: &Gate) -> Router {
    Router::new()
        .route("/one", get(one))
        .route("/hold", get(hold))
        .route("/fail", get(fail))
        .route("/boom", get(boom))
        .layer(Extension(gate.clone()))
        .layer(PoolLayer::new(manager.clone()))
}

fn gate() -> Gate {
    Gate(Arc::new(Semaphore::new(0)))
}

#[tokio::test(start_paused = true)]
async fn held_connection_makes_the_next_request_503_with_retry_after_and_one_timeout() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        quiet(&path)
            .max_size(1)
            .acquire_timeout(Duration::from_secs(5)),
    )
    .await;
    let gate = gate();
    let app = app(&m, &gate);

    let holder = tokio::spawn(app.clone().oneshot(req("/hold")));
    eventually("the first request holds the connection", || {
        m.stats_of("main").unwrap().active == 1
    })
    .await;

    let start = Instant::now();
    let response = app.clone().oneshot(req("/one")).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "answered before acquire_timeout"
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let body = body_json(response).await;
    assert_eq!(body["type"], "urn:axum-pools:problem:acquire-timeout");
    assert_eq!(body["status"], 503);
    assert_eq!(body["pool"], "main");

    let stats = m.stats_of("main").unwrap();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.leases, 1, "the failed acquisition is not a lease");
    assert_eq!(
        stats.acquire_wait.count, 1,
        "only successes feed the histogram"
    );

    gate.0.add_permits(1);
    assert_eq!(holder.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(m.stats_of("main").unwrap().active, 0);
    // The pool works again.
    assert_eq!(
        app.oneshot(req("/one")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_lease_leaks_after_100_requests_errors_panics_and_cancellations() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(quiet(&path).max_size(4)).await;
    let gate = gate();
    let app = app(&m, &gate);

    for _ in 0..100 {
        assert_eq!(
            app.clone().oneshot(req("/one")).await.unwrap().status(),
            StatusCode::OK
        );
    }
    for _ in 0..10 {
        assert_eq!(
            app.clone().oneshot(req("/fail")).await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    for _ in 0..10 {
        let panicked = tokio::spawn(app.clone().oneshot(req("/boom"))).await;
        assert!(panicked.unwrap_err().is_panic());
    }
    // Cancelled: the client goes away while the handler holds the lease.
    for _ in 0..10 {
        let request = tokio::spawn(app.clone().oneshot(req("/hold")));
        let before = m.stats_of("main").unwrap().leases;
        eventually("the handler holds its lease", || {
            m.stats_of("main").unwrap().leases > before
        })
        .await;
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
    }

    let s = m.stats_of("main").unwrap();
    assert_eq!(s.leases, 130);
    assert_eq!(s.active, 0, "every lease came back: {s:?}");
    assert_eq!(s.idle, s.size, "every connection is idle again: {s:?}");
    assert!(s.size <= 4);
}

#[tokio::test]
async fn stats_are_exact_after_100_concurrent_leases() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(quiet(&path).max_size(8)).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                let mut db = Db::acquire(&m).await.unwrap();
                select_one(&mut db).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let s = m.stats_of("main").unwrap();
    assert_eq!(s.leases, 100);
    assert_eq!(s.acquire_wait.count, 100);
    assert_eq!(s.active, 0);
    assert_eq!(s.waiting, 0);
    assert_eq!((s.timeouts, s.shed, s.backend_errors), (0, 0, 0));
    assert_eq!(s.created as usize, s.size + s.closed as usize);
    assert!(s.acquire_wait.max_us >= s.acquire_wait.p99_us);
}

#[tokio::test(start_paused = true)]
async fn waiters_beyond_max_waiting_are_shed_at_once() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(quiet(&path).max_size(1).max_waiting(Some(1))).await;
    let held = Db::acquire(&m).await.unwrap();

    let waiter = tokio::spawn({
        let m = m.clone();
        async move { Db::acquire(&m).await.map(|_| ()) }
    });
    eventually("one request waits", || {
        m.stats_of("main").unwrap().waiting == 1
    })
    .await;

    let start = Instant::now();
    let err = Db::acquire(&m).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "shed without waiting");
    assert!(
        matches!(err, PoolError::Overloaded { max_waiting: 1, .. }),
        "{err}"
    );
    assert_eq!(m.stats_of("main").unwrap().shed, 1);

    drop(held);
    waiter.await.unwrap().expect("the queued waiter is served");
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.waiting, s.timeouts, s.active), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(quiet(&path).max_size(1).max_waiting(Some(10))).await;
    let held = Db::acquire(&m).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for id in 0..5 {
        let (m2, order) = (m.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let db = Db::acquire(&m2).await.unwrap();
            order.lock().unwrap().push(id);
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(db);
        }));
        eventually("the waiter queues", || {
            m.stats_of("main").unwrap().waiting == id + 1
        })
        .await;
    }
    drop(held);
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

// Advances paused time: the pools' bookkeeping follows it with `test-util`.
#[cfg(feature = "test-util")]
#[tokio::test(start_paused = true)]
async fn only_connections_idle_past_the_bypass_window_are_pinged() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        quiet(&path)
            .max_size(1)
            .alive_bypass_window(Duration::from_millis(500)),
    )
    .await;
    for _ in 0..20 {
        let mut db = Db::acquire(&m).await.unwrap();
        select_one(&mut db).await;
    }
    assert_eq!(
        m.stats_of("main").unwrap().validations,
        0,
        "recently used connections are handed out without a ping"
    );

    tokio::time::advance(Duration::from_millis(600)).await;
    let db = Db::acquire(&m).await.unwrap();
    drop(db);
    assert_eq!(m.stats_of("main").unwrap().validations, 1);

    // Just returned: no ping again.
    drop(Db::acquire(&m).await.unwrap());
    assert_eq!(m.stats_of("main").unwrap().validations, 1);
}

// Advances paused time: the pools' bookkeeping follows it with `test-util`.
#[cfg(feature = "test-util")]
#[tokio::test(start_paused = true)]
async fn max_lifetime_retires_idle_connections_never_ones_in_use_and_keeps_min_size() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        quiet(&path)
            .min_size(2)
            .max_size(4)
            .max_lifetime(Some(Duration::from_secs(40))),
    )
    .await;
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.size, s.created), (2, 2));

    let mut in_use = Db::acquire(&m).await.unwrap();
    tokio::time::advance(Duration::from_secs(41)).await;
    eventually("the idle connection is retired and replaced", || {
        let s = m.stats_of("main").unwrap();
        s.closed == 1 && s.size == 2
    })
    .await;
    // The connection in use survived its lifetime and still works.
    assert_eq!(select_one(&mut in_use).await, 1);
    drop(in_use);

    // Returned past its lifetime: retired by the reaper or at checkout,
    // never handed out again.
    eventually("the returned expired connection is retired", || {
        m.stats_of("main").unwrap().closed == 2
    })
    .await;
    let mut db = Db::acquire(&m).await.unwrap();
    assert_eq!(select_one(&mut db).await, 1);
    let s = m.stats_of("main").unwrap();
    assert!(s.size >= 2, "min_size kept: {s:?}");
    assert_eq!(s.created as usize, s.size + s.closed as usize);
}

// Advances paused time: the pools' bookkeeping follows it with `test-util`.
#[cfg(feature = "test-util")]
#[tokio::test(start_paused = true)]
async fn idle_connections_above_min_size_are_reaped() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        quiet(&path)
            .min_size(1)
            .max_size(4)
            .idle_timeout(Some(Duration::from_secs(30))),
    )
    .await;
    let leases: Vec<_> = futures_join_all(&m, 4).await;
    assert_eq!(m.stats_of("main").unwrap().size, 4);
    drop(leases);

    tokio::time::advance(Duration::from_secs(29)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        m.stats_of("main").unwrap().size,
        4,
        "not idle long enough yet"
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    eventually("reaped down to min_size", || {
        m.stats_of("main").unwrap().size == 1
    })
    .await;
    assert_eq!(m.stats_of("main").unwrap().closed, 3);
}

#[cfg(feature = "test-util")]
async fn futures_join_all(m: &PoolManager, n: usize) -> Vec<Db> {
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let m = m.clone();
        tasks.push(tokio::spawn(async move { Db::acquire(&m).await.unwrap() }));
    }
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_through_a_pool_of_16_all_succeed() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        quiet(&path)
            .max_size(16)
            .acquire_timeout(Duration::from_secs(30)),
    )
    .await;
    let app = app(&m, &gate());
    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(app.clone().oneshot(req("/one"))))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.leases, s.timeouts, s.active), (1000, 0, 0));
    assert!(s.size <= 16);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_probe_cancelled_while_waiting_gives_its_permit_back() {
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        quiet(&path)
            .max_size(1)
            .acquire_timeout(Duration::from_millis(100))
            .breaker(axum_pools::BreakerConfig {
                consecutive_failures: 1,
                half_open_probes: 1,
                open_duration: Duration::from_secs(1),
                ..Default::default()
            }),
    )
    .await;
    let breaker = |m: &PoolManager| m.stats_of("main").unwrap().breaker.state;
    let held = Db::acquire(&m).await.unwrap();
    // The one connection is held: an acquisition times out, which opens it.
    assert!(matches!(
        Db::acquire(&m).await,
        Err(PoolError::Timeout { .. })
    ));
    assert_eq!(breaker(&m), axum_pools::BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;

    // The one probe waits for the held connection and is cancelled.
    let cancelled = tokio::time::timeout(Duration::from_millis(10), Db::acquire(&m)).await;
    assert!(cancelled.is_err(), "the probe was still waiting");
    assert_eq!(breaker(&m), axum_pools::BreakerState::HalfOpen);

    // Its permit came back: the next acquisition is the probe, not refused.
    let next = tokio::spawn({
        let m = m.clone();
        async move { Db::acquire(&m).await.map(drop) }
    });
    tokio::task::yield_now().await;
    drop(held);
    next.await.unwrap().expect("admitted as the probe");
    assert_eq!(breaker(&m), axum_pools::BreakerState::Closed);
}
