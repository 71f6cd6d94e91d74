//! The full_stack example's routes against the real Postgres and Redis and
//! the example's own upstream: cache miss, hit, invalidation after commit,
//! the proxied quote, and the pools router listing all three pools.
#![cfg(all(feature = "postgres", feature = "redis", feature = "http"))]

mod common;

#[allow(dead_code)]
#[path = "../examples/full_stack.rs"]
mod full_stack;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use common::{body_json, get, unique};
use tower::ServiceExt;

fn post(title: &str) -> Request<Body> {
    Request::post("/notes")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "title": title }).to_string(),
        ))
        .unwrap()
}

#[tokio::test]
async fn notes_are_cached_invalidated_after_commit_and_all_pools_pass() {
    let database = require!(common::pg_url());
    let redis = require!(common::redis_url());
    let urls = full_stack::Urls {
        database,
        redis,
        upstream: full_stack::start_upstream().await.unwrap(),
    };
    let manager = full_stack::manager(&urls).await.unwrap();
    full_stack::migrate(&manager).await.unwrap();
    let app = full_stack::app(manager.clone());
    let titles = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["title"].as_str().unwrap().to_owned())
            .collect()
    };

    let first = unique("note");
    assert_eq!(
        app.clone().oneshot(post(&first)).await.unwrap().status(),
        StatusCode::CREATED
    );
    let r = app.clone().oneshot(get("/notes")).await.unwrap();
    assert_eq!(r.headers()["x-cache"], "miss");
    assert!(titles(body_json(r).await).contains(&first));
    let r = app.clone().oneshot(get("/notes")).await.unwrap();
    assert_eq!(r.headers()["x-cache"], "hit");

    let second = unique("note");
    assert_eq!(
        app.clone().oneshot(post(&second)).await.unwrap().status(),
        StatusCode::CREATED
    );
    let r = app.clone().oneshot(get("/notes")).await.unwrap();
    assert_eq!(
        r.headers()["x-cache"],
        "miss",
        "the POST invalidated the cache"
    );
    let listed = titles(body_json(r).await);
    assert!(listed.contains(&first) && listed.contains(&second));

    let r = app.clone().oneshot(get("/quote")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_json(r).await["symbol"], "ACME");

    let r = app.oneshot(get("/pools/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let health = body_json(r).await;
    assert_eq!(health["status"], "pass");
    let pools: Vec<_> = health["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pool"].as_str().unwrap(),
                p["backend"].as_str().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pools,
        [
            ("primary", "postgres", "pass"),
            ("cache", "redis", "pass"),
            ("quotes", "http", "pass")
        ]
    );
    manager.drain(std::time::Duration::from_secs(5)).await;
}
