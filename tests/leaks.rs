//! Leak detection, slow-acquire warnings and the `pool.acquire` span, seen in
//! the logs (paused clock, SQLite).
#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use axum_pools::{DbConfig, DbConn, PoolManager, SqliteConnection};
use common::{Logs, eventually};

async fn manager(config: DbConfig) -> PoolManager {
    PoolManager::builder()
        .database::<SqliteConnection>("main", config.health_check_interval(None))
        .build()
        .await
        .unwrap()
}

// Advances paused time: the leak watch follows it with `test-util`.
#[cfg(feature = "test-util")]
#[tokio::test(start_paused = true)]
async fn a_lease_held_past_leak_threshold_is_reported_with_its_route_and_again_when_returned() {
    use std::sync::Arc;

    use axum::{Extension, Router, extract::Path, routing::get};
    use axum_pools::PoolLayer;
    use common::get as req;
    use tokio::sync::Semaphore;
    use tower::ServiceExt;

    let logs = Logs::default();
    let _guard = logs.install(tracing::Level::DEBUG);
    let (_dir, path) = common::sqlite_file();
    let m = manager(DbConfig::from_url(&path).leak_threshold(Some(Duration::from_secs(5)))).await;
    let gate = Arc::new(Semaphore::new(0));
    let app = Router::new()
        .route(
            "/reports/{id}",
            get(
                |Path(_id): Path<u32>,
                 Extension(gate): Extension<Arc<Semaphore>>,
                 db: DbConn<SqliteConnection>| async move {
                    let _permit = gate.acquire().await.unwrap();
                    drop(db);
                    "done"
                },
            ),
        )
        .layer(Extension(gate.clone()))
        .layer(PoolLayer::new(m.clone()));

    let request = tokio::spawn(app.oneshot(req("/reports/7")));
    eventually("the handler holds its lease", || {
        m.stats_of("main").unwrap().active == 1
    })
    .await;
    tokio::time::advance(Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        m.stats_of("main").unwrap().leaks,
        0,
        "not yet past the threshold"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    eventually("the leak is reported", || {
        m.stats_of("main").unwrap().leaks == 1
    })
    .await;
    let text = logs.text();
    let warning = text
        .lines()
        .find(|l| l.contains("possible connection leak"))
        .unwrap_or_else(|| panic!("no leak warning in:\n{text}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("pool=\"main\""), "{warning}");
    assert!(warning.contains("route=\"GET /reports/{id}\""), "{warning}");

    // Reported once, however long it stays out.
    tokio::time::advance(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(m.stats_of("main").unwrap().leaks, 1);

    gate.add_permits(1);
    request.await.unwrap().unwrap();
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("reported as a possible leak was returned")
                && l.contains("GET /reports/{id}")),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_acquisitions_warn_and_every_acquisition_has_a_span() {
    let logs = Logs::default();
    let _guard = logs.install(tracing::Level::DEBUG);
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        DbConfig::from_url(&path)
            .max_size(1)
            .slow_acquire_threshold(Some(Duration::from_secs(1))),
    )
    .await;
    let held = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
    let waiter = tokio::spawn({
        let m = m.clone();
        async move { DbConn::<SqliteConnection>::acquire(&m).await.map(drop) }
    });
    eventually("a request waits", || {
        m.stats_of("main").unwrap().waiting == 1
    })
    .await;
    tokio::time::advance(Duration::from_millis(1500)).await;
    drop(held);
    waiter.await.unwrap().unwrap();
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("slow acquire") && l.contains("WARN")),
        "{text}"
    );
    let spans: Vec<_> = text
        .lines()
        .filter(|l| l.contains("pool.acquire") && l.contains("close"))
        .collect();
    assert_eq!(spans.len(), 2, "{text}");
    assert!(
        spans
            .iter()
            .all(|l| l.contains("outcome=\"ok\"") || l.contains("outcome=ok")),
        "{spans:?}"
    );
    assert!(
        spans[1].contains("wait_us=15"),
        "the second waited 1.5 s: {spans:?}"
    );
    assert_eq!(
        m.stats_of("main").unwrap().leaks,
        0,
        "leaks are not watched without a threshold"
    );
}
