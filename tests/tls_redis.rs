//! Redis over TLS (`rediss://`) against a throwaway `redis-server` that
//! listens with TLS only, with a CA and a `localhost` certificate made here;
//! the shared rate limiter over it too.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use axum::{Router, body::Body, http::Request, routing::get};
use axum_pools::{FailPolicy, PoolManager, RateLimitLayer, RedisConfig, RedisConn};
use common::{
    certs::{make_certs, tls_in_stats},
    servers::{redis_tls, redis_tls_with},
};
use redis::AsyncCommands;
use tower::ServiceExt;

async fn build(url: String) -> Result<PoolManager, axum_pools::PoolError> {
    PoolManager::builder()
        .redis("cache", RedisConfig::from_url(url).max_size(2))
        .build()
        .await
}

#[tokio::test]
async fn rediss_with_the_right_ca_works_and_another_ca_fails_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some((_server, port)) = redis_tls(&certs) else {
        return;
    };
    let ca = certs.ca.display().to_string();
    let manager = build(format!("rediss://localhost:{port}/0?sslrootcert={ca}"))
        .await
        .unwrap();
    let mut redis = RedisConn::<axum_pools::ByType>::acquire(&manager)
        .await
        .unwrap();
    let n: i64 = redis.incr("tls-hits", 1).await.unwrap();
    assert_eq!(n, 1);
    drop(redis);
    assert_eq!(tls_in_stats(&manager, "cache").as_deref(), Some("on"));

    // The shared rate limiter keeps its state over the same TLS pool.
    let limited = Router::new().route("/", get(|| async { "ok" })).layer(
        RateLimitLayer::new(1, Duration::from_secs(60))
            .key(axum_pools::KeyBy::Global)
            .distributed(manager.clone(), "cache", FailPolicy::Closed),
    );
    let status = |app: Router| async move {
        app.oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status(limited.clone()).await, 200);
    assert_eq!(status(limited).await, 429);

    let other = certs.other_ca.display().to_string();
    let e = build(format!("rediss://localhost:{port}/0?sslrootcert={other}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not trusted: unknown issuer"), "{e}");

    // Plaintext to a TLS-only port does not pass for a connection.
    let e = build(format!("redis://localhost:{port}/0"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("failed to set up pool 'cache'"),
        "{e}"
    );

    let e = build(format!("redis://localhost:{port}/0?sslrootcert={ca}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("need a rediss:// URL"), "{e}");
}

#[tokio::test]
async fn a_client_certificate_passes_tls_auth_clients() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let Some((_server, port)) = redis_tls_with(&certs, "yes") else {
        return;
    };
    let base = format!(
        "rediss://localhost:{port}/0?sslrootcert={}",
        certs.ca.display()
    );

    let m = build(base.clone() + &certs.client_params("sslcert", "sslkey"))
        .await
        .unwrap();
    let mut conn = RedisConn::<axum_pools::ByType>::acquire(&m).await.unwrap();
    let n: i64 = conn.incr("tls:mtls", 1).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(tls_in_stats(&m, "cache").as_deref(), Some("on"));

    // Without a certificate the server refuses the handshake, and the
    // error says what to set.
    let e = build(base.clone()).await.unwrap_err().to_string();
    assert!(e.starts_with("failed to set up pool 'cache'"), "{e}");
    assert!(
        e.contains("the server requires a client certificate (TLS alert certificate_required); set sslcert and sslkey"),
        "{e}"
    );

    // Half a pair is refused before any connection.
    let e = build(format!("{base}&sslcert={}", certs.client_cert.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sslcert and sslkey go together: set both or neither"),
        "{e}"
    );
}
