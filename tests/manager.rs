//! The manager: build errors, pool selection, drain, and setup mistakes
//! answered 500 with the fix (SQLite, always available).
#![cfg(feature = "sqlite")]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{
    DbConfig, DbConn, HealthDetails, HealthStatus, Hooks, PoolError, PoolLayer, PoolManager,
    SqliteConnection, pool_name,
};
use common::{body_json, eventually, get as req};
use tokio::sync::Semaphore;
use tower::ServiceExt;

type Db = DbConn<SqliteConnection>;

pool_name!(Reports = "reports");
pool_name!(Missing = "missing");

fn config(path: &str) -> DbConfig {
    DbConfig::from_url(path).health_check_interval(None)
}

async fn sqlite_manager(max_size: usize) -> (tempfile::TempDir, PoolManager) {
    let (dir, path) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&path).max_size(max_size))
        .build()
        .await
        .unwrap();
    (dir, m)
}

#[tokio::test]
async fn an_invalid_config_names_the_pool_the_field_and_the_value() {
    let (_dir, path) = common::sqlite_file();
    let err = PoolManager::builder()
        .database::<SqliteConnection>("primary", config(&path).max_size(0))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, PoolError::Config(_)));
    assert_eq!(
        err.to_string(),
        "invalid config for pool 'primary': max_size = 0: must be at least 1"
    );

    let err = PoolManager::builder()
        .database::<SqliteConnection>("primary", config(&path).acquire_timeout(Duration::ZERO))
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config for pool 'primary': acquire_timeout = 0s: must be greater than zero"
    );

    let err = PoolManager::builder()
        .database::<SqliteConnection>("a", config(&path))
        .database::<SqliteConnection>("a", config(&path))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("name = \"a\": is registered twice"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unusable_url_fails_the_build_naming_the_pool() {
    let err = PoolManager::builder()
        .database::<SqliteConnection>(
            "notes",
            DbConfig::from_url("/nonexistent-dir/axum-pools/x.db?password=s3cr3t-pw"),
        )
        .build()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PoolError::Setup { .. }), "{msg}");
    assert!(msg.starts_with("failed to set up pool 'notes' ("), "{msg}");
    assert!(!msg.contains("s3cr3t-pw"), "{msg}");
    assert_eq!(err.pool(), Some("notes"));
}

/// An optional pool (`required(false)`) that cannot open builds with a
/// warning and shows as failing, optional, in health; the same pool
/// required fails the build.
#[tokio::test]
async fn an_optional_pool_that_is_down_builds_and_a_required_one_does_not() {
    let (_dir, good) = common::sqlite_file();
    let bad = || DbConfig::from_url("/nonexistent-dir/axum-pools/x.db").health_check_interval(None);
    let m = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&good))
        .database::<SqliteConnection>("reports", bad().required(false))
        .build()
        .await
        .expect("an optional pool that is down failed the build");
    let health = m.health().await;
    assert_eq!(health.status, HealthStatus::Warn);
    let reports = health.pools.iter().find(|p| p.pool == "reports").unwrap();
    assert_eq!(reports.status, HealthStatus::Fail);
    assert!(!reports.required);

    let err = PoolManager::builder()
        .database::<SqliteConnection>("reports", bad())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.pool(), Some("reports"));
}

#[tokio::test]
async fn a_failed_build_closes_the_pools_it_opened() {
    let (_dir, good) = common::sqlite_file();
    // A SQLite pool cannot show its connections from outside; the Postgres
    // version of this test (tests/backends.rs) counts them on the server.
    // Here: the failing build must not hang on the pools it opened.
    let err = PoolManager::builder()
        .database::<SqliteConnection>("good", config(&good).min_size(3).max_size(3))
        .database::<SqliteConnection>("bad", DbConfig::from_url("/nonexistent-dir/x.db"))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.pool(), Some("bad"));
}

async fn plain(db: Db) -> String {
    db.pool_name().to_owned()
}

async fn reports(db: DbConn<SqliteConnection, Reports>) -> String {
    db.pool_name().to_owned()
}

async fn missing(_db: DbConn<SqliteConnection, Missing>) -> &'static str {
    "unreachable"
}

#[tokio::test]
async fn required_pools_are_checked_at_build() {
    let (_dir, path) = common::sqlite_file();
    let err = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&path))
        .require::<DbConn<SqliteConnection>>()
        .require::<DbConn<SqliteConnection, Missing>>()
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no pool named 'missing' is registered (registered: main); register it with `PoolManager::builder()`"
    );
    let (_d2, other) = common::sqlite_file();
    let err = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&path))
        .database::<SqliteConnection>("reports", config(&other))
        .require::<axum_pools::DbTx<SqliteConnection>>()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, PoolError::AmbiguousPool { .. }), "{err}");
    PoolManager::builder()
        .database::<SqliteConnection>("main", config(&path))
        .database::<SqliteConnection>("reports", config(&other))
        .require::<DbConn<SqliteConnection, Reports>>()
        .build()
        .await
        .expect("a named pool that exists passes");
}

#[tokio::test]
async fn an_extractor_without_pool_layer_answers_500_naming_the_fix() {
    let app: Router = Router::new().route("/", get(plain));
    let response = app.oneshot(req("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body_json(response).await;
    assert_eq!(body["type"], "urn:axum-pools:problem:missing-layer");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(".layer(PoolLayer::new(manager))"),
        "{body}"
    );
}

#[tokio::test]
async fn pools_are_picked_by_type_or_by_marker_and_mistakes_name_the_registered_pools() {
    let (_d1, p1) = common::sqlite_file();
    let (_d2, p2) = common::sqlite_file();
    let one = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&p1))
        .build()
        .await
        .unwrap();
    let two = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&p1))
        .database::<SqliteConnection>("reports", config(&p2))
        .build()
        .await
        .unwrap();
    let routes = || {
        Router::new()
            .route("/plain", get(plain))
            .route("/reports", get(reports))
            .route("/missing", get(missing))
    };
    let single = routes()
        .route(
            "/manager",
            get(|m: PoolManager| async move { m.pool_names().join(",") }),
        )
        .layer(PoolLayer::new(one));
    let double = routes().layer(PoolLayer::new(two));

    let r = single.clone().oneshot(req("/plain")).await.unwrap();
    assert_eq!(common::body_text(r).await, "main");
    let r = single.clone().oneshot(req("/manager")).await.unwrap();
    assert_eq!(
        common::body_text(r).await,
        "main",
        "the manager is an extractor too"
    );
    let r = double.clone().oneshot(req("/reports")).await.unwrap();
    assert_eq!(common::body_text(r).await, "reports");

    // Two pools of one type and no name: ambiguous, 500 naming both.
    let r = double.clone().oneshot(req("/plain")).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let detail = body_json(r).await["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("(main, reports)"), "{detail}");
    assert!(
        detail.contains("pool_name!(Primary = \"main\")"),
        "{detail}"
    );

    // A marker naming no registered pool.
    let r = single.oneshot(req("/missing")).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let detail = body_json(r).await["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("no pool named 'missing' is registered (registered: main)"),
        "{detail}"
    );
}

#[tokio::test]
async fn drain_waits_for_the_active_lease_then_refuses_new_ones() {
    let (_dir, m) = sqlite_manager(2).await;
    let gate = Arc::new(Semaphore::new(0));
    let app = Router::new()
        .route(
            "/hold",
            get({
                let gate = gate.clone();
                move |db: Db| async move {
                    let _p = gate.acquire().await.unwrap();
                    drop(db);
                    "done"
                }
            }),
        )
        .route("/one", get(plain))
        .layer(PoolLayer::new(m.clone()));

    let in_flight = tokio::spawn(app.clone().oneshot(req("/hold")));
    eventually("the request holds its lease", || {
        m.stats_of("main").unwrap().active == 1
    })
    .await;

    let drain = tokio::spawn({
        let m = m.clone();
        async move { m.drain(Duration::from_secs(30)).await }
    });
    eventually("draining started", || m.is_draining()).await;

    // New leases are refused at once, 503 with Retry-After.
    let r = app.clone().oneshot(req("/one")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(
        body_json(r).await["type"],
        "urn:axum-pools:problem:shutting-down"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!drain.is_finished(), "drain must wait for the active lease");

    // The request in flight finishes normally, then drain completes.
    gate.add_permits(1);
    assert_eq!(in_flight.await.unwrap().unwrap().status(), StatusCode::OK);
    let report = drain.await.unwrap();
    assert_eq!(report.outstanding, 0);

    // Idempotent, and still refusing.
    assert_eq!(m.drain(Duration::from_secs(1)).await, report);
    let err = Db::acquire(&m).await.unwrap_err();
    assert!(matches!(err, PoolError::ShuttingDown { .. }), "{err}");
    let s = m.stats_of("main").unwrap();
    assert_eq!(s.rejected_draining, 2);
    assert_eq!(s.size, 0, "closed after drain: {s:?}");
    assert_eq!(m.health().await.status, HealthStatus::Fail);
}

/// A request for a connection of `m`'s pool "main", once it waits.
async fn waiting_request(m: &PoolManager) -> tokio::task::JoinHandle<Result<(), PoolError>> {
    let waiter = tokio::spawn({
        let m = m.clone();
        async move { Db::acquire(&m).await.map(|_| ()) }
    });
    eventually("a request waits", || {
        m.stats_of("main").unwrap().waiting == 1
    })
    .await;
    waiter
}

#[tokio::test(start_paused = true)]
async fn drain_refuses_waiters_and_gives_up_on_leases_at_the_deadline() {
    let (_dir, m) = sqlite_manager(1).await;
    let held = Db::acquire(&m).await.unwrap();
    let waiter = waiting_request(&m).await;

    let report = m.drain(Duration::from_secs(3)).await;
    assert_eq!(
        report.outstanding, 1,
        "the held lease was not returned in time"
    );
    assert!(report.elapsed >= Duration::from_secs(3));
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, PoolError::ShuttingDown { .. }), "{err}");
    drop(held); // returning after close is harmless
    assert_eq!(m.stats_of("main").unwrap().active, 0);
}

/// A lease returned just before the drain, whose connection went to a
/// request that waited for it: the waiter is refused, and the connection is
/// closed with the pool, not left open after the drain.
#[tokio::test] // one thread: the waiter runs only when this task yields
async fn a_connection_handed_to_a_waiter_as_the_drain_starts_is_closed_with_the_pool() {
    let (_dir, m) = sqlite_manager(1).await;
    let held = Db::acquire(&m).await.unwrap();
    let waiter = waiting_request(&m).await;

    // The connection goes back and its slot to the waiter, which has not
    // run yet when the drain starts, and ends.
    drop(held);
    let report = m.drain(Duration::from_secs(5)).await;
    assert_eq!(report.outstanding, 0);
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, PoolError::ShuttingDown { .. }), "{err}");
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.size, s.idle, s.active), (0, 0, 0), "{s:?}");
    assert_eq!(
        s.closed, s.created,
        "every connection opened was closed: {s:?}"
    );
}

/// Draining refuses at once a request that is opening a connection for
/// itself (here its `after_create` hook never finishes, as a connect to a
/// server that hangs), instead of leaving it to its `acquire_timeout`.
#[tokio::test(start_paused = true)]
async fn drain_refuses_a_request_that_is_opening_a_connection() {
    let (_dir, path) = common::sqlite_file();
    let created = Arc::new(AtomicUsize::new(0));
    let hooks = Hooks::<SqliteConnection>::new().after_create({
        let created = created.clone();
        move |_| {
            // The warm-up's connection opens; every later one hangs.
            let hangs = created.fetch_add(1, Ordering::SeqCst) > 0;
            Box::pin(async move {
                if hangs {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        }
    });
    let config = config(&path)
        .max_size(2)
        .acquire_timeout(Duration::from_secs(30));
    let m = PoolManager::builder()
        .database_with_hooks::<SqliteConnection>("main", config, hooks)
        .build()
        .await
        .unwrap();
    let held = Db::acquire(&m).await.unwrap();
    let opening = tokio::spawn({
        let m = m.clone();
        async move { Db::acquire(&m).await.map(|_| ()) }
    });
    eventually("a second connection is being opened", || {
        created.load(Ordering::SeqCst) == 2
    })
    .await;

    let start = tokio::time::Instant::now();
    let drain = tokio::spawn({
        let m = m.clone();
        async move { m.drain(Duration::from_secs(10)).await }
    });
    let err = opening.await.unwrap().unwrap_err();
    assert!(matches!(err, PoolError::ShuttingDown { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        start.elapsed()
    );
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.timeouts, s.breaker.opened), (0, 0), "{s:?}");
    drop(held);
    assert_eq!(drain.await.unwrap().outstanding, 0);
}

#[tokio::test]
async fn drain_on_plugs_into_graceful_shutdown() {
    let (_dir, m) = sqlite_manager(2).await;
    let app = Router::new()
        .route("/one", get(plain))
        .layer(PoolLayer::new(m.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(m.drain_on(async {
                let _ = rx.await;
            }))
            .into_future(),
    );
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(m.is_draining());
    assert_eq!(m.stats_of("main").unwrap().size, 0);
}

#[tokio::test]
async fn health_and_stats_routes_serve_every_pool_and_404_unknown_names() {
    let (_d1, p1) = common::sqlite_file();
    let (_d2, p2) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>("main", DbConfig::from_url(&p1))
        .database::<SqliteConnection>("reports", config(&p2))
        .build()
        .await
        .unwrap();
    let app: Router = m.router();

    let r = app.clone().oneshot(req("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = body_json(r).await;
    assert_eq!(body["status"], "pass");
    assert_eq!(body["pools"][0]["pool"], "main");
    assert_eq!(body["pools"][1]["pool"], "reports");
    assert_eq!(body["pools"][0]["backend"], "sqlite");
    assert!(body["pools"][0]["latency_ms"].as_f64().unwrap() >= 0.0);

    let r = app
        .clone()
        .oneshot(req("/pools/health/reports"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await["status"], "pass");

    let r = app.clone().oneshot(req("/pools/stats")).await.unwrap();
    let body = body_json(r).await;
    assert_eq!(body["pools"].as_array().unwrap().len(), 2);
    assert_eq!(body["pools"][0]["max_size"], 10);

    let r = app.clone().oneshot(req("/pools/stats/main")).await.unwrap();
    assert_eq!(body_json(r).await["pool"], "main");

    for uri in ["/pools/health/nope", "/pools/stats/nope"] {
        let r = app.clone().oneshot(req(uri)).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body = body_json(r).await;
        assert_eq!(body["type"], "urn:axum-pools:problem:unknown-pool");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("(registered: main, reports)")
        );
    }

    // A name segment that is not UTF-8: problem+json as well, not text.
    for uri in ["/pools/health/%ff", "/pools/stats/%ff"] {
        let r = app.clone().oneshot(req(uri)).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body = body_json(r).await;
        assert_eq!(
            body["type"], "urn:axum-pools:problem:invalid-path",
            "{body}"
        );
    }

    // Another method than GET: 405 problem+json naming the allowed ones.
    for uri in ["/pools/health", "/pools/stats/main", "/pools/metrics"] {
        let request = axum::http::Request::post(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let r = app.clone().oneshot(request).await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(r.headers()["allow"], "GET, HEAD");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body = body_json(r).await;
        assert_eq!(body["type"], "urn:axum-pools:problem:method-not-allowed");
    }
    // HEAD still answers as GET does.
    let head = axum::http::Request::head("/pools/health/live")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(head).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn with_checks_off_health_is_checked_on_demand_at_most_once_a_second() {
    let (_dir, path) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>("main", config(&path))
        .build()
        .await
        .unwrap();
    let checks = || m.stats_of("main").unwrap().health_checks;
    for _ in 0..20 {
        assert_eq!(m.health().await.status, HealthStatus::Pass);
    }
    assert_eq!(checks(), 1);
    tokio::time::advance(Duration::from_millis(1100)).await;
    m.health().await;
    assert_eq!(checks(), 2);
}

#[tokio::test(start_paused = true)]
async fn periodic_health_checks_refresh_the_cache() {
    let (_dir, path) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>(
            "main",
            DbConfig::from_url(&path).health_check_interval(Some(Duration::from_secs(5))),
        )
        .build()
        .await
        .unwrap();
    let checks = || m.stats_of("main").unwrap().health_checks;
    assert_eq!(checks(), 1, "one check at build");
    assert_eq!(
        m.health_of("main").await.unwrap().status,
        HealthStatus::Pass
    );
    for _ in 0..50 {
        m.health().await;
    }
    assert_eq!(checks(), 1, "the routes read the cache");
    tokio::time::advance(Duration::from_secs(6)).await;
    eventually("the periodic check ran", || checks() == 2).await;
    assert_eq!(
        m.health_of("main").await.unwrap().status,
        HealthStatus::Pass
    );
    assert_eq!(
        m.stats_of("main").unwrap().leases,
        0,
        "health checks are not leases"
    );
}

/// The health routes' default (`HealthDetails::Summary`) shows every pool's
/// status and this crate's own reasons, but not a driver's words; with
/// `HealthDetails::Always` they are shown.
#[tokio::test]
async fn by_default_health_shows_no_driver_words_and_always_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = PoolManager::builder()
        .database::<SqliteConnection>(
            "broken",
            DbConfig::from_url("/nonexistent-dir/for-sure/x.db")
                .required(false)
                .health_check_interval(None),
        )
        .database::<SqliteConnection>(
            "held",
            DbConfig::from_url(dir.path().join("ok.db").to_str().unwrap())
                .health_check_interval(None),
        )
        .build()
        .await
        .unwrap();
    m.force_open("held").unwrap();
    let report = m.check_health().await;
    let driver_words = report.pools[0].error.clone().unwrap();
    assert!(driver_words.contains("unable to open"), "{driver_words}");

    let body = |app: Router, uri: &'static str| async move {
        body_json(app.oneshot(req(uri)).await.unwrap()).await
    };
    let summary = body(m.router(), "/pools/health").await;
    let text = summary.to_string();
    assert!(!text.contains("unable to open"), "{text}");
    assert_eq!(summary["pools"][0]["status"], "fail", "{text}");
    assert!(
        summary["pools"][0]["error"]
            .as_str()
            .unwrap()
            .contains("shown with full health details"),
        "{text}"
    );
    // This crate's own reason stays.
    assert_eq!(
        summary["pools"][1]["error"], "circuit breaker open",
        "{text}"
    );
    let one = body(m.router(), "/pools/health/broken").await;
    assert!(!one.to_string().contains("unable to open"), "{one}");

    let full = body(m.router_with(HealthDetails::Always), "/pools/health").await;
    assert!(full.to_string().contains("unable to open"), "{full}");
}
