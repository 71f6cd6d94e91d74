//! `/pools/metrics` parsed by a Prometheus text parser, and the live/ready
//! probes (SQLite, always available).
#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use axum::{Router, http::StatusCode};
use axum_pools::{DbConfig, DbConn, PoolManager, SqliteConnection, pool_name};
use common::{body_json, body_text, get};
use prometheus_parse::{Scrape, Value};
use tower::ServiceExt;

pool_name!(Main = "main");

async fn two_pools() -> (tempfile::TempDir, tempfile::TempDir, PoolManager) {
    let (d1, p1) = common::sqlite_file();
    let (d2, p2) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>("main", DbConfig::from_url(&p1).max_size(7).min_size(2))
        .database::<SqliteConnection>("reports", DbConfig::from_url(&p2).max_size(3))
        .build()
        .await
        .unwrap();
    (d1, d2, m)
}

#[tokio::test]
async fn metrics_parse_and_carry_every_series_for_every_pool() {
    let (_d1, _d2, m) = two_pools().await;
    for _ in 0..12 {
        drop(DbConn::<SqliteConnection, Main>::acquire(&m).await.unwrap());
    }
    let app: Router = m.router();
    let r = app.oneshot(get("/pools/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = body_text(r).await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");

    let find = |metric: &str, pool: &str, extra: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.get("pool_name") == Some(pool)
                    && extra.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("no {metric} for {pool} {extra:?} in:\n{text}"))
            .value
            .clone()
    };
    let number = |v: Value| match v {
        Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => n,
        other => panic!("not a number: {other:?}"),
    };
    for pool in ["main", "reports"] {
        for state in ["idle", "used"] {
            find("db_client_connection_count", pool, Some(("state", state)));
        }
        for metric in [
            "db_client_connection_max",
            "db_client_connection_idle_min",
            "db_client_connection_pending_requests",
            "db_client_connection_timeouts_total",
            "axum_pools_leases_total",
            "axum_pools_shed_total",
            "axum_pools_backend_errors_total",
            "axum_pools_breaker_rejections_total",
            "axum_pools_health_status",
        ] {
            find(metric, pool, None);
        }
        for histogram in [
            "db_client_connection_wait_time_seconds",
            "db_client_connection_use_time_seconds",
            "db_client_connection_create_time_seconds",
        ] {
            assert!(
                matches!(find(histogram, pool, None), Value::Histogram(_)),
                "{histogram} for {pool} is a histogram"
            );
        }
        assert_eq!(
            number(find(
                "axum_pools_breaker_state",
                pool,
                Some(("state", "closed"))
            )),
            1.0
        );
        assert_eq!(
            number(find(
                "axum_pools_breaker_state",
                pool,
                Some(("state", "open"))
            )),
            0.0
        );
    }
    assert_eq!(number(find("db_client_connection_max", "main", None)), 7.0);
    assert_eq!(
        number(find("db_client_connection_idle_min", "main", None)),
        2.0
    );
    assert_eq!(number(find("axum_pools_leases_total", "main", None)), 12.0);
    assert_eq!(
        number(find("axum_pools_leases_total", "reports", None)),
        0.0
    );
    assert_eq!(number(find("axum_pools_health_status", "main", None)), 0.0);
    let Value::Histogram(buckets) = find("db_client_connection_use_time_seconds", "main", None)
    else {
        unreachable!()
    };
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf bucket");
    assert_eq!(
        inf.count, 12.0,
        "every returned lease is in the use-time histogram"
    );
    let Value::Histogram(created) = find("db_client_connection_create_time_seconds", "main", None)
    else {
        unreachable!()
    };
    assert!(
        created
            .iter()
            .any(|b| b.less_than.is_infinite() && b.count >= 2.0),
        "min_size 2 opened"
    );
}

#[tokio::test]
async fn live_always_passes_and_ready_turns_503_while_draining() {
    let (_d1, _d2, m) = two_pools().await;
    let app: Router = m.router();
    let r = app
        .clone()
        .oneshot(get("/pools/health/ready"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await["status"], "pass");

    let held = DbConn::<SqliteConnection, Main>::acquire(&m).await.unwrap();
    let drain = tokio::spawn({
        let m = m.clone();
        async move { m.drain(Duration::from_secs(30)).await }
    });
    common::eventually("draining", || m.is_draining()).await;
    let r = app
        .clone()
        .oneshot(get("/pools/health/ready"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(r).await;
    assert_eq!(body["status"], "fail");
    assert_eq!(body["pools"][0]["error"], "pool is draining");
    let r = app
        .clone()
        .oneshot(get("/pools/health/live"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "liveness checks no dependency");
    drop(held);
    drain.await.unwrap();
    let r = app.oneshot(get("/pools/health/ready")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_probe_names_are_reserved() {
    let (_d, path) = common::sqlite_file();
    let err = PoolManager::builder()
        .database::<SqliteConnection>("ready", DbConfig::from_url(&path))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("name = \"ready\": is reserved"),
        "{err}"
    );
}

#[tokio::test]
async fn health_is_ietf_health_json_with_saturation_and_optional_pools() {
    let (_d1, p1) = common::sqlite_file();
    let (_d2, p2) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>(
            "main",
            DbConfig::from_url(&p1)
                .max_size(1)
                .health_check_interval(None),
        )
        .database::<SqliteConnection>(
            "extra",
            DbConfig::from_url(&p2)
                .required(false)
                .health_check_interval(None),
        )
        .build()
        .await
        .unwrap();
    let app: Router = m.router();
    let r = app.clone().oneshot(get("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/health+json");
    let body = body_json(r).await;
    assert_eq!(body["status"], "pass");
    let rt = &body["checks"]["main:responseTime"][0];
    assert_eq!(
        (rt["componentId"].as_str(), rt["observedUnit"].as_str()),
        (Some("main"), Some("ms"))
    );
    assert_eq!(rt["componentType"], "datastore");
    assert!(rt["observedValue"].as_f64().is_some() && rt["time"].is_string());
    assert_eq!(
        body["checks"]["main:connections"][0]["observedUnit"],
        "percent"
    );

    // Every connection busy: saturated, so warn (still 200).
    let held = DbConn::<SqliteConnection, Main>::acquire(&m).await.unwrap();
    let r = app.clone().oneshot(get("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = body_json(r).await;
    assert_eq!(body["status"], "warn");
    let conns = &body["checks"]["main:connections"][0];
    assert_eq!(
        (conns["status"].as_str(), conns["observedValue"].as_f64()),
        (Some("warn"), Some(100.0))
    );
    assert!(
        conns["output"].as_str().unwrap().starts_with("saturated"),
        "{conns}"
    );
    drop(held);

    // An optional pool failing is a warning, not a failure.
    m.force_open("extra").unwrap();
    let report = m.check_health().await;
    assert_eq!(report.pools[1].status, axum_pools::HealthStatus::Fail);
    assert_eq!(report.status, axum_pools::HealthStatus::Warn);
    let r = app.oneshot(get("/pools/health/ready")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "ready: the required pools pass");
}

#[tokio::test]
async fn health_details_follow_the_policy() {
    let (_d1, _d2, m) = two_pools().await;
    let never: Router = m.router_with(axum_pools::HealthDetails::Never);
    let r = never.clone().oneshot(get("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await, serde_json::json!({"status": "pass"}));
    let r = never
        .oneshot(get("/pools/health/no-such-pool"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "names are not revealed");
    assert_eq!(body_json(r).await, serde_json::json!({"status": "pass"}));

    let token: Router = m.router_with(axum_pools::HealthDetails::when(|p| {
        p.headers
            .get("x-health-token")
            .is_some_and(|t| t == "let-me-see")
    }));
    let r = token.clone().oneshot(get("/pools/health")).await.unwrap();
    assert_eq!(body_json(r).await, serde_json::json!({"status": "pass"}));
    let req = axum::http::Request::get("/pools/health")
        .header("x-health-token", "let-me-see")
        .body(axum::body::Body::empty())
        .unwrap();
    let body = body_json(token.oneshot(req).await.unwrap()).await;
    assert_eq!(body["pools"].as_array().unwrap().len(), 2);
    assert!(body["checks"]["main:responseTime"].is_array());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_rejections_are_in_the_metrics() {
    let (_d1, _d2, m) = two_pools().await;
    let app: Router = Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(
            axum_pools::layer::RateLimitLayer::new(1, Duration::from_secs(60))
                .key(axum_pools::layer::KeyBy::Global)
                .metrics(&m, "api"),
        );
    for _ in 0..3 {
        let _ = app.clone().oneshot(get("/")).await.unwrap();
    }
    let text = body_text(
        m.router::<()>()
            .oneshot(get("/pools/metrics"))
            .await
            .unwrap(),
    )
    .await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "axum_pools_rate_limited_total" && s.labels.get("limiter") == Some("api")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        matches!(sample.value, Value::Counter(n) if n == 2.0),
        "{:?}",
        sample.value
    );
}

/// The process series, with the names Prometheus' clients use, and the
/// runtime's: present, and with values this process can have.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_and_runtime_series_are_there_with_plausible_values() {
    let (_d1, _d2, m) = two_pools().await;
    let app: Router = m.router();
    let text = body_text(app.oneshot(get("/pools/metrics")).await.unwrap()).await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");
    let value = |metric: &str| {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .unwrap_or_else(|| panic!("no {metric} in:\n{text}"));
        match sample.value {
            Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => n,
            ref other => panic!("{metric} is not a number: {other:?}"),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value("process_cpu_seconds_total") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
    assert!(value("process_threads") >= 2.0);
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
    let (open, max) = (value("process_open_fds"), value("process_max_fds"));
    assert!(open >= 3.0 && max >= open, "{open} of {max}");
    assert_eq!(value("tokio_workers"), 2.0);
    assert!(value("tokio_alive_tasks") >= 1.0);
}
