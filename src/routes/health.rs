//! `GET /pools/health` and `GET /pools/health/{name}`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};

use super::{json, unknown_pool};
use crate::{health::HealthStatus, manager::PoolManager};

fn status_of(health: HealthStatus) -> StatusCode {
    match health {
        HealthStatus::Fail => StatusCode::SERVICE_UNAVAILABLE,
        HealthStatus::Pass | HealthStatus::Warn => StatusCode::OK,
    }
}

pub(super) async fn all(State(manager): State<PoolManager>) -> Response {
    let report = manager.health().await;
    json(status_of(report.status), report)
}

pub(super) async fn one(State(manager): State<PoolManager>, Path(name): Path<String>) -> Response {
    match manager.health_of(&name).await {
        Some(health) => json(status_of(health.status), health),
        None => unknown_pool(&manager, name),
    }
}

pub(super) async fn live() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "pass" }))
}

pub(super) async fn ready(State(manager): State<PoolManager>) -> Response {
    if manager.is_draining() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "fail", "output": "draining" }),
        );
    }
    let report = manager.health().await;
    let status = status_of(report.status);
    json(status, report)
}
