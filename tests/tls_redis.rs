//! Redis over TLS (`rediss://`) against a throwaway `redis-server` that
//! listens with TLS only, with a CA and a `localhost` certificate made here;
//! the shared rate limiter over it too.
#![cfg(feature = "redis")]

mod common;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use axum::{Router, body::Body, http::Request, routing::get};
use axum_pools::{FailPolicy, PoolManager, RateLimitLayer, RedisConfig, RedisConn};
use common::certs::{KillOnDrop, make_certs, tls_in_stats};
use redis::AsyncCommands;
use tower::ServiceExt;

/// `redis-server` with TLS only on a free port; `None` outside CI when
/// there is no binary.
fn start(certs: &common::certs::Certs) -> Option<(KillOnDrop, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(&certs.cert)
        .arg("--tls-key-file")
        .arg(&certs.key)
        .arg("--tls-ca-cert-file")
        .arg(&certs.ca)
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(!common::in_ci(), "redis-server could not start: {e}");
            eprintln!("skipping: redis-server could not start: {e}");
            return None;
        }
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((KillOnDrop(child), port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not listen on {port} (built without TLS?)");
}

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
    let Some((_server, port)) = start(&certs) else {
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
    assert!(e.contains("sslrootcert needs a rediss:// URL"), "{e}");
}
