//! The circuit breaker against a real server that goes away: a throwaway
//! Redis started by this test on a free port (never the shared one) is
//! stopped, the breaker opens and later acquisitions are refused without
//! touching the network, the server comes back, and one probe closes the
//! breaker again. (Every transition is also unit-tested with a paused clock
//! in `src/pool/breaker.rs`.)
#![cfg(feature = "redis")]

mod common;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum_pools::{
    BreakerConfig, BreakerState, HealthStatus, PoolError, PoolManager, RedisConfig, RedisConn,
};

struct Throwaway {
    child: Option<Child>,
}

impl Throwaway {
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Starts `redis-server` on `port`; `None` when there is no binary
    /// (a failure under CI).
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if common::in_ci() => panic!("redis-server could not start: {e}"),
            Err(e) => {
                eprintln!("skipping: redis-server could not start: {e}");
                return None;
            }
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child: Some(child) });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on {port}");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn the_breaker_opens_when_the_server_dies_refuses_fast_and_closes_when_it_returns() {
    let port = Throwaway::free_port();
    let Some(mut server) = Throwaway::start(port) else {
        return;
    };
    let logs = common::Logs::default();
    let _guard = logs.install(tracing::Level::INFO);
    let open_for = Duration::from_millis(400);
    let config = RedisConfig::from_url(format!("redis://127.0.0.1:{port}/0"))
        .max_size(2)
        .acquire_timeout(Duration::from_secs(1))
        .health_check_interval(None)
        // Validate every checkout, so a dead connection is seen at once.
        .alive_bypass_window(Duration::ZERO)
        .breaker(BreakerConfig {
            consecutive_failures: 3,
            open_duration: open_for,
            half_open_probes: 1,
            ..BreakerConfig::default()
        });
    let m = PoolManager::builder()
        .redis("cache", config)
        .build()
        .await
        .unwrap();
    let stats = || m.stats_of("cache").unwrap();
    drop(RedisConn::<axum_pools::ByType>::acquire(&m).await.unwrap());

    server.stop();
    let mut backend_errors = 0;
    let mut refused = None;
    for _ in 0..10 {
        match RedisConn::<axum_pools::ByType>::acquire(&m).await {
            Err(e @ PoolError::CircuitOpen { .. }) => {
                refused = Some(e);
                break;
            }
            Err(PoolError::Backend { .. }) => backend_errors += 1,
            other => panic!("expected a refused connect, got {other:?}"),
        }
    }
    let refused = refused.expect("the breaker opened");
    assert_eq!(backend_errors, 3, "opened after 3 consecutive failures");
    assert_eq!(
        refused.status(),
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        refused.retry_after(),
        Some(Duration::from_secs(1)),
        "seconds to half-open, rounded up"
    );
    assert_eq!(stats().breaker.state, BreakerState::Open);

    // Refused without touching the network: no new connect attempt.
    let errors_before = stats().backend_errors;
    for _ in 0..100 {
        let err = RedisConn::<axum_pools::ByType>::acquire(&m)
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::CircuitOpen { .. }), "{err}");
    }
    assert_eq!(stats().backend_errors, errors_before);
    assert!(stats().breaker.rejected >= 101);
    let health = m.check_health().await;
    assert_eq!(health.status, HealthStatus::Fail);

    // The server returns; after open_duration one probe closes the breaker.
    let _server = Throwaway::start(port).expect("restart");
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    let mut conn = RedisConn::<axum_pools::ByType>::acquire(&m)
        .await
        .expect("the probe is let through");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);
    let s = stats();
    assert_eq!(s.breaker.state, BreakerState::Closed, "{s:?}");
    assert_eq!(s.breaker.opened, 1);
    assert_eq!(m.check_health().await.status, HealthStatus::Pass);

    // Every transition's log line says which pool.
    let text = logs.text();
    for transition in [
        "circuit breaker opened",
        "circuit breaker half-open",
        "circuit breaker closed",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(transition))
            .unwrap_or_else(|| panic!("no {transition:?} in:\n{text}"));
        assert!(line.contains("pool=cache"), "{line}");
    }
}
