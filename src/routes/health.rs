//! `GET /pools/health` and `GET /pools/health/{name}`.

use axum::{
    extract::{Path, State},
    http::{StatusCode, request::Parts},
    response::Response,
};

use super::{health_json, json, unknown_pool};
#[allow(unused_imports)] // named by the OpenAPI attributes
use crate::{
    health::{HealthDetails, HealthReport, HealthStatus, PoolHealth},
    manager::PoolManager,
    problem::ProblemDoc as Problem,
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
        (status = 200, description = "Every pool passes (or warns).", body = HealthReport, content_type = "application/health+json"),
        (status = 503, description = "A pool fails.", body = HealthReport, content_type = "application/health+json"),
    )
)]
pub(super) async fn all(
    State(manager): State<PoolManager>,
    State(details): State<HealthDetails>,
    parts: Parts,
) -> Response {
    let report = manager.health().await;
    let status = status_of(report.status);
    health_json(status, shown(report, &details, &parts))
}

fn shown(report: HealthReport, details: &HealthDetails, parts: &Parts) -> HealthReport {
    if details.show(parts) {
        report
    } else {
        report.status_only()
    }
}

/// Health of one pool.
#[utoipa::path(
    get,
    path = "/pools/health/{name}",
    tag = "pools",
    params(("name" = String, Path, description = "The pool's name.")),
    responses(
        (status = 200, description = "The pool passes (or warns); with details hidden, the overall status only.", content(
            (PoolHealth = "application/json"),
            (HealthReport = "application/health+json"),
        )),
        (status = 503, description = "The pool fails; with details hidden, the overall status only.", content(
            (PoolHealth = "application/json"),
            (HealthReport = "application/health+json"),
        )),
        (status = 404, description = "No pool of that name.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn one(
    State(manager): State<PoolManager>,
    State(details): State<HealthDetails>,
    Path(name): Path<String>,
    parts: Parts,
) -> Response {
    if !details.show(&parts) {
        // Without details a pool's own route tells nothing more than the
        // overall one; unknown names are not revealed either.
        let report = manager.health().await;
        let status = status_of(report.status);
        return health_json(status, report.status_only());
    }
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
    responses((status = 200, description = "Alive.", body = Liveness, content_type = "application/health+json"))
)]
pub(super) async fn live() -> Response {
    health_json(
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
        (status = 200, description = "Ready for traffic.", body = HealthReport, content_type = "application/health+json"),
        (status = 503, description = "A pool fails, or the manager is draining (every pool then reports `pool is draining`).", body = HealthReport, content_type = "application/health+json"),
    )
)]
pub(super) async fn ready(
    State(manager): State<PoolManager>,
    State(details): State<HealthDetails>,
    parts: Parts,
) -> Response {
    let report = manager.health().await;
    let status = if manager.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status_of(report.status)
    };
    health_json(status, shown(report, &details, &parts))
}
