//! `GET /pools/health` and `GET /pools/health/{name}`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};

use super::{json, unknown_pool};
#[allow(unused_imports)] // named by the OpenAPI attributes
use crate::{
    error::ProblemDoc as Problem,
    health::{HealthReport, HealthStatus, PoolHealth},
    manager::PoolManager,
};

fn status_of(health: HealthStatus) -> StatusCode {
    match health {
        HealthStatus::Fail => StatusCode::SERVICE_UNAVAILABLE,
        HealthStatus::Pass | HealthStatus::Warn => StatusCode::OK,
    }
}

/// Health of every pool, from the cache of the periodic checks.
#[utoipa::path(
    get,
    path = "/pools/health",
    tag = "pools",
    responses(
        (status = 200, description = "Every pool passes (or warns).", body = HealthReport, content_type = "application/json"),
        (status = 503, description = "A pool fails.", body = HealthReport, content_type = "application/json"),
    )
)]
pub(super) async fn all(State(manager): State<PoolManager>) -> Response {
    let report = manager.health().await;
    json(status_of(report.status), report)
}

/// Health of one pool.
#[utoipa::path(
    get,
    path = "/pools/health/{name}",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name.")),
    responses(
        (status = 200, description = "The pool passes (or warns).", body = PoolHealth, content_type = "application/json"),
        (status = 503, description = "The pool fails.", body = PoolHealth, content_type = "application/json"),
        (status = 404, description = "No pool of that name.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn one(State(manager): State<PoolManager>, Path(name): Path<String>) -> Response {
    match manager.health_of(&name).await {
        Some(health) => json(status_of(health.status), health),
        None => unknown_pool(&manager, name),
    }
}

/// The body of the liveness probe.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Liveness {
    /// Always `pass` while the process serves requests.
    status: HealthStatus,
}

/// Liveness: the process and the manager run. Checks no dependency.
#[utoipa::path(
    get,
    path = "/pools/health/live",
    tag = "pools",
    responses((status = 200, description = "Alive.", body = Liveness, content_type = "application/json"))
)]
pub(super) async fn live() -> Response {
    json(
        StatusCode::OK,
        Liveness {
            status: HealthStatus::Pass,
        },
    )
}

/// Readiness: every pool passes or warns, and the manager is not draining.
#[utoipa::path(
    get,
    path = "/pools/health/ready",
    tag = "pools",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthReport, content_type = "application/json"),
        (status = 503, description = "A pool fails, or the manager is draining (every pool then reports `pool is draining`).", body = HealthReport, content_type = "application/json"),
    )
)]
pub(super) async fn ready(State(manager): State<PoolManager>) -> Response {
    let report = manager.health().await;
    let status = if manager.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status_of(report.status)
    };
    json(status, report)
}
