//! `GET /pools/events` and `GET /pools/dashboard` over HTTP: the stream's
//! format and pace, what the health details policy lets through, and the
//! page served same-origin only. The page in a real browser is
//! `tests/dashboard_browser.rs`.
#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::Response,
};
use axum_pools::{DbConfig, DbConn, HealthDetails, PoolManager, SqliteConnection};
use common::{body_text, get};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn manager() -> (tempfile::TempDir, PoolManager) {
    let (dir, path) = common::sqlite_file();
    let manager = PoolManager::builder()
        .database::<SqliteConnection>("notes", DbConfig::from_url(path).max_size(2))
        .build()
        .await
        .unwrap();
    (dir, manager)
}

/// Reads `body` up to the end of its next event (a blank line); `None`
/// when it ended.
async fn next_event(body: &mut Body) -> Option<String> {
    let mut text = String::new();
    while !text.ends_with("\n\n") {
        let frame = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    Some(text)
}

/// The JSON of an event's `data:` line.
fn data(event: &str) -> serde_json::Value {
    let line = event
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data line in {event:?}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn events_are_snapshots_in_sse_format() {
    let (_dir, manager) = manager().await;
    let app = manager.router::<()>();
    let response = app.oneshot(get("/pools/events")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let mut body = response.into_body();

    let first = next_event(&mut body).await.unwrap();
    assert!(first.contains("event: snapshot\n"), "{first:?}");
    assert!(
        first.contains("retry: 2000\n"),
        "the first event tells the browser when to reconnect: {first:?}"
    );
    let snapshot = data(&first);
    assert_eq!(snapshot["pools"][0]["pool"], "notes");
    assert_eq!(snapshot["pools"][0]["leases"], 0);
    assert_eq!(snapshot["health"][0]["pool"], "notes");
    assert_eq!(snapshot["health"][0]["status"], "pass");
    assert!(snapshot["process"]["resident_bytes"].as_i64().unwrap() > 0);
    assert!(snapshot["process"]["tokio_workers"].as_u64().unwrap() >= 1);

    // Two leases between events show in the next one.
    drop(DbConn::<SqliteConnection>::acquire(&manager).await.unwrap());
    drop(DbConn::<SqliteConnection>::acquire(&manager).await.unwrap());
    let second = next_event(&mut body).await.unwrap();
    assert!(
        !second.contains("retry:"),
        "only the first event sets retry"
    );
    let later = data(&second);
    assert_eq!(later["pools"][0]["leases"], 2);
    assert!(later["at_ms"].as_u64() >= snapshot["at_ms"].as_u64());
}

#[tokio::test(start_paused = true)]
async fn events_come_once_a_second_and_a_stalled_client_is_ended() {
    let (_dir, manager) = manager().await;
    let response = manager
        .router::<()>()
        .oneshot(get("/pools/events"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let start = tokio::time::Instant::now();
    next_event(&mut body).await.unwrap();
    for n in 1..=3u32 {
        next_event(&mut body).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(n.into()));
    }
    // The client reads nothing for 10 s: then it gets the newest snapshot,
    // not the ten it missed.
    tokio::time::advance(Duration::from_secs(10)).await;
    let resumed = tokio::time::Instant::now();
    next_event(&mut body).await.unwrap();
    next_event(&mut body).await.unwrap();
    assert!(
        resumed.elapsed() >= Duration::from_millis(500),
        "no backlog"
    );
    // Nothing taken for 30 s: the stream ends.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(next_event(&mut body).await.is_none(), "the stream ended");
}

async fn answer(app: &axum::Router, uri: &str) -> Response {
    app.clone().oneshot(get(uri)).await.unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_are_same_origin_only() {
    let (_dir, manager) = manager().await;
    let app = axum::Router::new().merge(manager.router());
    let page = answer(&app, "/pools/dashboard").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("http") && !csp.contains("unsafe"), "{csp}");
    let html = body_text(page).await;
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );

    // Every URL the page names is relative and answers from this router.
    let mut urls: Vec<&str> = html
        .split(['"', '\''])
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].ends_with("src=") || w[0].ends_with("href="))
        .map(|w| w[1])
        .collect();
    urls.sort_unstable();
    urls.dedup();
    assert!(urls.contains(&"dashboard/dashboard.js"), "{urls:?}");
    assert!(urls.contains(&"events"), "{urls:?}");
    for url in urls {
        if url.starts_with("data:") {
            continue;
        }
        assert!(!url.contains("//"), "{url} is same-origin");
        let path = format!("/pools/{url}");
        let response = answer(&app, &path).await;
        assert!(
            response.status().is_success() || response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
        if path.ends_with(".js") || path.ends_with(".css") {
            assert!(
                response
                    .headers()
                    .contains_key(header::CONTENT_SECURITY_POLICY)
            );
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            let text = body_text(response).await;
            // The one absolute URL is SVG's namespace name, never fetched.
            let other = text
                .match_indices("http")
                .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                .count();
            assert_eq!(other, 0, "{path} names no other origin");
        }
    }
}

#[tokio::test]
async fn hidden_details_hide_the_dashboard_and_the_events() {
    let (_dir, manager) = manager().await;
    for (details, hidden) in [
        (HealthDetails::Never, true),
        (
            HealthDetails::when(|p| p.headers.contains_key("x-ops")),
            true,
        ),
        (HealthDetails::Summary, false),
        (HealthDetails::Always, false),
    ] {
        let app = axum::Router::new().merge(manager.router_with(details));
        for uri in ["/pools/dashboard", "/pools/events"] {
            let response = answer(&app, uri).await;
            if hidden {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri}");
                assert_eq!(
                    response.headers()[header::CONTENT_TYPE],
                    "application/problem+json"
                );
            } else {
                assert_eq!(response.status(), StatusCode::OK, "{uri}");
            }
        }
    }
}

/// A Redis pool tells its server's facts and a dead optional Postgres pool
/// has a driver's error: both only with full details.
#[cfg(all(feature = "redis", feature = "postgres"))]
#[tokio::test]
async fn summary_events_hide_driver_words_and_server_facts() {
    use axum_pools::{RedisConfig, diesel_async::AsyncPgConnection};
    let redis = require!(common::redis_url());
    let dead = format!(
        "postgres://test:test@127.0.0.1:{}/test",
        common::example::free_port()
    );
    let manager = PoolManager::builder()
        .redis("cache", RedisConfig::from_url(redis))
        .database::<AsyncPgConnection>("reports", DbConfig::from_url(dead).required(false))
        .build()
        .await
        .unwrap();
    manager.check_health().await;

    let snapshot = |details: HealthDetails| {
        let manager = manager.clone();
        async move {
            let response = manager
                .router_with::<()>(details)
                .oneshot(get("/pools/events"))
                .await
                .unwrap();
            data(&next_event(&mut response.into_body()).await.unwrap())
        }
    };
    let full = snapshot(HealthDetails::Always).await;
    let summary = snapshot(HealthDetails::Summary).await;

    // The entry of pool `name` in a snapshot's `list` ("pools", "health").
    let entry = |s: &serde_json::Value, list: &str, name: &str| {
        let entries = s[list].as_array().unwrap();
        entries.iter().find(|p| p["pool"] == name).unwrap().clone()
    };
    let pool = |s: &serde_json::Value, name: &str| entry(s, "pools", name);
    let health = |s: &serde_json::Value, name: &str| entry(s, "health", name);
    // Of the server's facts a summary keeps only `tls`.
    let server = |s: &serde_json::Value| pool(s, "cache")["server"].clone();
    assert!(server(&full)["redis_version"].is_string(), "{full}");
    assert_eq!(server(&summary), serde_json::json!({"tls": "off"}));

    // /pools/stats follows the same policy.
    for (details, shown) in [
        (HealthDetails::Always, true),
        (HealthDetails::Summary, false),
    ] {
        let app = manager.router_with::<()>(details);
        let all = common::body_json(answer(&app, "/pools/stats").await).await;
        let one = common::body_json(answer(&app, "/pools/stats/cache").await).await;
        let cache = all["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool"] == "cache");
        for stats in [cache.unwrap(), &one] {
            assert_eq!(
                stats["server"]["redis_version"].is_string(),
                shown,
                "{stats}"
            );
            assert_eq!(stats["server"]["tls"], "off", "{stats}");
        }
    }

    let words = health(&full, "reports")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    let hidden = health(&summary, "reports")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(health(&summary, "reports")["status"], "fail");
    assert!(hidden.contains("full health details"), "{hidden}");
    assert_ne!(words, hidden, "full details show the driver's words");
}

/// A dashboard left open does not hold up a graceful shutdown: the stream
/// ends when the manager drains, and the server then stops.
#[tokio::test]
async fn an_open_event_stream_ends_when_the_manager_drains() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (_dir, manager) = manager().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async {
        let _ = stopped.await;
    };
    let server = tokio::spawn(
        axum::serve(listener, manager.router::<()>())
            .with_graceful_shutdown(manager.drain_on(signal))
            .into_future(),
    );

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /pools/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(client).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("data: ") {
            break; // the first snapshot came
        }
    }
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while lines.next_line().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after the drain began");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stopped")
        .unwrap()
        .unwrap();
    assert!(manager.is_draining());
}
