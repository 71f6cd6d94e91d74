//! The secret scan (issue 15's "Done when"): every way a URL carries a
//! password or token (unencoded `#`/`?`, `%`-encoded, `?password=`,
//! `pass=`, a token as the user name, a keyword DSN), through a build that
//! fails and one that works, connect failures at run time, every
//! `/pools/*` body, every error's `Display` and `Debug`, and every log line
//! at TRACE: the secret appears nowhere, and the user name and host still
//! do where they help. Real servers; alone in its binary (the log capture
//! is per thread, see `tests/secrets.rs`).
#![cfg(all(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "http"
))]

mod common;

use std::time::Duration;

use axum::Router;
use axum_pools::{DbConfig, HttpConfig, PoolManager, RedisConfig};
use common::{body_text, get as req};
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use tower::ServiceExt;

/// Every secret below holds this; none of it may show.
const MARK: &str = "Secret-9911";

/// One pool's manager builder.
fn builder(url: &str) -> axum_pools::PoolManagerBuilder {
    let b = PoolManager::builder();
    let fast = |c: DbConfig| c.acquire_timeout(Duration::from_millis(500));
    if url.starts_with("mysql") {
        b.database::<AsyncMysqlConnection>("sql", fast(DbConfig::from_url(url)))
    } else if url.contains("redis") {
        b.redis(
            "cache",
            RedisConfig::from_url(url).acquire_timeout(Duration::from_millis(500)),
        )
    } else {
        b.database::<AsyncPgConnection>("sql", fast(DbConfig::from_url(url)))
    }
}

/// What a client and an operator see of `manager`: every `/pools/*` body,
/// and its `Debug`.
async fn everything_shown(manager: &PoolManager) -> String {
    let app: Router = manager.router();
    let mut seen = format!("{manager:?}\n");
    for uri in [
        "/pools/health",
        "/pools/health/ready",
        "/pools/health/live",
        "/pools/stats",
        "/pools/metrics",
        "/pools/openapi.json",
    ] {
        seen.push_str(&body_text(app.clone().oneshot(req(uri)).await.unwrap()).await);
    }
    for pool in ["sql", "cache", "api"] {
        for uri in [
            format!("/pools/health/{pool}"),
            format!("/pools/stats/{pool}"),
        ] {
            seen.push_str(&body_text(app.clone().oneshot(req(&uri)).await.unwrap()).await);
        }
    }
    seen
}

#[tokio::test]
async fn no_url_form_shows_its_secret_anywhere() {
    let logs = common::Logs::default();
    let _guard = logs.install(tracing::Level::TRACE);
    let mut seen = String::new();

    // Builds that fail: nothing listens on port 1, or the driver cannot read
    // the URL. Each error's Display, Debug and problem+json body.
    for url in [
        "postgres://app:Zebra#Secret-9911@127.0.0.1:1/db",
        "postgres://app:Zebra?Secret-9911@127.0.0.1:1/db",
        "postgres://app:Zebra%23Secret-9911@127.0.0.1:1/db",
        "postgres://app@127.0.0.1:1/db?password=Zebra-Secret-9911",
        "host=127.0.0.1 port=1 user=app password='Zebra Secret-9911' dbname=db",
        "mysql://app:Zebra%23Secret-9911@127.0.0.1:1/db",
        "mysql://app:Zebra#Secret-9911@127.0.0.1:1/db",
        "redis://:Zebra%23Secret-9911@127.0.0.1:1/0",
        "redis://:Zebra#Secret-9911@127.0.0.1:1/0",
        "redis://tok-Zebra-Secret-9911@127.0.0.1:1/0",
        "redis+unix:///nonexistent/redis.sock?pass=Zebra-Secret-9911",
    ] {
        let e = builder(url).build().await.expect_err(url);
        seen.push_str(&format!("{e}\n{e:?}\n"));
        seen.push_str(&body_text(axum::response::IntoResponse::into_response(e)).await);
    }
    // An upstream URL with credentials or a query is refused, saying to
    // send a header.
    for url in [
        "http://api:Zebra-Secret-9911@127.0.0.1:1",
        "http://127.0.0.1:1/v1?api_key=Zebra-Secret-9911",
    ] {
        let e = PoolManager::builder()
            .http("api", HttpConfig::new(url))
            .build()
            .await
            .expect_err(url);
        seen.push_str(&format!("{e}\n{e:?}\n"));
        seen.push_str(&body_text(axum::response::IntoResponse::into_response(e)).await);
    }
    let failures = seen.clone();

    // Builds that work: a Redis that wants the password, and the shared
    // Postgres reached with a password holding a raw '#' (trust auth here;
    // a server that checks it refuses, which is scanned the same way).
    let Some((redis, port)) = common::servers::redis_with_password("Zebra#Secret-9911") else {
        return;
    };
    let pg = require!(common::pg_url());
    let (_, rest) = pg.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let pg = format!("postgres://test:Zebra#Secret-9911@{host}");
    let manager = PoolManager::builder()
        .redis(
            "cache",
            RedisConfig::from_url(format!("redis://:Zebra%23Secret-9911@127.0.0.1:{port}/0"))
                .acquire_timeout(Duration::from_millis(500))
                .health_check_interval(None),
        )
        .http(
            "api",
            HttpConfig::new("http://127.0.0.1:1/v1").request_timeout(Duration::from_millis(500)),
        )
        .build()
        .await
        .unwrap();
    match builder(&pg).build().await {
        Ok(sql) => {
            seen.push_str(&everything_shown(&sql).await);
            sql.drain(Duration::from_secs(5)).await;
        }
        Err(e) => seen.push_str(&format!("{e}\n{e:?}\n")),
    }
    seen.push_str(&everything_shown(&manager).await);
    // Run-time failures: the upstream refuses, the Redis server dies.
    let api = axum_pools::HttpClient::<axum_pools::ByType>::from_manager(&manager).unwrap();
    let e = api.get("/").send().await.expect_err("nothing listens");
    seen.push_str(&format!("{e}\n{e:?}\n"));
    seen.push_str(&body_text(axum::response::IntoResponse::into_response(e)).await);
    // A key in a request's path, which the client refuses before sending.
    for path in [
        "items?api_key=Zebra-Secret-9911",
        "/q?x=a b&api_key=Zebra-Secret-9911",
    ] {
        let request = api.get(path);
        seen.push_str(&format!("{request:?}\n"));
        let e = request.send().await.expect_err(path);
        seen.push_str(&format!("{e}\n{e:?}\n"));
        seen.push_str(&body_text(axum::response::IntoResponse::into_response(e)).await);
    }
    drop(redis);
    let _ = manager.check_health().await;
    seen.push_str(&everything_shown(&manager).await);
    seen.push_str(&format!(
        "{:?}\n",
        serde_json::to_string(&RedisConfig::from_url(format!(
            "redis://:Zebra%23Secret-9911@127.0.0.1:{port}/0"
        )))
    ));
    manager.drain(Duration::from_secs(5)).await;

    let logs = logs.text();
    for (what, text) in [("logs", &logs), ("errors and bodies", &seen)] {
        for secret in [MARK, "Secret%2D9911", "Zebra"] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
    // What helps stays: user names and hosts.
    assert!(failures.contains("app:***@127.0.0.1:1"), "{failures}");
    assert!(
        failures.contains("%23"),
        "the encoding fix is named:\n{failures}"
    );
    assert!(logs.contains("test:***@127.0.0.1"), "{logs}");
    assert!(failures.contains("api_key=***"), "{failures}");
    assert!(logs.contains("connect failed"), "{logs}");
}

/// The `full_stack` example, started as an operator would with a password
/// holding a raw `#` in `DATABASE_URL` and a Redis that wants one, logging
/// at TRACE: its whole output holds no part of either password.
#[test]
fn the_full_stack_example_logs_no_secret() {
    use std::process::{Command, Stdio};

    let Some((_redis, redis_port)) = common::servers::redis_with_password("Zebra#Secret-9911")
    else {
        return;
    };
    let Some(pg) = common::pg_url() else {
        return;
    };
    let (_, rest) = pg.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let binary = common::example::binary("full_stack", "postgres,redis,http");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let port = common::example::free_port();
    let mut server = common::certs::KillOnDrop(
        Command::new(binary)
            .env(
                "DATABASE_URL",
                format!("postgres://test:Zebra#Secret-9911@{host}"),
            )
            .env(
                "REDIS_URL",
                format!("redis://:Zebra%23Secret-9911@127.0.0.1:{redis_port}/0"),
            )
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "trace")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("err.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let mut answered = String::new();
    for _ in 0..300 {
        if server.0.try_wait().unwrap().is_some() {
            break;
        }
        if let Some(health) = common::example::get(port, "/pools/health") {
            answered = health;
            for path in ["/pools/stats", "/pools/metrics", "/notes"] {
                answered.push_str(&common::example::get(port, path).unwrap_or_default());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    eprintln!("answered {} bytes", answered.len());
    let output = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.path().join("err.log")).unwrap();
    assert!(!output.is_empty(), "the example wrote nothing");
    for text in [&output, &answered] {
        for secret in [MARK, "Zebra"] {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
    }
    if !answered.is_empty() {
        assert!(output.contains("pool ready"), "{output}");
        assert!(output.contains("test:***@"), "{output}");
    }
}

/// The quickstart (a SQLite app) started with a server URL whose password
/// holds a raw `#` in `DATABASE_URL`, logging at TRACE: it cannot open
/// it and exits, and neither its log nor its error holds any part of the
/// password, while the user and host are still there.
#[test]
fn the_quickstart_given_a_hash_password_url_logs_no_secret() {
    let binary = common::example::binary("quickstart", "sqlite");
    let out = std::process::Command::new(binary)
        .env(
            "DATABASE_URL",
            "postgres://app:Zebra#Secret-9911@127.0.0.1:1/db",
        )
        .env(
            "BIND",
            format!("127.0.0.1:{}", common::example::free_port()),
        )
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it could not open that:\n{text}");
    assert!(text.contains("app:***@127.0.0.1:1"), "{text}");
    for secret in [MARK, "Zebra"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
}
