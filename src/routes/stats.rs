//! `GET /pools/stats` and `GET /pools/stats/{name}`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use serde::Serialize;

use super::{json, unknown_pool};
use crate::{manager::PoolManager, stats::StatsSnapshot};

#[derive(Serialize)]
struct AllStats {
    pools: Vec<StatsSnapshot>,
}

pub(super) async fn all(State(manager): State<PoolManager>) -> Response {
    json(
        StatusCode::OK,
        AllStats {
            pools: manager.stats(),
        },
    )
}

pub(super) async fn one(State(manager): State<PoolManager>, Path(name): Path<String>) -> Response {
    match manager.stats_of(&name) {
        Some(stats) => json(StatusCode::OK, stats),
        None => unknown_pool(&manager, name),
    }
}
