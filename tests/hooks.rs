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
    let m = PoolManager::builder()
        .database_with_hooks::<SqliteConnection>(
            "main",
            DbConfig::from_url(&path)
                .max_size(2)
                .health_check_interval(None),
            hooks,
        )
        .build()
        .await
        .unwrap();
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
    let m = PoolManager::builder()
        .database_with_hooks::<SqliteConnection>(
            "main",
            DbConfig::from_url(&path)
                .max_size(1)
                .health_check_interval(None),
            hooks,
        )
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let m = m.clone();
        let task =
            tokio::spawn(async move { DbConn::<SqliteConnection>::acquire(&m).await.map(drop) });
        assert!(task.await.unwrap_err().is_panic());
    }
    let s = m.stats_of("main").unwrap();
    assert_eq!((s.leases, s.active, s.size, s.idle), (3, 0, 1, 1), "{s:?}");
}
