//! `GET /pools/health` and `GET /pools/health/{name}`.

use axum::{extract::State, http::StatusCode, response::Response};

use super::{PerPool, PoolName, UnknownPool, View, Viewer, health_json, json};
#[allow(unused_imports)] // named by the OpenAPI attributes
use crate::{
    health::{HealthReport, HealthStatus, PoolHealth},
    manager::PoolManager,
};

fn status_of(health: HealthStatus) -> StatusCode {
    match health {
        HealthStatus::Fail => StatusCode::SERVICE_UNAVAILABLE,
        HealthStatus::Pass | HealthStatus::Warn => StatusCode::OK,
    }
}

/// The answers of the whole-service health routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description for the OpenAPI document, never built
enum ReportAnswers {
    /// Every pool passes (or warns); for readiness, the manager is not draining either.
    #[response(status = 200, content_type = "application/health+json")]
    Ready(HealthReport),
    /// A pool fails; for readiness, also while the manager drains (every pool then reports `pool is draining`).
    #[response(status = 503, content_type = "application/health+json")]
    Failing(HealthReport),
}

/// Health of every pool, from the cache of the periodic checks.
#[utoipa::path(get, path = "/pools/health", responses(ReportAnswers))]
pub(super) async fn all(State(manager): State<PoolManager>, Viewer(view): Viewer) -> Response {
    report(&manager, view, false).await
}

/// The report of every pool, its details shown as far as `view` allows;
/// 503 when a pool fails, or with `draining_fails` while the manager drains.
async fn report(manager: &PoolManager, view: Option<View>, draining_fails: bool) -> Response {
    let report = manager.health().await;
    let status = if draining_fails && manager.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status_of(report.status)
    };
    let report = match view {
        Some(View::Full) => report,
        Some(View::Summary) => {
            HealthReport::from_pools(report.pools.into_iter().map(PoolHealth::summary).collect())
        }
        None => report.status_only(),
    };
    health_json(status, report)
}

/// Health of one pool.
#[utoipa::path(
    get,
    path = "/pools/health/{name}",
    params(PoolName),
    responses(
        (status = 200, description = "The pool passes (or warns); with details hidden, the overall status only.", content(
            (PoolHealth = "application/json"),
            (HealthReport = "application/health+json"),
        )),
        (status = 503, description = "The pool fails; with details hidden, the overall status only.", content(
            (PoolHealth = "application/json"),
            (HealthReport = "application/health+json"),
        )),
        UnknownPool,
    )
)]
pub(super) async fn one(pool: PerPool) -> Response {
    let Some(view) = pool.view else {
        // Without details a pool's own route tells nothing more than the
        // overall one; unknown names are not revealed either.
        return report(&pool.manager, None, false).await;
    };
    let health = pool.manager.health_of(&pool.name).await;
    pool.answer(health, |health| {
        json(status_of(health.status), view.health(health))
    })
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
#[utoipa::path(get, path = "/pools/health/ready", responses(ReportAnswers))]
pub(super) async fn ready(State(manager): State<PoolManager>, Viewer(view): Viewer) -> Response {
    report(&manager, view, true).await
}
