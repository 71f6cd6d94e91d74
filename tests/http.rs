//! Outbound HTTP pools against real upstreams started here on free ports:
//! a small axum app, a server that accepts and never answers, and one that
//! resets every connection. Timeouts are short real ones: the upstream is
//! real I/O, which a paused clock would skip past.
#![cfg(all(feature = "http", feature = "sqlite"))]

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, Path, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::{any, get, post},
};
use axum_pools::{
    DbConfig, HealthStatus, HttpClient, HttpConfig, HttpError, PoolError, PoolLayer, PoolManager,
    SqliteConnection, pool_name,
};
use common::{body_json, eventually, get as req};
use futures_util::StreamExt;
use tokio::{
    net::TcpListener,
    sync::{Notify, Semaphore},
};
use tower::ServiceExt;

/// Calls seen by the upstream, per route.
#[derive(Clone)]
struct Seen {
    flaky: Arc<AtomicUsize>,
    flaky_post: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    /// Notified when `/held` has a request.
    held: Arc<Notify>,
    /// Each request's path and the client's address (its TCP connection).
    peers: Arc<Mutex<Vec<(String, SocketAddr)>>>,
}

impl Seen {
    /// The client addresses (TCP connections) requests to `path` came on.
    fn peers_of(&self, path: &str) -> Vec<SocketAddr> {
        let peers = self.peers.lock().unwrap();
        peers
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, a)| *a)
            .collect()
    }
}

struct Upstream {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes every connection.
    async fn kill(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn upstream() -> Upstream {
    let seen = Seen {
        flaky: Arc::default(),
        flaky_post: Arc::default(),
        total: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
        held: Arc::default(),
        peers: Arc::default(),
    };
    // The path and query as the upstream received them.
    let where_ = get(|uri: axum::http::Uri| async move { uri.to_string() });
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/json",
            get(|| async { Json(serde_json::json!({"quote": 42})) }),
        )
        .route(
            "/status/{code}",
            any(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
        )
        .route(
            "/get-only",
            any(|method: Method| async move {
                if method == Method::GET {
                    StatusCode::OK
                } else {
                    StatusCode::METHOD_NOT_ALLOWED
                }
            }),
        )
        .route(
            "/flaky",
            get(|State(s): State<Seen>| async move {
                if s.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    "recovered".into_response()
                }
            }),
        )
        .route(
            "/flaky-post",
            post(|State(s): State<Seen>| async move {
                s.flaky_post.fetch_add(1, Ordering::SeqCst);
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .route(
            "/held",
            get(|State(s): State<Seen>| async move {
                s.held.notify_one();
                let _permit = s.gate.acquire().await.unwrap();
                "released"
            }),
        )
        .route(
            // The head and a first chunk, then nothing, ever.
            "/endless",
            get(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"partial"))
                });
                Body::from_stream(first.chain(futures_util::stream::pending()))
            }),
        )
        .route("/redirect", get(|| async { Redirect::to("/json") }))
        .route("/post-redirect", post(|| async { Redirect::to("/json") }))
        .route(
            "/echo-again",
            post(|| async { Redirect::temporary("/echo") }),
        )
        .route(
            "/elsewhere",
            get(|| async { Redirect::temporary("http://127.0.0.1:1/json") }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route("/big", get(|| async { "x".repeat(64 * 1024) }))
        .route("/2k", get(|| async { "x".repeat(2 * 1024) }))
        .route("/where", where_.clone())
        .route("/api/where", where_)
        .layer(axum::middleware::from_fn_with_state(
            seen.clone(),
            |State(s): State<Seen>,
             ConnectInfo(peer): ConnectInfo<SocketAddr>,
             req: axum::extract::Request,
             next: axum::middleware::Next| async move {
                s.total.fetch_add(1, Ordering::SeqCst);
                s.peers
                    .lock()
                    .unwrap()
                    .push((req.uri().path().to_owned(), peer));
                next.run(req).await
            },
        ))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Upstream {
        addr,
        seen,
        stop: Some(stop),
        task,
    }
}

/// Accepts connections and never answers; counts them.
async fn silent() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (addr, accepted)
}

/// Accepts connections and resets each at once; counts them.
async fn resetting() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = socket.set_zero_linger();
            drop(socket);
        }
    });
    (addr, accepted)
}

/// An HTTP/1.1 upstream on threads of its own that answers every request
/// `ok` with keep-alive, and closes its open connections when told: what an
/// upstream does when its keep-alive timeout passes (nginx's
/// `keepalive_timeout`, Node's 5 s default) while a connection sits idle in
/// our pool.
struct Closing {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
    /// The method of each request it read, in order.
    methods: Arc<Mutex<Vec<String>>>,
}

impl Closing {
    /// Closes every open connection (a FIN to the client) while our pool
    /// holds it idle, and lets the next request check it out before hyper
    /// has seen the close.
    ///
    /// The FIN lands while this current-thread runtime is blocked.
    /// `yield_now` then lets tokio's driver take the event in (waking
    /// hyper's connection task) and polls the test before that task runs:
    /// the next request is checked out on the connection (which does not
    /// know yet that it is closed) and queued on it, then the connection
    /// task reads the EOF and gives the request back unsent. On a
    /// multi-threaded runtime the two run side by side: the race as it
    /// happens in production.
    async fn close_idle(&self) {
        for socket in self.open.lock().unwrap().drain(..) {
            socket.shutdown(std::net::Shutdown::Both).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        tokio::task::yield_now().await;
    }
}

fn closing() -> Closing {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(Mutex::new(Vec::new()));
    let methods = Arc::new(Mutex::new(Vec::new()));
    let (sockets, seen) = (open.clone(), methods.clone());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            sockets.lock().unwrap().push(socket.try_clone().unwrap());
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(socket.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    if reader.read_exact(&mut vec![0; length]).is_err() {
                        return;
                    }
                    let method = line.split(' ').next().unwrap_or_default();
                    seen.lock().unwrap().push(method.to_owned());
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if socket.write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Closing {
        addr,
        open,
        methods,
    }
}

pool_name!(Quotes = "quotes");

fn config(url: &str) -> HttpConfig {
    HttpConfig::new(url)
        .health_check_interval(None)
        .retry_backoff(Duration::from_millis(5))
}

async fn manager(config: HttpConfig) -> PoolManager {
    PoolManager::builder()
        .http("quotes", config)
        .build()
        .await
        .expect("build")
}

fn client(m: &PoolManager) -> HttpClient<Quotes> {
    HttpClient::from_manager(m).unwrap()
}

#[tokio::test]
async fn paths_join_the_base_url_with_their_query_and_bad_ones_are_refused() {
    let up = upstream().await;
    let plain = manager(config(&up.url())).await;
    let c = client(&plain);
    let seen = c.get("/where?x=1&y=a%20b").send().await.unwrap();
    assert_eq!(seen.text().await.unwrap(), "/where?x=1&y=a%20b");
    // The base URL's path (its trailing '/' dropped) comes first.
    let based = manager(config(&format!("{}/api/", up.url()))).await;
    let seen = client(&based).get("/where?x=1").send().await.unwrap();
    assert_eq!(seen.text().await.unwrap(), "/api/where?x=1");
    for (path, says) in [
        ("where", "the request path must start with '/'"),
        ("/a path", "invalid request path (invalid uri character)"),
    ] {
        match c.get(path).send().await {
            Err(HttpError::InvalidRequest(message)) => {
                assert!(message.contains(says), "{path}: {message}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    up.kill().await;
}

#[tokio::test]
async fn a_body_that_is_not_the_expected_json_is_a_502_that_quotes_none_of_it() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Quote {
        quote: String,
    }
    let up = upstream().await;
    let m = manager(config(&up.url())).await;
    // `/json` answers {"quote": 42}: a number where a string is expected.
    let err = client(&m)
        .get("/json")
        .send()
        .await
        .unwrap()
        .json::<Quote>()
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Decode(_)), "{err:?}");
    let text = format!("{err}\n{err:?}");
    assert!(text.contains("does not match the expected type"), "{text}");
    let response = err.into_response();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = common::body_text(response).await;
    for shown in [&text, &body] {
        assert!(!shown.contains("42"), "the body's value is quoted: {shown}");
    }
    up.kill().await;
}

#[tokio::test]
async fn a_handler_proxies_json_through_the_pool() {
    let up = upstream().await;
    let m = manager(config(&up.url())).await;
    let app = Router::new()
        .route(
            "/quote",
            get(|quotes: HttpClient<Quotes>| async move {
                let v: serde_json::Value = quotes.get("/json").send().await?.json().await?;
                Ok::<_, HttpError>(Json(v))
            }),
        )
        .layer(PoolLayer::new(m.clone()));
    for _ in 0..20 {
        let r = app.clone().oneshot(req("/quote")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body_json(r).await["quote"], 42);
    }
    let s = m.stats_of("quotes").unwrap();
    let http = s.http.clone().expect("http stats");
    assert_eq!(http.requests, 20);
    assert_eq!(http.status_classes, [0, 20, 0, 0, 0]);
    assert_eq!(http.latency.count, 20);
    assert_eq!(
        s.active, 0,
        "every connection came back after its body was read"
    );
    assert_eq!(s.created, 1, "one keep-alive connection served all: {s:?}");
    assert_eq!(s.backend, "http");

    // A POST body and the echo.
    let text = client(&m)
        .post("/echo")
        .body("hello")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "hello");
}

#[tokio::test]
async fn http2_prior_knowledge_works_the_same() {
    let up = upstream().await;
    let m = manager(config(&up.url()).http2(true)).await;
    for _ in 0..5 {
        let v: serde_json::Value = client(&m)
            .get("/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["quote"], 42);
    }
    let text = client(&m)
        .post("/echo")
        .body("h2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "h2");
    assert_eq!(m.check_health().await.status, HealthStatus::Pass);
    let s = m.stats_of("quotes").unwrap();
    assert_eq!((s.created, s.active), (1, 0), "{s:?}");
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_503_and_posts_are_not() {
    let up = upstream().await;
    let m = manager(config(&up.url()).retries(2)).await;
    let r = client(&m).get("/flaky").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "recovered");
    assert_eq!(up.seen.flaky.load(Ordering::SeqCst), 3);
    let http = m.stats_of("quotes").unwrap().http.unwrap();
    assert_eq!((http.requests, http.retries), (3, 2));

    let r = client(&m).post("/flaky-post").send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the 503 is the caller's to see"
    );
    assert_eq!(
        up.seen.flaky_post.load(Ordering::SeqCst),
        1,
        "a POST is sent once"
    );

    // Opted in, a POST is retried too.
    let m = manager(config(&up.url()).retries(2).retry_non_idempotent(true)).await;
    let _ = client(&m).post("/flaky-post").send().await.unwrap();
    assert_eq!(up.seen.flaky_post.load(Ordering::SeqCst), 1 + 3);
}

#[tokio::test]
async fn a_refused_connect_is_an_attempt_and_is_retried() {
    // Nothing listens on port 1: each connect is refused at once.
    let m = manager(config("http://127.0.0.1:1").retries(2)).await;
    let err = client(&m).get("/").send().await.unwrap_err();
    assert!(
        matches!(err, HttpError::Pool(PoolError::Backend { .. })),
        "{err}"
    );
    let http = m.stats_of("quotes").unwrap().http.unwrap();
    assert_eq!(
        (http.requests, http.errors, http.retries),
        (3, 3, 2),
        "1 try + 2 retries, none answered"
    );
    assert_eq!(
        err.into_response().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_retry_is_counted_when_it_is_made_not_when_it_is_planned() {
    let up = upstream().await;
    let m = manager(
        config(&up.url())
            .retries(2)
            .retry_backoff(Duration::from_secs(30)),
    )
    .await;
    // `/flaky` answers 503 first; the caller gives up during the backoff.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(300), client(&m).get("/flaky").send()).await;
    assert!(gave_up.is_err());
    assert_eq!(up.seen.flaky.load(Ordering::SeqCst), 1);
    let http = m.stats_of("quotes").unwrap().http.unwrap();
    assert_eq!((http.requests, http.retries), (1, 0));
    up.kill().await;
}

#[tokio::test]
async fn resets_are_retried_for_idempotent_methods_only() {
    let (addr, accepted) = resetting().await;
    let m = manager(config(&format!("http://{addr}")).retries(2)).await;
    let before = accepted.load(Ordering::SeqCst);
    let err = client(&m).get("/").send().await.unwrap_err();
    assert!(
        matches!(
            err,
            HttpError::Upstream { .. } | HttpError::Pool(PoolError::Backend { .. })
        ),
        "{err}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst) - before,
        3,
        "1 try + 2 retries"
    );

    let before = accepted.load(Ordering::SeqCst);
    let err = client(&m).post("/").send().await.unwrap_err();
    assert_eq!(err.into_response().status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        accepted.load(Ordering::SeqCst) - before,
        1,
        "a POST is tried once"
    );
}

/// The upstream closes an idle pooled connection just before a request
/// goes out on it. hyper gives such a request back unsent; it goes out on
/// another connection, whatever its method and with no retries allowed: the
/// upstream never saw it. Neither a retry nor an error.
#[tokio::test]
async fn a_request_given_back_unsent_by_a_connection_the_upstream_closed_goes_out_on_another() {
    let up = closing();
    let m = manager(config(&format!("http://{}", up.addr)).retries(0)).await;
    let r = client(&m).get("/").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    let idle = m.stats_of("quotes").unwrap().idle;
    assert!(idle >= 1, "{idle}");
    up.methods.lock().unwrap().clear();

    up.close_idle().await;

    let logs = common::Logs::default();
    let guard = logs.install(tracing::Level::DEBUG);
    let r = client(&m).post("/").body("order").send().await.unwrap();
    drop(guard);
    assert!(
        logs.text().contains("sending it on another"),
        "the connection gave the POST back unsent: {}",
        logs.text()
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(*up.methods.lock().unwrap(), ["POST"], "sent once");
    let http = m.stats_of("quotes").unwrap().http.unwrap();
    assert_eq!((http.requests, http.errors, http.retries), (2, 0, 0));
}

/// As above, but with the pool's one slot taken, when the request is given
/// back, by a request that waited for it: the resend finds no connection
/// within `acquire_timeout`. It answers 503 and counts as an error, so that
/// every counted request still has one outcome in the stats.
#[tokio::test]
async fn a_request_given_back_unsent_that_finds_no_connection_counts_as_an_error() {
    let up = closing();
    let m = manager(
        config(&format!("http://{}", up.addr))
            .retries(0)
            .max_size(1)
            .acquire_timeout(Duration::from_millis(100)),
    )
    .await;
    let r = client(&m).get("/").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    up.close_idle().await;

    let logs = common::Logs::default();
    let guard = logs.install(tracing::Level::DEBUG);
    let post = client(&m).post("/").body("order").send();
    tokio::pin!(post);
    // Polled once: the POST has the closed connection and is queued on it.
    assert!(futures_util::poll!(&mut post).is_pending());
    // Runs after hyper's connection task has given the POST back: it waits
    // for the slot, gets it when the POST lets the closed connection go,
    // and holds it (its body unread) well past the POST's `acquire_timeout`.
    let waiter = tokio::spawn({
        let m = m.clone();
        async move {
            let held = client(&m).get("/").send().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            held.text().await.unwrap()
        }
    });
    let err = post.await.unwrap_err();
    drop(guard);
    assert!(
        logs.text().contains("sending it on another"),
        "{}",
        logs.text()
    );
    assert!(
        matches!(err, HttpError::Pool(PoolError::Timeout { .. })),
        "{err}"
    );
    assert_eq!(waiter.await.unwrap(), "ok");
    let http = m.stats_of("quotes").unwrap().http.unwrap();
    let answered: u64 = http.status_classes.iter().sum();
    assert_eq!((http.requests, answered, http.errors), (3, 2, 1));
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_with_504() {
    let (addr, accepted) = silent().await;
    let m = manager(
        config(&format!("http://{addr}"))
            .request_timeout(Duration::from_millis(150))
            .retries(1),
    )
    .await;
    let err = client(&m).get("/").send().await.unwrap_err();
    assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
    let http = m.stats_of("quotes").unwrap().http.unwrap();
    assert_eq!((http.requests, http.timeouts, http.retries), (2, 2, 1));
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "a timed-out connection is not reused"
    );
    let response = err.into_response();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
}

#[tokio::test]
async fn max_size_caps_the_connections_and_a_full_pool_answers_503() {
    let up = upstream().await;
    let m = manager(
        config(&up.url())
            .max_size(1)
            .acquire_timeout(Duration::from_millis(200)),
    )
    .await;
    let held = tokio::spawn({
        let c = client(&m);
        async move { c.get("/held").send().await.unwrap().text().await.unwrap() }
    });
    eventually("the first request holds the only connection", || {
        m.stats_of("quotes").unwrap().active == 1
    })
    .await;
    let err = client(&m).get("/json").send().await.unwrap_err();
    assert!(
        matches!(err, HttpError::Pool(PoolError::Timeout { .. })),
        "{err}"
    );
    let response = err.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    up.seen.gate.add_permits(1);
    assert_eq!(held.await.unwrap(), "released");
    let s = m.stats_of("quotes").unwrap();
    assert_eq!((s.size, s.timeouts), (1, 1));
}

#[tokio::test]
async fn redirects_are_returned_unless_following_is_enabled() {
    let up = upstream().await;
    let m = manager(config(&up.url())).await;
    let r = client(&m).get("/redirect").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let m = manager(config(&up.url()).max_redirects(2)).await;
    let r = client(&m).get("/redirect").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["quote"], 42);

    // A host written in capitals is the same origin as its redirects.
    let port = up.addr.port();
    let m = manager(config(&format!("http://LOCALHOST:{port}")).max_redirects(2)).await;
    let r = client(&m).get("/redirect").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_sends_head_then_get_on_405_fails_on_5xx_and_notes_4xx() {
    let up = upstream().await;
    for (path, status, note) in [
        ("/", HealthStatus::Pass, None),
        ("/get-only", HealthStatus::Pass, None),
        (
            "/status/404",
            HealthStatus::Pass,
            Some("HEAD /status/404 answered 404 Not Found"),
        ),
        ("/status/503", HealthStatus::Fail, None),
    ] {
        let m = manager(config(&up.url()).health_path(path)).await;
        let health = m.check_health().await.pools.remove(0);
        assert_eq!(health.status, status, "{path}: {health:?}");
        if status == HealthStatus::Fail {
            assert!(health.error.unwrap().contains("answered 503"), "{path}");
        }
        let server = m.stats_of("quotes").unwrap().server.unwrap_or_default();
        assert_eq!(
            server.get("health_status").map(String::as_str),
            note,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_killed_upstream_turns_only_its_pool_unhealthy_within_a_health_interval() {
    let up = upstream().await;
    let (_dir, path) = common::sqlite_file();
    let every = Some(Duration::from_millis(100));
    let m = PoolManager::builder()
        .http(
            "quotes",
            HttpConfig::new(up.url()).health_check_interval(every),
        )
        .database::<SqliteConnection>("db", DbConfig::from_url(&path).health_check_interval(every))
        .build()
        .await
        .unwrap();
    assert_eq!(m.health().await.status, HealthStatus::Pass);

    up.kill().await;
    let checks = m.stats_of("quotes").unwrap().health_checks;
    // The second check from now started after the kill.
    eventually("two more health checks ran", || {
        m.stats_of("quotes").unwrap().health_checks >= checks + 2
    })
    .await;
    let report = m.health().await;
    assert_eq!(report.status, HealthStatus::Fail);
    assert_eq!(report.pools[0].status, HealthStatus::Fail, "{report:?}");
    assert_eq!(report.pools[1].status, HealthStatus::Pass, "{report:?}");
}

#[tokio::test]
async fn an_unreachable_upstream_does_not_fail_the_build_but_bad_urls_do() {
    let m = manager(config("http://127.0.0.1:1")).await;
    assert_eq!(m.check_health().await.status, HealthStatus::Fail);

    for (url, why) in [
        ("ftp://x", "must start with http:// or https://"),
        (
            "http://user:hunter2@billing.internal",
            "must not carry credentials",
        ),
        (
            "http://billing.internal/v1?api_key=hunter2-key",
            "must not carry a query",
        ),
    ] {
        let err = PoolManager::builder()
            .http("quotes", config(url))
            .build()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("failed to set up pool 'quotes'"), "{msg}");
        assert!(msg.contains(why), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    // An https upstream with a CA file that is not there fails at build,
    // naming the knob (the upstream itself may come later; its trust may not).
    let err = PoolManager::builder()
        .http(
            "quotes",
            config("https://billing.internal").tls_ca_file("/nonexistent/ca.pem"),
        )
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_ca_file /nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn a_response_dropped_before_its_body_ended_does_not_hand_its_connection_on() {
    let up = upstream().await;
    // No retry: a request sent on the abandoned connection would fail.
    let m = manager(config(&up.url()).retries(0)).await;
    let r = client(&m).get("/endless").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(r); // the body never ends; hyper still expects to read it
    next_request_uses_a_new_connection(&up, &m, "/endless").await;
}

/// Asks for `/json` and checks it came on another connection than the one
/// request to `first`, with no error counted and no lease left out.
async fn next_request_uses_a_new_connection(up: &Upstream, m: &PoolManager, first: &str) {
    let text = client(m)
        .get("/json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, r#"{"quote":42}"#);
    let (before, next) = (up.seen.peers_of(first), up.seen.peers_of("/json"));
    assert_eq!((before.len(), next.len()), (1, 1));
    assert_ne!(
        before[0], next[0],
        "the next request came on a new connection"
    );
    let s = m.stats_of("quotes").unwrap();
    assert_eq!(s.http.as_ref().unwrap().errors, 0, "{s:?}");
    assert_eq!(s.active, 0);
}

#[tokio::test]
async fn a_request_cancelled_mid_flight_does_not_hand_its_connection_on() {
    let up = upstream().await;
    let m = manager(config(&up.url()).retries(0)).await;
    let mut send = Box::pin(client(&m).get("/held").send());
    tokio::select! {
        r = &mut send => panic!("/held answered before its gate opened: {r:?}"),
        () = up.seen.held.notified() => {}
    }
    // The request is on the wire and its response not read: cancel it.
    drop(send);
    next_request_uses_a_new_connection(&up, &m, "/held").await;
    up.seen.gate.add_permits(1);
}

#[tokio::test]
async fn redirects_keep_to_the_upstream_and_follow_http_method_rules() {
    let up = upstream().await;
    let m = manager(config(&up.url()).max_redirects(2)).await;
    // 303 after a POST: a GET without the body.
    let r = client(&m)
        .post("/post-redirect")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["quote"], 42);
    // 307: the same method and body again.
    let r = client(&m)
        .post("/echo-again")
        .body("twice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "twice");
    // Another origin: not followed, the 3xx is the caller's.
    let r = client(&m).get("/elsewhere").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let s = m.stats_of("quotes").unwrap();
    assert_eq!(
        (s.created, s.active),
        (1, 0),
        "empty redirect bodies do not cost connections: {s:?}"
    );
}

#[tokio::test]
async fn a_body_over_max_response_body_fails_naming_the_knob_and_closes_its_connection() {
    let up = upstream().await;
    let m = manager(config(&up.url()).max_response_body(1024)).await;
    let err = client(&m)
        .get("/big")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::BodyTooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_response_body"), "{err}");
    assert_eq!(err.into_response().status(), StatusCode::BAD_GATEWAY);
    // Within the limit, and on a new connection: the cut one was closed.
    let text = client(&m)
        .get("/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "ok");
    let (big, next) = (up.seen.peers_of("/big"), up.seen.peers_of("/"));
    assert_ne!(big[0], *next.last().unwrap());
    let s = m.stats_of("quotes").unwrap();
    assert_eq!((s.active, s.broken), (0, 1), "{s:?}");

    // Over the limit in the one frame that ends the body: the same error,
    // naming the pool; the connection, read to its end, goes back.
    let err = client(&m).get("/2k").send().await.unwrap().bytes().await;
    match err {
        Err(HttpError::BodyTooLarge { pool, limit: 1024 }) => assert_eq!(pool, "quotes"),
        other => panic!("{other:?}"),
    }
    let s = m.stats_of("quotes").unwrap();
    assert_eq!((s.active, s.broken), (0, 1), "{s:?}");

    // A streamed body is the reader's to bound.
    let (response, _guard) = client(&m).get("/big").send().await.unwrap().into_parts();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    assert_eq!(body.to_bytes().len(), 64 * 1024);

    let err = PoolManager::builder()
        .http("quotes", config(&up.url()).max_response_body(0))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_response_body = 0"), "{err}");
}

#[tokio::test]
async fn a_half_open_probe_cancelled_mid_flight_gives_its_permit_back() {
    let up = upstream().await;
    let breaker = axum_pools::BreakerConfig {
        consecutive_failures: 2,
        open_duration: Duration::from_millis(200),
        half_open_probes: 1,
        ..axum_pools::BreakerConfig::default()
    };
    let m = manager(config(&up.url()).retries(0).breaker(breaker)).await;
    let c = client(&m);
    for _ in 0..2 {
        let r = c.get("/status/500").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        m.stats_of("quotes").unwrap().breaker.state,
        axum_pools::BreakerState::Open
    );
    tokio::time::sleep(Duration::from_millis(250)).await;

    // The one probe of the half-open period is on the wire when its
    // request is cancelled.
    let mut probe = Box::pin(c.get("/held").send());
    tokio::select! {
        r = &mut probe => panic!("/held answered before its gate opened: {r:?}"),
        () = up.seen.held.notified() => {}
    }
    drop(probe);
    up.seen.gate.add_permits(1);

    // Its permit came back: the next request probes and closes the breaker.
    let r = c.get("/json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        m.stats_of("quotes").unwrap().breaker.state,
        axum_pools::BreakerState::Closed
    );
}

#[tokio::test]
async fn query_timeout_bounds_each_attempt_when_shorter_than_request_timeout() {
    let (addr, _accepted) = silent().await;
    let m = manager(
        config(&format!("http://{addr}"))
            .request_timeout(Duration::from_secs(30))
            .query_timeout(Some(Duration::from_millis(150)))
            .retries(0),
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(10), client(&m).get("/").send())
        .await
        .expect("bounded by query_timeout, not the 30 s request_timeout")
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Timeout { after, .. } if after == Duration::from_millis(150)),
        "{err}"
    );
}
