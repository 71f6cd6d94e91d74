//! Redis pools on a throwaway 3-master Redis Cluster (`redis+cluster://`):
//! keys land on every master, concurrent INCRs count right, pipelines and
//! atomic pipelines work within one slot and say why across slots, the
//! commands a cluster connection cannot carry are refused saying so, the
//! stats show the topology, and the shared rate limiter's total holds
//! across two managers.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use axum::{Router, body::Body, http::Request, http::StatusCode, routing::get};
use axum_pools::{PoolManager, RateLimitLayer, RedisConfig, RedisConn, layer::FailPolicy};
use common::servers::{redis_cluster, redis_cluster_with};
use redis::AsyncCommands;
use tower::ServiceExt;

async fn manager(url: &str) -> PoolManager {
    with_config(RedisConfig::from_url(url)).await
}

async fn with_config(config: RedisConfig) -> PoolManager {
    PoolManager::builder()
        .redis("cache", config.max_size(4))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_every_master_and_concurrent_incrs_count_right() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    // Built from the node list, not the URL.
    let nodes = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}"));
    let m = with_config(RedisConfig::cluster(nodes)).await;
    let tasks = (0..8).map(|task| {
        let m = m.clone();
        tokio::spawn(async move {
            let mut conn = <RedisConn>::acquire(&m).await.unwrap();
            for i in 0..50 {
                let _: () = conn.set(format!("k:{task}:{i}"), i).await.unwrap();
                let _: i64 = conn.incr(format!("counter:{}", i % 10), 1).await.unwrap();
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.unwrap();
    }
    let mut conn = <RedisConn>::acquire(&m).await.unwrap();
    for i in 0..10 {
        let n: i64 = conn.get(format!("counter:{i}")).await.unwrap();
        assert_eq!(n, 8 * 5, "counter:{i}");
    }
    // Every master holds some of the 400 keys.
    let mut total = 0;
    for port in &cluster.ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut node = client.get_multiplexed_async_connection().await.unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut node).await.unwrap();
        assert!(keys > 0, "no key on the master at {port}");
        total += keys;
    }
    assert_eq!(total, 400 + 10);
    drop(conn);
    assert_eq!(m.stats_of("cache").unwrap().active, 0);
}

#[tokio::test]
async fn pipelines_work_within_a_slot_and_the_rest_is_refused_saying_why() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    let m = manager(&cluster.url()).await;
    let mut conn = <RedisConn>::acquire(&m).await.unwrap();

    // One slot ({user:1}): a pipeline and an atomic one (MULTI/EXEC).
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{user:1}:a", 1)
        .incr("{user:1}:b", 2)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let (a, b): (i64, i64) = redis::pipe()
        .get("{user:1}:a")
        .get("{user:1}:b")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));

    // Keys of different slots in one pipeline.
    let e = redis::pipe()
        .set("alpha", 1)
        .set("omega", 2)
        .query_async::<()>(&mut *conn)
        .await
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("cross"), "{e}");

    // MULTI, WATCH and SELECT as commands of their own.
    for command in ["MULTI", "WATCH", "SELECT"] {
        let mut c = redis::cmd(command);
        if command != "MULTI" {
            c.arg("1");
        }
        let e = c.query_async::<()>(&mut *conn).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("do not work on a Redis Cluster connection")
                && e.to_string().contains("atomic pipeline"),
            "{command}: {e}"
        );
    }
    // The connection still works, and goes back clean.
    let _: () = conn.set("{user:1}:c", 3).await.unwrap();
    drop(conn);
    let stats = m.stats_of("cache").unwrap();
    assert_eq!(stats.broken, 0, "{stats:?}");

    // The topology in the stats.
    let server = stats.server.expect("server facts");
    assert_eq!(server["redis_mode"], "cluster");
    assert_eq!(server["cluster_state"], "ok");
    assert_eq!(server["slots_assigned"], "16384");
    assert_eq!(server["masters"].split(' ').count(), 3, "{server:?}");
    assert_eq!(server["tls"], "off");

    // And in the health report: each master by address.
    let health = m.check_health().await;
    let topology = health.pools[0].topology.clone().expect("topology");
    assert_eq!(topology["cluster_state"], "ok", "{topology:?}");
    for port in &cluster.ports {
        assert!(
            topology["masters"].contains(&format!(":{port}")),
            "{topology:?}"
        );
    }
    assert!(!topology.contains_key("tls"), "{topology:?}");
}

#[tokio::test]
async fn a_database_in_a_cluster_url_fails_the_build_saying_why() {
    let e = PoolManager::builder()
        .redis(
            "cache",
            RedisConfig::from_url("redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2/3"),
        )
        .build()
        .await
        .expect_err("a cluster pool with database 3");
    let text = e.to_string();
    assert!(text.contains("database 0 only; drop /3"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// The shared limiter on a cluster: two managers ("replicas") allow no
/// more than the limit together.
#[tokio::test]
async fn the_shared_rate_limit_holds_across_two_managers_on_a_cluster() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    let replica = |m: PoolManager| {
        Router::new().route("/", get(|| async { "ok" })).layer(
            RateLimitLayer::new(5, Duration::from_secs(60)).distributed(
                m,
                "cache",
                FailPolicy::Closed,
            ),
        )
    };
    let a = replica(manager(&cluster.url()).await);
    let b = replica(manager(&cluster.url()).await);
    let mut allowed = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let request = Request::get("/").body(Body::empty()).unwrap();
        match app.clone().oneshot(request).await.unwrap().status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 5);
}

/// `rediss+cluster://` with the test CA: every node speaks TLS only (and
/// so does the cluster bus); the pool verifies each node's certificate and
/// name, and the stats say `tls: on`.
#[tokio::test]
async fn a_tls_cluster_works_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::certs::make_certs(dir.path());
    let Some(cluster) = redis_cluster_with(Some(&certs)) else {
        return;
    };
    let m = manager(&cluster.url()).await;
    let mut conn = <RedisConn>::acquire(&m).await.unwrap();
    for i in 0..30 {
        let _: () = conn.set(format!("tls:{i}"), i).await.unwrap();
    }
    let n: i64 = conn.get("tls:29").await.unwrap();
    assert_eq!(n, 29);
    drop(conn);
    let server = m.stats_of("cache").unwrap().server.expect("server facts");
    assert_eq!(server["tls"], "on");
    assert_eq!(server["cluster_state"], "ok");

    // Another CA: the build fails saying the certificate is not trusted.
    let other = certs.with_other_ca(&cluster.url());
    let e = PoolManager::builder()
        .redis("cache", RedisConfig::from_url(other))
        .build()
        .await
        .expect_err("an untrusted cluster was accepted");
    assert!(e.to_string().contains("not trusted"), "{e}");
}
