//! `PoolLayer` costs a route that never leases no allocation: the same
//! request through the same router allocates exactly as often with the
//! layer as without it. (One test in this binary: the counting allocator
//! sees every thread.)
#![cfg(feature = "sqlite")]

mod common;

use std::{alloc::System, convert::Infallible};

use axum::{Router, body::Body, http::Request, response::Response, routing::get};
use axum_pools::{DbConfig, DbConn, PoolLayer, PoolManager, SqliteConnection};
use futures_util::FutureExt;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations of `rounds` requests to `/plain`, each polled to completion
/// at once (no other task runs in between).
fn allocations<S>(service: &mut S, rounds: usize) -> usize
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let mut requests: Vec<_> = (0..rounds)
        .map(|_| Request::get("/plain").body(Body::empty()).unwrap())
        .collect();
    let region = Region::new(GLOBAL);
    for request in requests.drain(..) {
        let response = service
            .call(request)
            .now_or_never()
            .expect("a route that does not lease answers at once")
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    region.change().allocations
}

#[tokio::test(flavor = "current_thread")]
async fn a_route_that_never_leases_allocates_nothing_more_under_pool_layer() {
    let (_dir, path) = common::sqlite_file();
    let manager = PoolManager::builder()
        .database::<SqliteConnection>("main", DbConfig::from_url(path))
        .build()
        .await
        .unwrap();
    let routes = || {
        Router::new().route("/plain", get(|| async { "ok" })).route(
            "/db",
            get(|_db: DbConn<SqliteConnection>| async { "leased" }),
        )
    };
    // The layer around the whole router, as `Router::layer` would put it
    // around each route (which then boxes every route, with or without
    // this crate: not what is measured here).
    let mut bare = routes().into_service::<Body>();
    let mut layered = PoolLayer::new(manager.clone()).layer(routes().into_service::<Body>());
    // Warm up whatever is made on first use (the router's caches).
    bare.ready().await.unwrap();
    layered.ready().await.unwrap();
    allocations(&mut bare, 10);
    allocations(&mut layered, 10);

    // The allocator is process-wide: another thread (the test harness, a
    // pool's blocking connection thread) may allocate during one
    // measurement. The fewest of three runs is this thread's own count.
    let without = (0..3).map(|_| allocations(&mut bare, 100)).min().unwrap();
    let with = (0..3)
        .map(|_| allocations(&mut layered, 100))
        .min()
        .unwrap();
    assert_eq!(
        with,
        without,
        "PoolLayer allocated {} times in 100 requests that never lease",
        with.saturating_sub(without)
    );

    // And the layer is really there: a leasing route through it works.
    let response = layered
        .oneshot(Request::get("/db").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
