//! Redis pools behind Sentinel (`redis+sentinel://`), against a throwaway
//! master, replica and sentinel: the pool finds the master through the
//! sentinel, and when the master is killed under load, writes go to the
//! promoted replica within 10 s, no request waits past its bound, and the
//! stats and the health report name the new master and count the
//! failover; the shared rate limiter fails open or closed as configured
//! while no master answers, and decides again after. The same over TLS (`rediss+sentinel://`), where the sentinel
//! and both servers listen with TLS only.
#![cfg(feature = "redis")]

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use axum_pools::{FailPolicy, KeyBy, PoolManager, RateLimitLayer, RedisConfig, RedisConn};
use common::{
    certs::make_certs,
    servers::{RedisSentinel, redis_sentinel, redis_sentinel_with},
};
use redis::AsyncCommands;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_master_is_killed_writes_go_to_the_promoted_replica() {
    if let Some(servers) = redis_sentinel() {
        failover(servers).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_after_the_master_is_killed_writes_go_to_the_promoted_replica() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    if let Some(servers) = redis_sentinel_with(Some(&certs)) {
        failover(servers).await;
    }
}

/// Plaintext: from the sentinel's address and the master's name; TLS: from
/// the URL, which carries the CA file.
fn config(servers: &RedisSentinel) -> RedisConfig {
    match servers.host() {
        "127.0.0.1" => {
            RedisConfig::sentinel([format!("127.0.0.1:{}", servers.sentinel_port)], "mymaster")
        }
        _ => RedisConfig::from_url(servers.url()),
    }
}

async fn failover(mut servers: RedisSentinel) {
    let host = servers.host();
    let acquire_timeout = Duration::from_secs(2);
    let m = PoolManager::builder()
        .redis(
            "cache",
            config(&servers)
                .max_size(4)
                .acquire_timeout(acquire_timeout)
                .health_check_interval(None),
        )
        .build()
        .await
        .unwrap();
    let mut conn = <RedisConn>::acquire(&m).await.unwrap();
    let _: () = conn.set("before", "failover").await.unwrap();
    drop(conn);
    let facts = m.stats_of("cache").unwrap().server.unwrap();
    assert_eq!(facts["master"], format!("{host}:{}", servers.master_port));
    assert_eq!(facts["sentinel_master"], "mymaster");
    let tls = if servers.url().starts_with("rediss") {
        "on"
    } else {
        "off"
    };
    assert_eq!(facts["tls"], tls, "{facts:?}");

    // Two shared rate limiters on the pool: one failing open, one closed.
    let limiter = |policy: FailPolicy| {
        Router::new().route("/", get(|| async { "ok" })).layer(
            RateLimitLayer::new(100_000, Duration::from_secs(60))
                .name(&format!("{policy:?}"))
                .key(KeyBy::Global)
                .distributed(m.clone(), "cache", policy),
        )
    };
    let (open, closed) = (limiter(FailPolicy::Open), limiter(FailPolicy::Closed));
    let status = |app: &Router| {
        let app = app.clone();
        async move { app.oneshot(common::get("/")).await.unwrap().status() }
    };
    assert_eq!(status(&open).await, 200);
    assert_eq!(status(&closed).await, 200);

    // Four clients write in a loop; each write is timed.
    let stop = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Vec<(Instant, Duration, bool)>>> = Arc::default();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (m, stop, writes) = (m.clone(), stop.clone(), writes.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let ok = match <RedisConn>::acquire(&m).await {
                        Ok(mut conn) => conn.incr::<_, _, i64>("n", 1).await.is_ok(),
                        Err(_) => false,
                    };
                    writes.lock().unwrap().push((start, start.elapsed(), ok));
                    tokio::time::sleep(Duration::from_millis(if ok { 5 } else { 50 })).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    servers.kill_master();

    let mut back = None;
    // While no master answers: the closed limiter refuses (503), the open
    // one lets every request through.
    let (mut refused, mut open_failed) = (false, None);
    while killed.elapsed() < Duration::from_secs(20) && back.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !refused {
            let answer = status(&closed).await;
            refused = answer == 503;
            assert!(answer == 200 || refused, "closed limiter answered {answer}");
            let answer = status(&open).await;
            open_failed = open_failed.or((answer != 200).then_some(answer));
        }
        back = writes
            .lock()
            .unwrap()
            .iter()
            .find(|(start, _, ok)| *ok && *start > killed + Duration::from_millis(100))
            .map(|(start, took, _)| (*start + *took).duration_since(killed));
    }
    // A little more load on the new master, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let back = back.expect("no write succeeded within 20 s of the kill");
    assert!(
        refused,
        "the closed limiter never refused while no master answered"
    );
    assert_eq!(open_failed, None, "the open limiter refused");
    // With the new master, the closed limiter decides again.
    let mut limited_again = false;
    for _ in 0..100 {
        if status(&closed).await == 200 {
            limited_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        limited_again,
        "the closed limiter still refuses after the failover"
    );
    eprintln!("writes back {back:?} after the kill");
    assert!(back < Duration::from_secs(10), "writes back after {back:?}");
    let slowest = writes
        .lock()
        .unwrap()
        .iter()
        .map(|(_, took, _)| *took)
        .max()
        .unwrap();
    assert!(
        slowest <= acquire_timeout + Duration::from_millis(500),
        "a write took {slowest:?}"
    );

    let stats = m.stats_of("cache").unwrap();
    assert_eq!(stats.active, 0);
    let facts = stats.server.unwrap();
    assert_eq!(
        facts["master"],
        format!("{host}:{}", servers.replica_port),
        "{facts:?}"
    );
    assert_eq!(facts["failovers"], "1", "{facts:?}");
    // The health report shows the same topology.
    let health = m.check_health().await;
    let topology = health.pools[0].topology.clone().expect("topology");
    assert_eq!(topology["sentinel_master"], "mymaster", "{topology:?}");
    assert_eq!(topology["master"], facts["master"], "{topology:?}");
    assert_eq!(topology["failovers"], "1", "{topology:?}");
    assert_eq!(stats.failovers, Some(1));
    let response = m
        .router::<()>()
        .oneshot(common::get("/pools/metrics"))
        .await
        .unwrap();
    let metrics = common::body_text(response).await;
    assert!(
        metrics.contains("axum_pools_failovers_total{pool_name=\"cache\"} 1"),
        "{metrics}"
    );
    // What the old master had replicated is on the new one.
    let mut conn = <RedisConn>::acquire(&m).await.unwrap();
    let before: String = conn.get("before").await.unwrap();
    assert_eq!(before, "failover");
}

#[tokio::test]
async fn a_sentinel_url_without_a_master_name_fails_the_build_saying_why() {
    let e = PoolManager::builder()
        .redis(
            "cache",
            RedisConfig::from_url("redis+sentinel://:s3cret@127.0.0.1:1/"),
        )
        .build()
        .await
        .expect_err("a sentinel pool without a master name");
    let text = e.to_string();
    assert!(text.contains("name the master"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// The sentinel's certificate is checked: with another CA the build fails
/// saying the certificate is not trusted.
#[tokio::test]
async fn a_tls_sentinel_with_another_ca_fails_the_build_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some(servers) = redis_sentinel_with(Some(&certs)) else {
        return;
    };
    let other = certs.with_other_ca(&servers.url());
    let e = PoolManager::builder()
        .redis("cache", RedisConfig::from_url(other))
        .build()
        .await
        .expect_err("an untrusted sentinel was accepted");
    assert!(e.to_string().contains("not trusted"), "{e}");
}
