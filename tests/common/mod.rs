//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write,
    net::ToSocketAddrs,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, http::Request, response::Response};

pub mod certs;
pub mod example;
pub mod servers;
use http_body_util::BodyExt;

/// Under CI (`CI=true`) a missing server fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn host_port(url: &str) -> String {
    let after = url.split_once("://").map_or(url, |(_, a)| a);
    let authority = after.split(['/', '?']).next().unwrap_or(after);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.to_owned()
}

/// The server URL from `var` (or `default`) when its server answers on TCP;
/// `None` (skip) when it does not, except under CI where that panics.
pub fn server_url(var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let addr = host_port(&url);
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(url);
    }
    let msg = format!("no server at {addr} for {var}; run scripts/test.sh to start it");
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

pub fn pg_url() -> Option<String> {
    server_url(
        "TEST_DATABASE_URL",
        "postgres://test:test@127.0.0.1:5432/test",
    )
}

pub fn mysql_url() -> Option<String> {
    server_url("TEST_MYSQL_URL", "mysql://test:test@127.0.0.1:3306/test")
}

pub fn redis_url() -> Option<String> {
    server_url("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
}

/// Returns early from a test when the server is absent (outside CI).
#[macro_export]
macro_rules! require {
    ($url:expr) => {
        match $url {
            Some(url) => url,
            None => return,
        }
    };
}

/// How many server connections carry `application_name = app` (tag a
/// pool's URL with `application_name` to count its connections).
#[cfg(feature = "postgres")]
pub async fn pg_connections_named(admin: &mut diesel_async::AsyncPgConnection, app: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}')"
    )))
    .get_result(admin)
    .await
    .unwrap()
}

/// A fresh SQLite file in its own temporary directory.
pub fn sqlite_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("test.db").display().to_string();
    (dir, path)
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub async fn body_text(response: Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub async fn body_json(response: Response) -> serde_json::Value {
    serde_json::from_str(&body_text(response).await).unwrap()
}

/// Polls `cond` every 10 ms (virtual time under a paused clock) up to 30 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A name unique to this process and call, for server-side objects.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Everything the `tracing` fmt subscriber writes, for tests that read logs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    /// Captures this thread's events at `level` and up (and span closes)
    /// until the guard drops.
    pub fn install(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(self.clone())
                .with_max_level(level)
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .with_ansi(false)
                .finish(),
        );
        // A call site first hit by another thread before this subscriber
        // existed may have cached "never": ask again.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
