//! Lifecycle hooks on a real SQLite pool.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use axum_pools::{DbConfig, DbConn, Hooks, PoolManager, SqliteConnection};
use diesel::{dsl::sql, sql_types::BigInt};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

fn count(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

async fn manager(config: DbConfig, hooks: Hooks<SqliteConnection>) -> PoolManager {
    PoolManager::builder()
        .database_with_hooks::<SqliteConnection>("main", config, hooks)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn create_lease_and_release_hooks_run_where_they_should() {
    let created = Arc::new(AtomicUsize::new(0));
    let leased = Arc::new(AtomicUsize::new(0));
    let reject_next = Arc::new(AtomicBool::new(false));
    let released = Arc::new(Mutex::new(Vec::new()));
    let granted = Arc::new(Mutex::new(Vec::new()));
    let hooks = Hooks::<SqliteConnection>::new()
        .after_create({
            let created = created.clone();
            move |conn| {
                let created = created.clone();
                Box::pin(async move {
                    created.fetch_add(1, Ordering::SeqCst);
                    // Temporary tables belong to one connection.
                    conn.batch_execute(
                        "CREATE TEMP TABLE marker (x INTEGER); INSERT INTO marker VALUES (1)",
                    )
                    .await
                    .map_err(|e| e.to_string())
                })
            }
        })
        .before_lease({
            let (leased, reject_next) = (leased.clone(), reject_next.clone());
            move |_conn| {
                let (leased, reject_next) = (leased.clone(), reject_next.clone());
                Box::pin(async move {
                    leased.fetch_add(1, Ordering::SeqCst);
                    if reject_next.swap(false, Ordering::SeqCst) {
                        Err("rejected by the test".to_owned())
                    } else {
                        Ok(())
                    }
                })
            }
        })
        .after_lease({
            let granted = granted.clone();
            move |l| granted.lock().unwrap().push((l.pool.to_owned(), l.waited))
        })
        .after_release({
            let released = released.clone();
            move |r| released.lock().unwrap().push(r.pool.to_owned())
        });
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        DbConfig::from_url(&path)
            .max_size(2)
            .health_check_interval(None),
        hooks,
    )
    .await;
    assert_eq!(
        count(&created),
        1,
        "the warm-up connection ran after_create"
    );

    for _ in 0..5 {
        let mut db = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
        let n: i64 = diesel::select(sql::<BigInt>("(SELECT COUNT(*) FROM marker)"))
            .get_result(&mut db)
            .await
            .expect("the hook's temp table exists on this connection");
        assert_eq!(n, 1);
    }
    assert_eq!(count(&leased), 5);
    assert_eq!(released.lock().unwrap().len(), 5);
    assert_eq!(granted.lock().unwrap().len(), 5);
    assert!(granted.lock().unwrap().iter().all(|(p, _)| p == "main"));
    assert!(released.lock().unwrap().iter().all(|p| p == "main"));

    // A rejected connection is discarded; the lease gets a fresh one.
    reject_next.store(true, Ordering::SeqCst);
    let db = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
    drop(db);
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.closed, s.created), (1, 2), "{s:?}");
    assert_eq!(count(&created), 2);
    assert_eq!(s.active, 0);
}

#[tokio::test]
async fn a_failing_after_create_hook_fails_the_build_naming_the_pool() {
    let (_dir, path) = common::sqlite_file();
    let hooks = Hooks::<SqliteConnection>::new()
        .after_create(|_conn| Box::pin(async { Err("schema version too old".to_owned()) }));
    let err = PoolManager::builder()
        .database_with_hooks::<SqliteConnection>("main", DbConfig::from_url(&path), hooks)
        .build()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("failed to set up pool 'main'"), "{msg}");
    assert!(
        msg.contains("after_create hook: schema version too old"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_after_lease_hook_that_panics_leaves_no_lease_behind() {
    let hooks = Hooks::<SqliteConnection>::new().after_lease(|_| panic!("hook failed"));
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        DbConfig::from_url(&path)
            .max_size(1)
            .health_check_interval(None),
        hooks,
    )
    .await;
    for _ in 0..3 {
        let m = m.clone();
        let task =
            tokio::spawn(async move { DbConn::<SqliteConnection>::acquire(&m).await.map(drop) });
        assert!(task.await.unwrap_err().is_panic());
    }
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.leases, s.active, s.size, s.idle), (3, 0, 1, 1), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_half_open_probe_whose_before_lease_hook_panics_gives_its_permit_back() {
    let panic_once = Arc::new(AtomicBool::new(false));
    let hooks = Hooks::<SqliteConnection>::new().before_lease({
        let panic_once = panic_once.clone();
        move |_| {
            let panic_now = panic_once.swap(false, Ordering::SeqCst);
            Box::pin(async move {
                assert!(!panic_now, "hook failed");
                Ok(())
            })
        }
    });
    let (_dir, path) = common::sqlite_file();
    let m = manager(
        DbConfig::from_url(&path)
            .max_size(1)
            .health_check_interval(None)
            .acquire_timeout(std::time::Duration::from_millis(100))
            .breaker(axum_pools::BreakerConfig {
                consecutive_failures: 1,
                half_open_probes: 1,
                open_duration: std::time::Duration::from_secs(1),
                ..Default::default()
            }),
        hooks,
    )
    .await;
    let state = |m: &PoolManager| m.stats_of("main").unwrap().breaker.state;
    let held = DbConn::<SqliteConnection>::acquire(&m).await.unwrap();
    assert!(DbConn::<SqliteConnection>::acquire(&m).await.is_err()); // times out: opens
    drop(held);
    tokio::time::advance(std::time::Duration::from_secs(1)).await;

    // The one probe's hook panics.
    panic_once.store(true, Ordering::SeqCst);
    let task = tokio::spawn({
        let m = m.clone();
        async move { DbConn::<SqliteConnection>::acquire(&m).await.map(drop) }
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(state(&m), axum_pools::BreakerState::HalfOpen);

    // Its permit came back: the next acquisition is the probe and closes it.
    DbConn::<SqliteConnection>::acquire(&m)
        .await
        .expect("admitted as the probe");
    assert_eq!(state(&m), axum_pools::BreakerState::Closed);
}
