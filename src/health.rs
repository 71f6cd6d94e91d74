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
/// assert!(h.required);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolHealth {
    /// Pool name.
    pub pool: String,
    /// Backend kind.
    pub backend: String,
    /// Outcome. A passing pool whose every connection is busy, or with
    /// requests waiting, is reported `warn` (saturated).
    pub status: HealthStatus,
    /// How long the check took, in milliseconds.
    pub latency_ms: Option<f64>,
    /// When the check ran (RFC 3339, UTC).
    pub checked_at: Option<String>,
    /// Why it did not pass; never contains a secret.
    pub error: Option<String>,
    /// Connections in use, as a percentage of `max_size`, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    /// Whether the pool's failure fails the service (`PoolConfig::required`);
    /// an optional pool that fails makes the overall status `warn`.
    #[serde(default = "yes")]
    pub required: bool,
    /// The check passed but every connection is busy or requests wait; set
    /// by the manager together with `status: warn`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub saturated: bool,
    /// Where the pool's connections go when the backend is several servers,
    /// as of the last check: a Redis Cluster's state, slots and nodes by
    /// role; behind Sentinel the master's name, its current address and
    /// the failovers seen. Absent for one server, and from the health
    /// routes unless they show full details ([`HealthDetails::Always`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<std::collections::BTreeMap<String, String>>,
    /// The component type of the health draft's checks: `datastore` for a
    /// database or cache, `component` for an upstream service. Not
    /// serialized.
    #[serde(skip, default = "datastore")]
    pub component_type: &'static str,
    /// Whether `error` holds a driver's or server's words (shown only with
    /// full details), not only this crate's own.
    #[serde(skip)]
    pub(crate) from_driver: bool,
}

/// What [`PoolHealth::summary`] shows instead of a driver's words.
const HIDDEN: &str = "check failed (the backend's words are shown with full health details)";

fn yes() -> bool {
    true
}

fn datastore() -> &'static str {
    "datastore"
}

impl PoolHealth {
    pub(crate) fn unchecked(pool: &str, backend: &str, component_type: &'static str) -> Self {
        Self {
            pool: pool.to_owned(),
            backend: backend.to_owned(),
            status: HealthStatus::Fail,
            latency_ms: None,
            checked_at: None,
            error: Some("not checked yet".to_owned()),
            utilization_percent: None,
            required: true,
            saturated: false,
            topology: None,
            component_type,
            from_driver: false,
        }
    }

    /// What [`HealthDetails::Summary`] shows: the statuses, figures and this
    /// crate's own reasons; a driver's or server's words (which may name
    /// hosts, users, versions) and the topology are left out.
    #[must_use]
    pub(crate) fn summary(mut self) -> Self {
        if self.from_driver {
            self.error = Some(HIDDEN.to_owned());
            self.from_driver = false;
        }
        self.topology = None;
        self
    }
}

/// One entry of the IETF health-check draft's `checks` object.
///
/// ```
/// let c = axum_pools::HealthCheck {
///     component_id: "primary".into(),
///     component_type: "datastore".into(),
///     observed_value: Some(0.4),
///     observed_unit: Some("ms".into()),
///     status: axum_pools::HealthStatus::Pass,
///     time: None,
///     output: None,
/// };
/// assert!(serde_json::to_string(&c).unwrap().contains("\"observedUnit\":\"ms\""));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// The pool's name.
    pub component_id: String,
    /// `datastore` (SQL, Redis) or `component` (an upstream HTTP service).
    pub component_type: String,
    /// The observed value: milliseconds of the last check, or percent of
    /// connections in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<f64>,
    /// `ms` or `percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<String>,
    /// This check's status.
    pub status: HealthStatus,
    /// When it was observed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Why it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// The health of every pool (`GET /pools/health`): `status` is the worst of
/// the pools'.
///
/// ```
/// use axum_pools::{HealthReport, HealthStatus};
/// let report = HealthReport::from_pools(vec![]);
/// assert_eq!(report.status, HealthStatus::Pass);
/// ```
/// Served as `application/health+json` (the IETF health-check draft):
/// `status`, and `checks` keyed `"<pool>:responseTime"` and
/// `"<pool>:connections"`; `pools` carries the same per pool in this crate's
/// own shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// Worst status of the required pools (an optional pool that fails
    /// counts as `warn`).
    pub status: HealthStatus,
    /// The draft's checks (absent when details are hidden).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, Vec<HealthCheck>>,
    /// Each pool, in registration order (absent when details are hidden).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolHealth>,
}

/// How much `GET /pools/health` tells (Spring's `show-details`): the status
/// code and `status` always; the checks and the pools as this allows.
/// Errors never carry secrets either way.
///
/// The default, [`Summary`](Self::Summary), is safe to expose: every pool's
/// status and figures and this crate's own reasons, but no driver's or
/// server's words (a connect error names hosts and users) and no topology.
/// Open the rest to whom should see it with
/// `manager.router_with(HealthDetails::when(…))`, or to all with
/// [`Always`](Self::Always).
///
/// ```
/// use axum_pools::HealthDetails;
/// let details = HealthDetails::when(|parts| {
///     parts.headers.get("x-health-token").is_some_and(|t| t == "s3cret")
/// });
/// ```
#[derive(Clone, Default)]
pub enum HealthDetails {
    /// The pools, their statuses, figures and this crate's own reasons;
    /// no driver's or server's words, no topology. The default.
    #[default]
    Summary,
    /// Always show every detail.
    Always,
    /// Never: `{"status": ...}` only.
    Never,
    /// Every detail when the predicate holds for the request, else the
    /// status only.
    When(std::sync::Arc<dyn Fn(&axum::http::request::Parts) -> bool + Send + Sync>),
}

impl HealthDetails {
    /// [`HealthDetails::When`] from a closure.
    ///
    /// ```
    /// let internal_only = axum_pools::HealthDetails::when(|p| p.headers.contains_key("x-internal"));
    /// ```
    pub fn when(f: impl Fn(&axum::http::request::Parts) -> bool + Send + Sync + 'static) -> Self {
        Self::When(std::sync::Arc::new(f))
    }

    /// Whether the pools are shown at all.
    pub(crate) fn show(&self, parts: &axum::http::request::Parts) -> bool {
        match self {
            Self::Summary | Self::Always => true,
            Self::Never => false,
            Self::When(f) => f(parts),
        }
    }

    /// Whether they are shown with the backends' own words.
    pub(crate) fn full(&self, parts: &axum::http::request::Parts) -> bool {
        match self {
            Self::Always => true,
            Self::Summary | Self::Never => false,
            Self::When(f) => f(parts),
        }
    }
}

impl std::fmt::Debug for HealthDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Summary => f.write_str("Summary"),
            Self::Always => f.write_str("Always"),
            Self::Never => f.write_str("Never"),
            Self::When(_) => f.write_str("When(..)"),
        }
    }
}

impl HealthReport {
    /// The report without its details.
    pub(crate) fn status_only(self) -> Self {
        Self {
            status: self.status,
            checks: Default::default(),
            pools: Vec::new(),
        }
    }

    /// A report over `pools`: its status the worst of theirs (optional pools
    /// at most `warn`), and the draft's checks.
    #[must_use]
    pub fn from_pools(pools: Vec<PoolHealth>) -> Self {
        let status = pools
            .iter()
            .map(|p| {
                if p.required {
                    p.status
                } else {
                    p.status.min(HealthStatus::Warn)
                }
            })
            .max()
            .unwrap_or(HealthStatus::Pass);
        let mut checks = std::collections::BTreeMap::new();
        for p in &pools {
            let component_type = p.component_type;
            let check =
                |value: Option<f64>, unit: &str, status, output: Option<String>| HealthCheck {
                    component_id: p.pool.clone(),
                    component_type: component_type.to_owned(),
                    observed_value: value,
                    observed_unit: value.map(|_| unit.to_owned()),
                    status,
                    time: p.checked_at.clone(),
                    output,
                };
            let saturated = p.saturated;
            let (response, connections) = if saturated {
                (HealthStatus::Pass, HealthStatus::Warn)
            } else if p.status == HealthStatus::Fail {
                (HealthStatus::Fail, HealthStatus::Fail)
            } else {
                (p.status, HealthStatus::Pass)
            };
            let (response_output, connections_output) = if saturated {
                (None, p.error.clone())
            } else {
                (p.error.clone(), None)
            };
            checks.insert(
                format!("{}:responseTime", p.pool),
                vec![check(p.latency_ms, "ms", response, response_output)],
            );
            checks.insert(
                format!("{}:connections", p.pool),
                vec![check(
                    p.utilization_percent,
                    "percent",
                    connections,
                    connections_output,
                )],
            );
        }
        Self {
            status,
            checks,
            pools,
        }
    }
}
