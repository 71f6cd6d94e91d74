//! The pools' bookkeeping clock as it runs in production (also with
//! `test-util`, since nothing here pauses time): "idle for" counts from the
//! return, hold times from the checkout, lifetimes retire at checkout, idle
//! connections are reaped and held leases reported.
//! Real time only ever adds: every check here holds however slowly the
//! machine runs, except where a test says what it needs and skips its check
//! when the machine stalled longer than that.
#![cfg(feature = "sqlite")]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum_pools::{DbConfig, DbConn, Hooks, PoolManager, SqliteConnection};
use diesel::{IntoSql, sql_types::Integer};
use diesel_async::RunQueryDsl;

type Db = DbConn<SqliteConnection>;

async fn manager(config: DbConfig, hooks: Hooks<SqliteConnection>) -> PoolManager {
    PoolManager::builder()
        .database_with_hooks::<SqliteConnection>(
            "main",
            config
                .max_size(1)
                .health_check_interval(None)
                .idle_timeout(None),
            hooks,
        )
        .build()
        .await
        .expect("build")
}

async fn select_one(db: &mut Db) -> i32 {
    diesel::select(1.into_sql::<Integer>())
        .get_result(&mut **db)
        .await
        .unwrap()
}

#[tokio::test]
async fn connections_used_within_the_bypass_window_are_not_pinged() {
    let (_dir, path) = common::sqlite_file();
    let config = DbConfig::from_url(&path).alive_bypass_window(Duration::from_secs(3600));
    let m = manager(config, Hooks::new()).await;
    for _ in 0..50 {
        let mut db = Db::acquire(&m).await.unwrap();
        select_one(&mut db).await;
    }
    assert_eq!(m.stats_of("main").unwrap().validations, 0);
}

#[tokio::test]
async fn a_connection_idle_past_the_bypass_window_is_pinged() {
    let (_dir, path) = common::sqlite_file();
    let config = DbConfig::from_url(&path).alive_bypass_window(Duration::from_millis(5));
    let m = manager(config, Hooks::new()).await;
    drop(Db::acquire(&m).await.unwrap());
    let before = m.stats_of("main").unwrap().validations;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut db = Db::acquire(&m).await.unwrap();
    assert_eq!(select_one(&mut db).await, 1);
    assert_eq!(m.stats_of("main").unwrap().validations, before + 1);
}

#[tokio::test]
async fn idle_time_counts_from_the_return_not_from_the_checkout() {
    let (_dir, path) = common::sqlite_file();
    let window = Duration::from_millis(300);
    let config = DbConfig::from_url(&path).alive_bypass_window(window);
    let m = manager(config, Hooks::new()).await;
    let mut db = Db::acquire(&m).await.unwrap();
    let before = m.stats_of("main").unwrap().validations;
    // Held longer than the window, then returned and taken again at once.
    tokio::time::sleep(window * 2).await;
    select_one(&mut db).await;
    drop(db);
    let returned = Instant::now();
    let db = Db::acquire(&m).await.unwrap();
    let gap = returned.elapsed();
    drop(db);
    // Idle for `gap`, not for the hold time. Only a machine stalled for a
    // whole window between two lines cannot tell.
    if gap < window {
        assert_eq!(
            m.stats_of("main").unwrap().validations,
            before,
            "a connection returned {gap:?} ago was pinged"
        );
    }
}

#[tokio::test]
async fn hold_time_counts_from_the_checkout_to_the_return() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let hooks = Hooks::<SqliteConnection>::new().after_release({
        let held = held.clone();
        move |r| held.lock().unwrap().push(r.held)
    });
    let (_dir, path) = common::sqlite_file();
    let m = manager(DbConfig::from_url(&path), hooks).await;
    let outer = Instant::now();
    let db = Db::acquire(&m).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(db);
    let outer = outer.elapsed();
    let held = held.lock().unwrap().clone();
    assert_eq!(held.len(), 1);
    assert!(
        held[0] >= Duration::from_millis(30) && held[0] <= outer,
        "held {:?}, slept 30 ms, {outer:?} around it",
        held[0]
    );
}

#[tokio::test]
async fn a_connection_past_its_lifetime_is_retired_and_replaced() {
    let (_dir, path) = common::sqlite_file();
    let config = DbConfig::from_url(&path).max_lifetime(Some(Duration::from_millis(20)));
    let m = manager(config, Hooks::new()).await;
    assert_eq!(m.stats_of("main").unwrap().created, 1);
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Retired at this checkout, or just before by the reaper: either way the
    // lease gets a new connection and the old one is closed.
    let mut db = Db::acquire(&m).await.unwrap();
    assert_eq!(select_one(&mut db).await, 1);
    let s = m.stats_of("main").unwrap();
    assert!(s.created >= 2 && s.closed >= 1, "{s:?}");
    assert_eq!(s.created, s.closed + 1, "{s:?}");
}

#[tokio::test]
async fn idle_connections_above_min_size_are_reaped() {
    let (_dir, path) = common::sqlite_file();
    let m = PoolManager::builder()
        .database::<SqliteConnection>(
            "main",
            DbConfig::from_url(&path)
                .min_size(1)
                .max_size(2)
                .health_check_interval(None)
                .idle_timeout(Some(Duration::from_millis(100))),
        )
        .build()
        .await
        .expect("build");
    let (a, b) = tokio::join!(Db::acquire(&m), Db::acquire(&m));
    assert_eq!(m.stats_of("main").unwrap().size, 2);
    drop((a.unwrap(), b.unwrap()));
    common::eventually("reaped down to min_size", || {
        m.stats_of("main").unwrap().size == 1
    })
    .await;
    assert_eq!(m.stats_of("main").unwrap().closed, 1);
}

#[tokio::test]
async fn a_lease_held_past_leak_threshold_is_reported() {
    let (_dir, path) = common::sqlite_file();
    let config = DbConfig::from_url(&path).leak_threshold(Some(Duration::from_millis(50)));
    let m = manager(config, Hooks::new()).await;
    let db = Db::acquire(&m).await.unwrap();
    assert_eq!(m.stats_of("main").unwrap().leaks, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    common::eventually("the held lease is reported", || {
        m.stats_of("main").unwrap().leaks == 1
    })
    .await;
    drop(db);
}
