//! Health results: one [`PoolHealth`] per pool, a [`HealthReport`] for all.
//!
//! Each pool's background task runs a real round trip (`SELECT 1`) every
//! `health_check_interval`, bounded by `validation_timeout`, and caches the
//! result; the health routes serve the cache, so a hammered health endpoint
//! does not hammer the database.
//!
//! ```no_run
//! # async fn demo(manager: axum_pools::PoolManager) {
//! let report = manager.health().await;
//! if report.status == axum_pools::HealthStatus::Fail {
//!     for p in report.pools.iter().filter(|p| p.status == axum_pools::HealthStatus::Fail) {
//!         eprintln!("{}: {}", p.pool, p.error.as_deref().unwrap_or("?"));
//!     }
//! }
//! # }
//! ```

use serde::{Deserialize, Serialize};

/// Outcome of a health check. Ordered: `Pass < Warn < Fail`.
///
/// ```
/// use axum_pools::HealthStatus;
/// assert!(HealthStatus::Pass < HealthStatus::Fail);
/// assert_eq!(serde_json::to_string(&HealthStatus::Warn).unwrap(), "\"warn\"");
/// ```
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The check passed.
    Pass,
    /// Usable but degraded (e.g. saturated: every connection busy).
    Warn,
    /// The check failed, or the pool is draining.
    Fail,
}

/// The latest health check of one pool.
///
/// ```
/// let h: axum_pools::PoolHealth = serde_json::from_str(
///     r#"{"pool":"db","backend":"sqlite","status":"pass","latency_ms":0.2,"checked_at":null,"error":null}"#,
/// ).unwrap();
/// assert_eq!(h.status, axum_pools::HealthStatus::Pass);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolHealth {
    /// Pool name.
    pub pool: String,
    /// Backend kind.
    pub backend: String,
    /// Outcome.
    pub status: HealthStatus,
    /// How long the check took, in milliseconds.
    pub latency_ms: Option<f64>,
    /// When the check ran (RFC 3339, UTC).
    pub checked_at: Option<String>,
    /// Why it did not pass; never contains a secret.
    pub error: Option<String>,
}

impl PoolHealth {
    pub(crate) fn unchecked(pool: &str, backend: &str) -> Self {
        Self {
            pool: pool.to_owned(),
            backend: backend.to_owned(),
            status: HealthStatus::Fail,
            latency_ms: None,
            checked_at: None,
            error: Some("not checked yet".to_owned()),
        }
    }
}

/// The health of every pool (`GET /pools/health`): `status` is the worst of
/// the pools'.
///
/// ```
/// use axum_pools::{HealthReport, HealthStatus};
/// let report = HealthReport::from_pools(vec![]);
/// assert_eq!(report.status, HealthStatus::Pass);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// Worst status of all pools.
    pub status: HealthStatus,
    /// Each pool, in registration order.
    pub pools: Vec<PoolHealth>,
}

impl HealthReport {
    /// A report over `pools`, its status the worst of theirs.
    #[must_use]
    pub fn from_pools(pools: Vec<PoolHealth>) -> Self {
        let status = pools
            .iter()
            .map(|p| p.status)
            .max()
            .unwrap_or(HealthStatus::Pass);
        Self { status, pools }
    }
}
