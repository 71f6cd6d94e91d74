//! The original test plan's scenarios that no other test proved, one test
//! each, named after its scenario (TESTING.md maps every scenario, these and
//! the ones proved elsewhere, to its test). Real servers where the scenario
//! says so; the timing bounds are the plan's, generous by design, and the
//! real figures are printed.
#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod common;

use std::time::{Duration, Instant};

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{
    DbConfig, DbConn, HealthStatus, PoolConfig, PoolError, PoolLayer, PoolManager, SqliteConnection,
};
use common::{get as req, unique};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tower::ServiceExt;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

async fn sqlite(config: impl FnOnce(DbConfig) -> DbConfig) -> (tempfile::TempDir, PoolManager) {
    let (dir, path) = common::sqlite_file();
    let manager = PoolManager::builder()
        .database::<SqliteConnection>("main", config(DbConfig::from_url(path)))
        .build()
        .await
        .unwrap();
    (dir, manager)
}

async fn postgres(name: &str, config: DbConfig) -> PoolManager {
    PoolManager::builder()
        .database::<AsyncPgConnection>(name, config)
        .build()
        .await
        .unwrap()
}

// ---------- Configuration ----------

#[test]
fn config_negative_min_size_is_rejected_naming_the_field() {
    // From the environment: the variable is named with its value.
    let err = PoolConfig::from_lookup("P", env(&[("P_MIN_SIZE", "-1")])).unwrap_err();
    assert_eq!(err.field(), "P_MIN_SIZE");
    assert_eq!(err.value(), Some("-1"));
    assert_eq!(
        err.to_string(),
        "invalid pool config: P_MIN_SIZE = -1: must be a whole number, e.g. 16"
    );
    // From a config file: the key is named.
    let err = serde_json::from_str::<DbConfig>(r#"{"url": "db.sqlite", "min_size": -1}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("min_size: "), "{err}");
    assert!(err.contains("-1"), "{err}");
}

#[test]
fn config_negative_idle_timeout_is_rejected_naming_the_field() {
    let err = PoolConfig::from_lookup("P", env(&[("P_IDLE_TIMEOUT", "-5s")])).unwrap_err();
    assert_eq!(err.field(), "P_IDLE_TIMEOUT");
    assert!(
        err.to_string()
            .starts_with("invalid pool config: P_IDLE_TIMEOUT = -5s: must be a duration like"),
        "{err}"
    );
    let err = serde_json::from_str::<DbConfig>(r#"{"url": "db.sqlite", "idle_timeout": "-5s"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("idle_timeout: "), "{err}");
    // In code a Duration cannot be negative; zero, its nearest, is refused.
    let err = PoolConfig::default()
        .idle_timeout(Some(Duration::ZERO))
        .validate()
        .unwrap_err();
    assert_eq!(err.field(), "idle_timeout");
}

// ---------- Races ----------

async fn manager_facts(manager: PoolManager) -> String {
    let _db = DbConn::<SqliteConnection>::acquire(&manager).await.unwrap();
    format!(
        "{}:{}",
        manager.pool_names().join(","),
        manager.is_draining()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_100_concurrent_callers_get_the_one_built_manager() {
    let (_dir, built) = sqlite(|c| c.max_size(4)).await;
    let app = Router::new()
        .route("/manager", get(manager_facts))
        .layer(PoolLayer::new(built.clone()));
    let callers: Vec<_> = (0..100)
        .map(|_| tokio::spawn(app.clone().oneshot(req("/manager"))))
        .collect();
    for caller in callers {
        let response = caller.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            common::body_text(response).await,
            "main:false",
            "initialized (its pool registered) and not shut down"
        );
    }
    // Every caller's manager was the built one: its pool counted them all.
    let s = built.stats_of("main").unwrap();
    assert_eq!((s.leases, s.active), (100, 0), "{s:?}");
    assert!(!built.is_draining());
}

// ---------- Timeouts ----------

#[tokio::test(start_paused = true)]
async fn timeouts_second_acquisition_fails_with_the_timeout_error_while_the_only_connection_is_held()
 {
    let (_dir, m) = sqlite(|c| c.max_size(1).acquire_timeout(Duration::from_secs(1))).await;
    let held = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = DbConn::<SqliteConnection>::acquire(&m).await.unwrap_err();
    assert!(matches!(err, PoolError::Timeout { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(err.to_string().contains("within 1s"), "{err}");
    assert_eq!(m.stats_of("main").unwrap().timeouts, 1);
    drop(held);
}

#[tokio::test]
async fn timeouts_health_check_against_a_hanging_postgres_is_unhealthy_within_acquire_timeout_plus_1s()
 {
    let Some(server) = common::servers::start_cluster(None) else {
        return;
    };
    let url = server.url();
    let acquire = Duration::from_secs(1);
    let m = postgres(
        "hung",
        DbConfig::from_url(url)
            .acquire_timeout(acquire)
            .validation_timeout(Duration::from_millis(500))
            .health_check_interval(None),
    )
    .await;
    server.freeze();
    let start = Instant::now();
    let report = m.check_health().await;
    let took = start.elapsed();
    server.thaw();
    println!("health check of a frozen Postgres: {took:?}");
    assert_eq!(report.status, HealthStatus::Fail, "{report:?}");
    assert!(took < acquire + Duration::from_secs(1), "took {took:?}");
    // Thawed, it passes again.
    assert_eq!(m.check_health().await.status, HealthStatus::Pass);
}

// ---------- Memory ----------

/// Resident memory of this process, from `/proc/self/status`.
fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

/// Run by `scripts/bench-rss.sh` (release build), not the quick suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "one million leases; scripts/bench-rss.sh runs it"]
async fn memory_rss_is_flat_over_one_million_leases() {
    const TASKS: u64 = 16;
    let (_dir, m) = sqlite(|c| c.min_size(16).max_size(16).health_check_interval(None)).await;
    let leases = |per_task: u64| {
        let m = m.clone();
        async move {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let m = m.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            drop(DbConn::<SqliteConnection>::acquire(&m).await.unwrap());
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    leases(100_000 / TASKS).await; // warm-up: every structure at its size
    let before = rss_bytes();
    let start = Instant::now();
    leases(1_000_000 / TASKS).await;
    let took = start.elapsed();
    let after = rss_bytes();
    let s = m.stats_of("main").unwrap();
    println!(
        "rss over 1 000 000 leases: before {before} B, after {after} B, change {} B; {took:?} ({:.0} ns/lease)",
        after - before,
        took.as_nanos() as f64 / 1e6
    );
    assert_eq!((s.leases, s.active), (1_100_000, 0), "{s:?}");
    assert!(
        (after - before).abs() <= 1 << 20,
        "RSS moved {} B",
        after - before
    );
}

// ---------- Manager ----------

async fn until_connections(admin: &mut AsyncPgConnection, app: &str, want: i64) -> i64 {
    let mut now = -1;
    for _ in 0..250 {
        now = common::pg_connections_named(admin, app).await;
        if now == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    now
}

#[tokio::test]
async fn manager_is_usable_as_a_scoped_value_and_closes_its_connections_at_the_end_of_the_block() {
    let url = require!(common::pg_url());
    let mut admin = AsyncPgConnection::establish(&url).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    for ending in ["drain", "drop"] {
        let app = unique("axp_scoped");
        let tagged = format!("{url}{sep}application_name={app}");
        {
            let m = postgres(
                "scoped",
                DbConfig::from_url(&tagged).min_size(3).max_size(3),
            )
            .await;
            let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
            db.batch_execute("SELECT 1").await.unwrap();
            drop(db);
            assert_eq!(until_connections(&mut admin, &app, 3).await, 3);
            if ending == "drain" {
                let report = m.drain(Duration::from_secs(5)).await;
                assert_eq!(report.outstanding, 0, "{report:?}");
            }
        }
        assert_eq!(
            until_connections(&mut admin, &app, 0).await,
            0,
            "{ending}: the block's end closed its connections"
        );
    }
}

// ---------- Performance ----------

#[tokio::test]
async fn performance_100_sequential_acquisitions_average_under_50ms_none_above_200ms() {
    let url = require!(common::pg_url());
    let m = postgres("db", DbConfig::from_url(url).max_size(4)).await;
    let mut took = Vec::with_capacity(100);
    for _ in 0..100 {
        let start = Instant::now();
        let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
        took.push(start.elapsed());
        db.batch_execute("SELECT 1").await.unwrap();
    }
    let mean = took.iter().sum::<Duration>() / 100;
    let max = *took.iter().max().unwrap();
    println!("100 sequential acquisitions: mean {mean:?}, max {max:?}");
    assert!(mean < Duration::from_millis(50), "mean {mean:?}");
    assert!(max < Duration::from_millis(200), "max {max:?}");
    assert_eq!(m.stats_of("db").unwrap().timeouts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn performance_50_concurrent_leases_holding_10ms_finish_under_2s_with_a_pool_of_10() {
    let url = require!(common::pg_url());
    let m = postgres("db", DbConfig::from_url(url).max_size(10)).await;
    let start = Instant::now();
    let leases: Vec<_> = (0..50)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                let mut db = DbConn::<AsyncPgConnection>::acquire(&m).await.unwrap();
                db.batch_execute("SELECT pg_sleep(0.01)").await.unwrap();
            })
        })
        .collect();
    for lease in leases {
        lease.await.unwrap();
    }
    let took = start.elapsed();
    println!("50 leases of 10 ms through a pool of 10: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let s = m.stats_of("db").unwrap();
    assert_eq!((s.leases, s.timeouts, s.active), (50, 0, 0), "{s:?}");
    assert!(s.size <= 10);
}

// ---------- The map itself ----------

/// Every test TESTING.md's table names exists where it says (a renamed or
/// removed test fails this instead of leaving the map wrong), and every
/// scenario has a row.
#[test]
fn testing_md_maps_every_scenario_to_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("TESTING.md")).unwrap();
    let mut ids = Vec::new();
    for row in map
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| id"))
    {
        let cells: Vec<&str> = row.split(" | ").collect();
        if cells.len() < 5 || cells[0].trim_start_matches("| ").len() > 3 {
            continue;
        }
        ids.push(cells[0].trim_start_matches("| ").to_owned());
        let mut file = String::new();
        let mut named = 0;
        for quoted in cells[2].split('`').skip(1).step_by(2) {
            let (path, name) = match quoted.split_once("::") {
                Some(("", rest)) => (file.clone(), rest),
                Some((path, rest)) => (path.to_owned(), rest),
                None => continue,
            };
            file = path;
            let function = name.rsplit("::").next().unwrap();
            let source = std::fs::read_to_string(root.join(&file))
                .unwrap_or_else(|e| panic!("{}: {file}: {e}", cells[0]));
            assert!(
                source.contains(&format!("fn {function}(")),
                "{}: no test {function} in {file}",
                cells[0]
            );
            named += 1;
        }
        assert!(named > 0, "{row}: names no test");
    }
    let expected = [
        "C1", "C2", "C3", "C4", "C5", "R1", "R2", "R3", "T1", "T2", "M1", "M2", "M3", "M4", "E1",
        "E2", "E3", "E4", "G1", "G2", "G3", "G4", "G5", "G6", "P1", "P2", "I1", "I2", "I3", "I4",
    ];
    assert_eq!(ids, expected);
}
