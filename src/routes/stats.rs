//! `GET /pools/stats` and `GET /pools/stats/{name}`.

use axum::{extract::State, http::StatusCode, response::Response};
use serde::Serialize;

use super::{PerPool, PoolName, UnknownPool, View, Viewer, json};
#[allow(unused_imports)] // named by the OpenAPI attributes
use crate::{manager::PoolManager, stats::StatsSnapshot};

/// `stats` as `details` shows it to the request: the servers' own facts
/// (versions, addresses, topology) only with full details. The figures are
/// public, as in `/pools/metrics`: a request shown nothing else sees them
/// as a summary.
fn shown(stats: StatsSnapshot, view: Option<View>) -> StatsSnapshot {
    view.unwrap_or(View::Summary).stats(stats)
}

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
pub(super) async fn all(State(manager): State<PoolManager>, Viewer(view): Viewer) -> Response {
    let pools = manager.stats().into_iter();
    json(
        StatusCode::OK,
        AllStats {
            pools: pools.map(|s| shown(s, view)).collect(),
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
pub(super) async fn one(pool: PerPool) -> Response {
    let (stats, view) = (pool.manager.stats_of(&pool.name), pool.view);
    pool.answer(stats, |stats| json(StatusCode::OK, shown(stats, view)))
}
