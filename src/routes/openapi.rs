//! The OpenAPI 3.1 document of the pools router ([`PoolsApi`]), served at
//! `GET /pools/openapi.json` with a Swagger UI at `GET /pools/docs` that
//! works offline (its assets are compiled in). The same document is
//! committed as `openapi/pools.json`; a test fails when they differ
//! (`UPDATE_OPENAPI=1 cargo test --test openapi` rewrites it).
//!
//! Merge the pools' paths into an application's own document:
//!
//! ```
//! use axum_pools::routes::openapi::PoolsApi;
//! use utoipa::OpenApi;
//!
//! #[derive(OpenApi)]
//! #[openapi(info(title = "notes"))]
//! struct NotesApi;
//!
//! let mut doc = NotesApi::openapi();
//! doc.merge(PoolsApi::openapi());
//! assert!(doc.paths.paths.contains_key("/pools/health"));
//! ```

use utoipa::OpenApi;

use super::{dashboard, events, health, metrics, stats};
use crate::{
    breaker::{BreakerState, BreakerStats},
    health::{HealthCheck, HealthReport, HealthStatus, PoolHealth},
    problem::ProblemDoc,
    stats::{StatsSnapshot, WaitStats},
};

/// The pools router's OpenAPI document.
///
/// ```
/// use utoipa::OpenApi;
/// let json = axum_pools::routes::openapi::PoolsApi::openapi().to_pretty_json().unwrap();
/// assert!(json.contains("\"/pools/stats/{name}\""));
/// ```
#[derive(OpenApi, Debug)]
#[openapi(
    info(
        title = "axum-pools",
        description = "Health, statistics and metrics of the service's connection pools.",
    ),
    paths(
        health::all,
        health::one,
        health::live,
        health::ready,
        stats::all,
        stats::one,
        metrics::metrics,
        events::events,
        dashboard::page,
    ),
    components(schemas(
        HealthReport,
        HealthCheck,
        PoolHealth,
        HealthStatus,
        health::Liveness,
        stats::AllStats,
        StatsSnapshot,
        WaitStats,
        BreakerStats,
        BreakerState,
        ProblemDoc,
        events::Snapshot,
        events::ProcessFigures,
    )),
    tags((name = "pools", description = "The connection pools of this service.")),
    modifiers(&PoolsTag)
)]
pub struct PoolsApi;

/// Files every operation of the document under the `pools` tag.
struct PoolsTag;

impl utoipa::Modify for PoolsTag {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.head].into_iter().flatten() {
                op.tags = Some(vec!["pools".to_owned()]);
            }
        }
    }
}
