//! Redis pools against the real server (`TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/0`): leases without a PING per checkout, and every
//! state a handler can leave behind undone or discarded before reuse.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use axum::{Router, http::StatusCode, routing::get};
use axum_pools::{
    HealthStatus, PoolError, PoolLayer, PoolManager, RedisConfig, RedisConn, pool_name,
};
use common::{body_text, get as req, unique};
use redis::{AsyncCommands, aio::ConnectionLike, cmd};
use tower::ServiceExt;

fn config(url: &str) -> RedisConfig {
    RedisConfig::from_url(url)
        .max_size(1)
        .health_check_interval(None)
        .idle_timeout(None)
        .max_lifetime(None)
}

async fn manager(config: RedisConfig) -> PoolManager {
    PoolManager::builder()
        .redis("cache", config)
        .build()
        .await
        .expect("build")
}

async fn lease(m: &PoolManager) -> RedisConn {
    RedisConn::acquire(m).await.expect("lease")
}

/// A connection of its own, outside the pool.
async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn ping(redis: RedisConn) -> Result<String, PoolError> {
    let mut redis = redis;
    Ok(cmd("PING").query_async(&mut redis).await.expect("PING"))
}

#[tokio::test]
async fn leases_through_the_extractor_without_a_ping_per_checkout() {
    let url = require!(common::redis_url());
    let m = manager(config(&url).max_size(4)).await;
    let app = Router::new()
        .route("/ping", get(ping))
        .layer(PoolLayer::new(m.clone()));
    for _ in 0..100 {
        let r = app.clone().oneshot(req("/ping")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body_text(r).await, "PONG");
    }
    let s = m.stats_of("cache").unwrap();
    assert_eq!(s.backend, "redis");
    assert_eq!((s.leases, s.active, s.timeouts), (100, 0, 0));
    assert_eq!(s.validations, 0, "back-to-back leases are not pinged");
    let server = s.server.expect("INFO read at the build's health check");
    assert!(server.contains_key("redis_version"), "{server:?}");
    assert!(server.contains_key("connected_clients"), "{server:?}");
}

#[tokio::test]
async fn an_open_multi_is_discarded_before_reuse() {
    let url = require!(common::redis_url());
    let m = manager(config(&url)).await;
    let key = unique("axp_multi");
    let mut r = lease(&m).await;
    let _: () = cmd("MULTI").query_async(&mut r).await.unwrap();
    let queued: String = cmd("SET")
        .arg(&key)
        .arg("queued")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(queued, "QUEUED");
    drop(r); // left inside MULTI

    let mut r = lease(&m).await;
    let _: () = r.set(&key, "direct").await.unwrap(); // would answer QUEUED inside MULTI
    let value: String = r.get(&key).await.unwrap();
    assert_eq!(value, "direct");
    let _: () = r.del(&key).await.unwrap();
    let s = m.stats_of("cache").unwrap();
    assert_eq!(
        (s.resets, s.created),
        (1, 1),
        "reset, not reconnected: {s:?}"
    );
}

#[tokio::test]
async fn a_health_check_undoes_an_open_multi_before_its_ping() {
    let url = require!(common::redis_url());
    let m = manager(config(&url)).await;
    let mut r = lease(&m).await;
    let _: () = cmd("MULTI").query_async(&mut r).await.unwrap();
    drop(r); // left inside MULTI: a PING now would answer QUEUED

    let report = m.check_health().await;
    let cache = &report.pools[0];
    assert_eq!(cache.status, HealthStatus::Pass, "{cache:?}");
    let s = m.stats_of("cache").unwrap();
    assert_eq!((s.resets, s.created, s.closed), (1, 1, 0), "{s:?}");

    let mut r = lease(&m).await;
    let pong: String = cmd("PING").query_async(&mut r).await.unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(m.stats_of("cache").unwrap().resets, 1, "clean since");
}

#[tokio::test]
async fn a_connection_whose_reset_was_cut_short_is_not_handed_out_again() {
    let url = require!(common::redis_url());
    let m = manager(config(&url)).await;
    let key = unique("axp_cut");
    let mut r = lease(&m).await;
    let _: () = cmd("MULTI").query_async(&mut r).await.unwrap();
    drop(r); // left inside MULTI

    // The next acquisition starts the reset (a round trip) and is dropped
    // at its first wait, before any answer.
    {
        let cut = std::pin::pin!(lease(&m));
        let waker = std::task::Waker::noop();
        let polled = cut.poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_pending(), "the reset needed no round trip?");
    }

    let mut r = lease(&m).await;
    let _: () = r.set(&key, "direct").await.unwrap(); // QUEUED inside MULTI
    let value: String = r.get(&key).await.unwrap();
    assert_eq!(value, "direct");
    let _: () = r.del(&key).await.unwrap();
    let s = m.stats_of("cache").unwrap();
    assert_eq!(
        (s.resets, s.created, s.closed),
        (1, 2, 1),
        "discarded, not trusted: {s:?}"
    );
}

#[tokio::test]
async fn a_leftover_watch_does_not_abort_the_next_users_transaction() {
    let url = require!(common::redis_url());
    let m = manager(config(&url)).await;
    let key = unique("axp_watch");
    let mut other = admin(&url).await;

    let mut r = lease(&m).await;
    let _: () = cmd("WATCH").arg(&key).query_async(&mut r).await.unwrap();
    drop(r); // left WATCHing

    let mut r = lease(&m).await;
    // The watched key changes; an inherited WATCH would make EXEC abort.
    let _: () = other.set(&key, "changed").await.unwrap();
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .incr(format!("{key}_n"), 1)
        .query_async(&mut r)
        .await
        .expect("EXEC ran: no WATCH was inherited");
    assert_eq!(n, 1);
    let _: () = other.del(&[&key, &format!("{key}_n")]).await.unwrap();
    assert_eq!(m.stats_of("cache").unwrap().resets, 1);
}

#[tokio::test]
async fn another_selected_database_is_switched_back_before_reuse() {
    let url = require!(common::redis_url());
    let m = manager(config(&url)).await;
    let key = unique("axp_select");

    let mut r = lease(&m).await;
    let home: i64 = r.get_db();
    let other_db = if home == 5 { 6 } else { 5 };
    let _: () = cmd("SELECT")
        .arg(other_db)
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = r.set(&key, "elsewhere").await.unwrap();
    drop(r); // left in the other database

    let mut r = lease(&m).await;
    let value: Option<String> = r.get(&key).await.unwrap();
    assert_eq!(value, None, "back in the pool's database");
    let info: String = cmd("CLIENT").arg("INFO").query_async(&mut r).await.unwrap();
    assert!(info.contains(&format!(" db={home} ")), "{info}");
    let _: () = cmd("SELECT")
        .arg(other_db)
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = r.del(&key).await.unwrap();
    drop(r); // dirty again: undone at the next checkout
    assert_eq!(m.stats_of("cache").unwrap().resets, 1);
    let r = lease(&m).await;
    assert_eq!(r.get_db(), home);
    assert_eq!(m.stats_of("cache").unwrap().resets, 2);
}

#[tokio::test]
async fn a_subscribed_connection_is_discarded() {
    let url = require!(common::redis_url());
    let m = manager(config(&url)).await;
    let mut r = lease(&m).await;
    // Whatever the client makes of a raw SUBSCRIBE, the connection is not reused.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        cmd("SUBSCRIBE")
            .arg(unique("axp_chan"))
            .query_async::<redis::Value>(&mut r),
    )
    .await;
    drop(r);

    let mut r = lease(&m).await;
    let pong: String = cmd("PING").query_async(&mut r).await.unwrap();
    assert_eq!(pong, "PONG");
    let s = m.stats_of("cache").unwrap();
    assert_eq!((s.created, s.closed, s.broken), (2, 1, 1), "{s:?}");
}

#[tokio::test]
async fn a_connection_killed_by_the_server_is_replaced() {
    let url = require!(common::redis_url());
    // A long bypass window: the pool does not ping; the failed command itself
    // marks the connection.
    let m = manager(config(&url).alive_bypass_window(Duration::from_secs(3600))).await;
    let mut r = lease(&m).await;
    let id: i64 = cmd("CLIENT").arg("ID").query_async(&mut r).await.unwrap();
    drop(r);
    let mut other = admin(&url).await;
    let killed: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut other)
        .await
        .unwrap();
    assert_eq!(killed, 1);

    let mut failing = None;
    for _ in 0..3 {
        let mut r = lease(&m).await;
        match cmd("PING").query_async::<String>(&mut r).await {
            Ok(pong) => {
                assert_eq!(pong, "PONG");
                break;
            }
            Err(e) => failing = Some(e),
        }
    }
    let mut r = lease(&m).await;
    let new_id: i64 = cmd("CLIENT").arg("ID").query_async(&mut r).await.unwrap();
    assert_ne!(new_id, id);
    let s = m.stats_of("cache").unwrap();
    assert!(s.created >= 2, "{s:?} ({failing:?})");
}

#[tokio::test]
async fn bad_urls_fail_the_build_naming_the_pool_without_the_password() {
    let url = require!(common::redis_url());
    let (_, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    for bad in [
        format!("redis://:wr0ng-hunter2@{host}"),
        "rediss://:hunter2-tls@127.0.0.1:6380/0".to_owned(),
        "redis://:hunter2@127.0.0.1:1/0".to_owned(),
        "redis//:hunter2@nonsense".to_owned(),
    ] {
        let err = PoolManager::builder()
            .redis("cache", config(&bad))
            .build()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("failed to set up pool 'cache' ("),
            "{bad}: {msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

pool_name!(Sessions = "sessions");
pool_name!(Counters = "counters");

#[tokio::test]
async fn two_redis_pools_are_picked_by_marker() {
    let url = require!(common::redis_url());
    let base = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(b, _)| b)
        .to_owned();
    let m = PoolManager::builder()
        .redis("sessions", config(&format!("{base}/3")))
        .redis("counters", config(&format!("{base}/4")))
        .build()
        .await
        .unwrap();
    let key = unique("axp_two");
    let app = Router::new()
        .route(
            "/",
            get({
                let key = key.clone();
                move |mut s: RedisConn<Sessions>, mut c: RedisConn<Counters>| async move {
                    let _: () = s.set(&key, "session").await.unwrap();
                    let _: () = c.set(&key, "counter").await.unwrap();
                    format!(
                        "{}:{}/{}:{}",
                        s.pool_name(),
                        s.get_db(),
                        c.pool_name(),
                        c.get_db()
                    )
                }
            }),
        )
        .route("/ambiguous", get(ping))
        .layer(PoolLayer::new(m.clone()));
    let r = app.clone().oneshot(req("/")).await.unwrap();
    assert_eq!(body_text(r).await, "sessions:3/counters:4");
    let mut db3 = admin(&format!("{base}/3")).await;
    let mut db4 = admin(&format!("{base}/4")).await;
    let v3: String = db3.get(&key).await.unwrap();
    let v4: String = db4.get(&key).await.unwrap();
    assert_eq!((v3.as_str(), v4.as_str()), ("session", "counter"));
    let _: () = db3.del(&key).await.unwrap();
    let _: () = db4.del(&key).await.unwrap();

    let r = app.oneshot(req("/ambiguous")).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body_text(r).await;
    assert!(body.contains("(sessions, counters)"), "{body}");
}

/// A Redis that wants a password the URL does not give accepts the
/// connection and refuses the first command (NOAUTH): a required pool
/// fails the build saying so, without echoing the password; with it, the
/// pool builds and works.
#[tokio::test]
async fn a_required_pool_that_cannot_log_in_fails_the_build() {
    let Some((_server, port)) = common::servers::redis_with_password("s3cret-pass") else {
        return;
    };
    let err = PoolManager::builder()
        .redis(
            "cache",
            RedisConfig::from_url(format!("redis://127.0.0.1:{port}/0")),
        )
        .build()
        .await
        .expect_err("a pool that cannot log in was built");
    let text = err.to_string();
    assert_eq!(err.pool(), Some("cache"));
    assert!(text.contains("NOAUTH"), "{text}");

    let err = PoolManager::builder()
        .redis(
            "cache",
            RedisConfig::from_url(format!("redis://:wrong-pass@127.0.0.1:{port}/0")),
        )
        .build()
        .await
        .expect_err("a wrong password was accepted");
    assert!(!err.to_string().contains("wrong-pass"), "{err}");

    let m = PoolManager::builder()
        .redis(
            "cache",
            RedisConfig::from_url(format!("redis://:s3cret-pass@127.0.0.1:{port}/0")),
        )
        .build()
        .await
        .unwrap();
    let mut conn = <RedisConn>::acquire(&m).await.unwrap();
    let _: () = conn.set("k", 1).await.unwrap();
}
