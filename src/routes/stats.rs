//! `GET /pools/stats` and `GET /pools/stats/{name}`.

use axum::{extract::State, http::StatusCode, response::Response};
use serde::Serialize;

use super::{Name, PoolName, UnknownPool, json, unknown_pool};
#[allow(unused_imports)] // named by the OpenAPI attributes
use crate::{manager::PoolManager, stats::StatsSnapshot};

/// The body of `GET /pools/stats`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AllStats {
    /// Every pool, in registration order.
    pools: Vec<StatsSnapshot>,
}

/// Statistics of every pool.
#[utoipa::path(
    get,
    path = "/pools/stats",
    responses((status = 200, description = "Every pool's statistics.", body = AllStats, content_type = "application/json"))
)]
pub(super) async fn all(State(manager): State<PoolManager>) -> Response {
    json(
        StatusCode::OK,
        AllStats {
            pools: manager.stats(),
        },
    )
}

/// Statistics of one pool.
#[utoipa::path(
    get,
    path = "/pools/stats/{name}",
    params(PoolName),
    responses(
        (status = 200, description = "The pool's statistics.", body = StatsSnapshot, content_type = "application/json"),
        UnknownPool,
    )
)]
pub(super) async fn one(State(manager): State<PoolManager>, Name(name): Name) -> Response {
    match manager.stats_of(&name) {
        Some(stats) => json(StatusCode::OK, stats),
        None => unknown_pool(&manager, name),
    }
}
