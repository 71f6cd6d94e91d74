//! RateLimitLayer with the paused clock: burst, 429 + headers, refill,
//! separate keys, spoofed forwarding headers ignored, state shared by every
//! clone, bounded keys.

mod common;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderName, Request, StatusCode, header},
    response::Response,
    routing::get,
};
use axum_pools::layer::{KeyBy, RateLimitLayer};
use common::body_json;
use tower::{Service, ServiceExt};
use tower_layer::Layer;

fn from(ip: &str) -> Request<Body> {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40000)));
    req
}

fn forwarded(peer: &str, xff: &str) -> Request<Body> {
    let mut req = from(peer);
    req.headers_mut()
        .insert("x-forwarded-for", xff.parse().unwrap());
    req
}

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

async fn status(app: &Router, req: Request<Body>) -> StatusCode {
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test(start_paused = true)]
async fn a_burst_then_429_with_retry_after_and_headers_then_refill() {
    let app = app(RateLimitLayer::new(2, Duration::from_secs(1)).key(KeyBy::Global));

    let r = app.clone().oneshot(from("192.0.2.1")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=2;w=1");
    assert_eq!(r.headers()["ratelimit"], "\"default\";r=1;t=1");
    let r = app.clone().oneshot(from("192.0.2.1")).await.unwrap();
    assert_eq!(r.headers()["ratelimit"], "\"default\";r=0;t=1");

    let r: Response = app.clone().oneshot(from("192.0.2.1")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(r.headers()["ratelimit"], "\"default\";r=0;t=1");
    assert_eq!(
        body_json(r).await["type"],
        "urn:axum-pools:problem:rate-limited"
    );

    // One request's worth refills every 500 ms.
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_eq!(
        status(&app, from("192.0.2.1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    assert_eq!(
        status(&app, from("192.0.2.1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn each_peer_has_its_own_limit() {
    let app = app(RateLimitLayer::new(1, Duration::from_secs(60)));
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    assert_eq!(
        status(&app, from("192.0.2.1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(status(&app, from("192.0.2.2")).await, StatusCode::OK);
    assert_eq!(status(&app, from("2001:db8::1")).await, StatusCode::OK);
    assert_eq!(
        status(&app, from("2001:db8::1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn the_advertised_window_is_rounded_up_so_keeping_to_it_is_never_refused() {
    // One request per 1.5 s: advertised as 1 per 2 s, not 1 per 1 s.
    let app = app(RateLimitLayer::new(2, Duration::from_secs(3))
        .burst(1)
        .key(KeyBy::Global));
    let r = app.clone().oneshot(from("192.0.2.1")).await.unwrap();
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=1;w=2");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let key = KeyBy::client_ip(["10.0.0.0/8"]).unwrap();
    let app = app(RateLimitLayer::new(1, Duration::from_secs(60)).key(key));

    // An untrusted peer cannot escape its limit by spoofing the header.
    assert_eq!(
        status(&app, forwarded("203.0.113.5", "198.51.100.1")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, forwarded("203.0.113.5", "198.51.100.2")).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Behind a trusted proxy, each real client has its own limit.
    assert_eq!(
        status(&app, forwarded("10.0.0.7", "198.51.100.7")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, forwarded("10.0.0.7", "198.51.100.8")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, forwarded("10.0.0.9", "198.51.100.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client through another proxy"
    );
    // A client-supplied entry left of the proxy chain is not believed: the
    // rightmost untrusted address is the client.
    assert_eq!(
        status(
            &app,
            forwarded("10.0.0.7", "1.2.3.4, 198.51.100.7, 10.0.0.3")
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Forwarded (RFC 7239) works too.
    let mut req = from("10.0.0.7");
    req.headers_mut().insert(
        header::FORWARDED,
        "for=\"[2001:db8::7]:1234\";proto=http".parse().unwrap(),
    );
    assert_eq!(status(&app, req).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_entry_that_is_no_address_ends_the_walk_and_ports_and_mapped_addresses_are_read() {
    let key = KeyBy::client_ip(["10.0.0.0/8"]).unwrap();
    let app = app(RateLimitLayer::new(1, Duration::from_secs(60)).key(key));

    // A proxy that writes `ip:port` (Azure's) names the client with it.
    let port = |xff: &str| forwarded("10.0.0.7", xff);
    assert_eq!(
        status(&app, port("203.0.113.5:51234")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, port("6.6.6.1, 203.0.113.5:40000")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client, whatever it wrote on the left"
    );
    // `unknown` ends the walk: the client's own entries left of it are not
    // read, and the peer is the key.
    assert_eq!(status(&app, port("6.6.6.2, unknown")).await, StatusCode::OK);
    assert_eq!(
        status(&app, port("6.6.6.3, unknown")).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A dual-stack listener sees the IPv4 proxy as `::ffff:10.0.0.8`: still
    // trusted, and its clients keep their own limits.
    assert_eq!(
        status(&app, forwarded("::ffff:10.0.0.8", "198.51.100.7")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, forwarded("::ffff:10.0.0.8", "198.51.100.8")).await,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_header_key_and_every_clone_sharing_one_state() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(60))
        .key(KeyBy::Header(HeaderName::from_static("x-api-key")));
    let mut svc = layer.layer(tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let call = |svc: &mut _, key: &str| {
        let req = Request::get("/")
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap();
        Service::call(svc, req)
    };
    let mut clone = svc.clone();
    assert_eq!(call(&mut svc, "a").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        call(&mut clone, "a").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        call(&mut clone, "b").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(svc.rejected(), 1);
    assert_eq!(clone.keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn held_keys_stay_bounded() {
    let layer = RateLimitLayer::new(1, Duration::from_millis(10))
        .key(KeyBy::Header(HeaderName::from_static("x-api-key")))
        .max_keys(100);
    let mut svc = layer.layer(tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let mut most = 0;
    for batch in 0..10 {
        for i in 0..1000 {
            let req = Request::get("/")
                .header("x-api-key", format!("{batch}-{i}"))
                .body(Body::empty())
                .unwrap();
            svc.call(req).await.unwrap();
            most = most.max(svc.keys());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(most <= 100 + 1024 + 1000, "keys grew to {most}");
    assert!(svc.keys() < 2000, "{}", svc.keys());
}

/// The Redis-backed limiter against the real Redis: two independent
/// "replicas" share one limit; a Redis that cannot answer is handled by the
/// configured policy.
#[cfg(feature = "redis")]
mod distributed {
    use axum_pools::{PoolManager, RedisConfig, layer::FailPolicy};

    use super::*;

    async fn manager(url: &str) -> PoolManager {
        PoolManager::builder()
            .redis(
                "limits",
                RedisConfig::from_url(url).health_check_interval(None),
            )
            .build()
            .await
            .unwrap()
    }

    fn keyed(key: &str) -> Request<Body> {
        Request::get("/")
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn two_replicas_together_allow_no_more_than_the_limit() {
        let url = require!(common::redis_url());
        let replica = |m: PoolManager| {
            app(RateLimitLayer::new(5, Duration::from_secs(60))
                .key(KeyBy::Header(HeaderName::from_static("x-api-key")))
                .distributed(m, "limits", FailPolicy::Closed))
        };
        let a = replica(manager(&url).await);
        let b = replica(manager(&url).await);
        let key = common::unique("client");
        let mut allowed = 0;
        let mut limited = 0;
        for i in 0..20 {
            let app = if i % 2 == 0 { &a } else { &b };
            let r = app.clone().oneshot(keyed(&key)).await.unwrap();
            match r.status() {
                StatusCode::OK => {
                    allowed += 1;
                    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=5;w=60");
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    limited += 1;
                    let after: u64 = r.headers()[header::RETRY_AFTER]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert!(
                        (1..=12).contains(&after),
                        "one request refills in 12 s: {after}"
                    );
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!((allowed, limited), (5, 15));
        // Another client is not affected.
        let other = common::unique("client");
        assert_eq!(
            a.clone().oneshot(keyed(&other)).await.unwrap().status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn when_redis_cannot_answer_the_policy_decides() {
        let url = require!(common::redis_url());
        for (policy, expected) in [
            (FailPolicy::Open, StatusCode::OK),
            (FailPolicy::Closed, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let m = manager(&url).await;
            m.force_open("limits").unwrap(); // every lease of the Redis pool is refused
            let mut svc = RateLimitLayer::new(5, Duration::from_secs(60))
                .key(KeyBy::Global)
                .distributed(m, "limits", policy)
                .layer(tower::service_fn(|_req: Request<Body>| async {
                    Ok::<_, Infallible>(Response::new(Body::empty()))
                }));
            let r = svc.call(keyed("x")).await.unwrap();
            assert_eq!(r.status(), expected, "{policy:?}");
            assert_eq!(svc.backend_errors(), 1, "{policy:?}");
        }
    }

    /// Two limiters on one Redis, with other names and quotas, and the same
    /// client: each keeps its own budget.
    #[tokio::test]
    async fn limiters_of_other_names_keep_their_own_budgets_on_one_redis() {
        let url = require!(common::redis_url());
        let m = manager(&url).await;
        let limiter = |name: &str, count: u32| {
            app(RateLimitLayer::new(count, Duration::from_secs(60))
                .name(name)
                .key(KeyBy::Header(HeaderName::from_static("x-api-key")))
                .distributed(m.clone(), "limits", FailPolicy::Closed))
        };
        let (search, upload) = (limiter("search", 2), limiter("upload", 5));
        let key = common::unique("client");
        let mut allowed = (0, 0);
        for _ in 0..8 {
            if search.clone().oneshot(keyed(&key)).await.unwrap().status() == StatusCode::OK {
                allowed.0 += 1;
            }
            let r = upload.clone().oneshot(keyed(&key)).await.unwrap();
            if r.status() == StatusCode::OK {
                allowed.1 += 1;
                assert_eq!(r.headers()["ratelimit-policy"], "\"upload\";q=5;w=60");
            }
        }
        assert_eq!(allowed, (2, 5));
    }

    /// A Redis that cannot answer is logged once, then counted, not once
    /// per request.
    #[tokio::test]
    async fn a_store_that_cannot_answer_is_logged_once_not_per_request() {
        let url = require!(common::redis_url());
        let logs = common::Logs::default();
        let _guard = logs.install(tracing::Level::WARN);
        let m = manager(&url).await;
        m.force_open("limits").unwrap();
        let app = app(RateLimitLayer::new(5, Duration::from_secs(60))
            .name("api")
            .key(KeyBy::Global)
            .distributed(m, "limits", FailPolicy::Open));
        for _ in 0..20 {
            let r = app.clone().oneshot(keyed("x")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let text = logs.text();
        assert_eq!(
            text.matches("the rate limiter's store").count(),
            1,
            "{text}"
        );
        assert!(text.contains("limiter=\"api\""), "{text}");
    }
}

/// Keyed by peer address but served without `ConnectInfo`: one warning
/// naming the fix, not a silent global bucket.
#[tokio::test]
async fn a_peer_ip_limiter_without_connect_info_says_so_once() {
    let logs = common::Logs::default();
    let _guard = logs.install(tracing::Level::WARN);
    let app = app(RateLimitLayer::new(5, Duration::from_secs(60)));
    for _ in 0..3 {
        let request = Request::get("/").body(Body::empty()).unwrap();
        app.clone().oneshot(request).await.unwrap();
    }
    let text = logs.text();
    assert_eq!(
        text.matches("into_make_service_with_connect_info").count(),
        1,
        "{text}"
    );
    // With the peer's address: nothing more.
    app.clone().oneshot(from("10.0.0.1")).await.unwrap();
    assert_eq!(logs.text().matches("ConnectInfo").count(), 1);
}
