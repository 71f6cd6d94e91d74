//! [`PoolError`]: every way a lease or a build can fail, and the HTTP answer
//! for each (RFC 9457 `application/problem+json`).
//!
//! | error | status | headers |
//! |---|---|---|
//! | [`PoolError::Timeout`] (no connection within `acquire_timeout`) | 503 | `Retry-After` |
//! | [`PoolError::Overloaded`] (`max_waiting` reached: load shed) | 503 | `Retry-After` |
//! | [`PoolError::CircuitOpen`] (the pool's breaker is open) | 503 | `Retry-After`: seconds to half-open |
//! | [`PoolError::ShuttingDown`] (draining or closed) | 503 | `Retry-After` |
//! | [`PoolError::Backend`] (connect refused, failed validation) | 503 | `Retry-After` |
//! | [`PoolError::MissingLayer`], [`PoolError::UnknownPool`], [`PoolError::NoPoolForType`], [`PoolError::AmbiguousPool`], [`PoolError::WrongPoolType`] (setup mistakes) | 500 | |
//! | [`PoolError::Config`], [`PoolError::Setup`] (at build) | 500 | |
//!
//! No message carries a password: URLs are redacted and backend messages
//! are scrubbed of the pool's secrets before they are stored.
//!
//! ```
//! use axum::{http::StatusCode, response::IntoResponse};
//! use axum_pools::PoolError;
//!
//! let response = PoolError::MissingLayer.into_response();
//! assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! ```

use std::{fmt, time::Duration};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::config::ConfigError;

/// A backend failure, with its message already scrubbed of secrets.
///
/// ```
/// let e = axum_pools::BackendError::new("connection refused");
/// assert_eq!(e.to_string(), "connection refused");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    message: String,
}

impl BackendError {
    /// A backend error with `message` (which must carry no secret).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// Every way a lease or a build can fail.
///
/// It is the rejection of the extractors and implements
/// [`IntoResponse`], so handlers can return `Result<_, PoolError>` and use
/// `?` on a manual acquisition. See the [module docs](self) for the status
/// of each variant.
///
/// ```
/// use std::time::Duration;
/// use axum::{http::StatusCode, response::IntoResponse};
/// use axum_pools::PoolError;
///
/// let err = PoolError::Timeout { pool: "primary".into(), waited: Duration::from_secs(5) };
/// assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
/// let response = err.into_response();
/// assert_eq!(response.headers()["retry-after"], "1");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No connection became free within `acquire_timeout`.
    #[error("no connection of pool '{pool}' became free within {}; the pool is exhausted, retry later", humantime::format_duration(*waited))]
    Timeout {
        /// The pool.
        pool: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// `max_waiting` requests already waited: refused at once.
    #[error(
        "pool '{pool}' is overloaded ({max_waiting} requests already wait for a connection); retry later"
    )]
    Overloaded {
        /// The pool.
        pool: String,
        /// The configured cap.
        max_waiting: usize,
    },
    /// The pool's circuit breaker is open: refused at once.
    #[error("pool '{pool}' is failing and its circuit breaker is open; retry in {}s", retry_after.as_secs().max(1))]
    CircuitOpen {
        /// The pool.
        pool: String,
        /// Until the breaker lets probes through.
        retry_after: Duration,
    },
    /// The manager is draining or shut down: no new leases.
    #[error("pool '{pool}' is shutting down; no new connections are handed out")]
    ShuttingDown {
        /// The pool.
        pool: String,
    },
    /// The backend failed: connect refused, authentication, failed ping.
    #[error("pool '{pool}' could not provide a connection: {source}")]
    Backend {
        /// The pool.
        pool: String,
        /// The backend's message, scrubbed of secrets.
        source: BackendError,
    },
    /// An extractor ran on a route without [`PoolLayer`](crate::PoolLayer).
    #[error("no PoolLayer on this route: add `.layer(PoolLayer::new(manager))` to the router")]
    MissingLayer,
    /// A pool was asked for by a name that is not registered.
    #[error("no pool named '{requested}' is registered (registered: {}); register it with `PoolManager::builder()`", registered.join(", "))]
    UnknownPool {
        /// The name asked for.
        requested: String,
        /// The names that are registered.
        registered: Vec<String>,
    },
    /// No pool of the requested connection type is registered.
    #[error("no pool of {type_name} is registered (registered: {}); add one with `PoolManager::builder().database::<{type_name}>(..)`", registered.join(", "))]
    NoPoolForType {
        /// The connection type asked for.
        type_name: &'static str,
        /// The names that are registered.
        registered: Vec<String>,
    },
    /// Several pools of the requested type are registered and none was named.
    #[error("several pools of {type_name} are registered ({}); pick one with a marker type, e.g. `DbConn<C, Primary>` with `pool_name!(Primary = \"{}\")`", candidates.join(", "), candidates.first().map_or("", String::as_str))]
    AmbiguousPool {
        /// The connection type asked for.
        type_name: &'static str,
        /// The pools of that type.
        candidates: Vec<String>,
    },
    /// The named pool holds another connection type.
    #[error("pool '{pool}' is a {actual} pool, not a pool of {requested}")]
    WrongPoolType {
        /// The pool.
        pool: String,
        /// The connection type asked for.
        requested: &'static str,
        /// The pool's backend kind.
        actual: &'static str,
    },
    /// A configuration value was rejected at build.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A pool could not be set up at build (bad URL, server unreachable).
    #[error("failed to set up pool '{pool}' ({url}): {source}")]
    Setup {
        /// The pool.
        pool: String,
        /// Its URL, redacted.
        url: String,
        /// What failed, scrubbed of secrets.
        source: BackendError,
    },
}

impl PoolError {
    /// The HTTP status this error answers with.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// assert_eq!(axum_pools::PoolError::MissingLayer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Timeout { .. }
            | Self::Overloaded { .. }
            | Self::CircuitOpen { .. }
            | Self::ShuttingDown { .. }
            | Self::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` this error answers with, if any: 1 s for an
    /// exhausted, overloaded or failing pool, 5 s while shutting down.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = axum_pools::PoolError::ShuttingDown { pool: "db".into() };
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Timeout { .. } | Self::Overloaded { .. } | Self::Backend { .. } => {
                Some(Duration::from_secs(1))
            }
            Self::ShuttingDown { .. } => Some(Duration::from_secs(5)),
            // Rounded up: a client retrying at the header's second finds the
            // breaker half-open.
            Self::CircuitOpen { retry_after, .. } => {
                Some(Duration::from_secs(retry_after_secs(*retry_after)))
            }
            _ => None,
        }
    }

    /// The pool the error is about, when there is one.
    ///
    /// ```
    /// let err = axum_pools::PoolError::ShuttingDown { pool: "db".into() };
    /// assert_eq!(err.pool(), Some("db"));
    /// ```
    #[must_use]
    pub fn pool(&self) -> Option<&str> {
        match self {
            Self::Timeout { pool, .. }
            | Self::Overloaded { pool, .. }
            | Self::CircuitOpen { pool, .. }
            | Self::ShuttingDown { pool }
            | Self::Backend { pool, .. }
            | Self::WrongPoolType { pool, .. }
            | Self::Setup { pool, .. } => Some(pool),
            Self::Config(e) => e.pool(),
            _ => None,
        }
    }

    /// A short stable slug of the variant, used in the problem `type`.
    fn slug(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "acquire-timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::CircuitOpen { .. } => "circuit-open",
            Self::ShuttingDown { .. } => "shutting-down",
            Self::Backend { .. } => "backend-unavailable",
            Self::MissingLayer => "missing-layer",
            Self::UnknownPool { .. } => "unknown-pool",
            Self::NoPoolForType { .. } => "no-pool-for-type",
            Self::AmbiguousPool { .. } => "ambiguous-pool",
            Self::WrongPoolType { .. } => "wrong-pool-type",
            Self::Config(_) => "invalid-config",
            Self::Setup { .. } => "setup-failed",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "Connection pool exhausted",
            Self::Overloaded { .. } => "Connection pool overloaded",
            Self::CircuitOpen { .. } => "Circuit open",
            Self::ShuttingDown { .. } => "Shutting down",
            Self::Backend { .. } => "Backend unavailable",
            Self::Config(_) | Self::Setup { .. } => "Pool setup failed",
            _ => "Pool misconfigured",
        }
    }
}

/// The RFC 9457 problem document every error answers with, as the OpenAPI
/// document describes it.
#[derive(utoipa::ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)] // a schema only
pub(crate) struct ProblemDoc {
    /// A URI naming the kind of problem, `urn:axum-pools:problem:<slug>`.
    #[schema(rename = "type")]
    kind: String,
    /// A short summary of the kind.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What happened and what to do; never a secret.
    detail: String,
    /// The pool concerned, when there is one.
    pool: Option<String>,
}

/// Whole seconds for a `Retry-After` header: rounded up (a client retrying
/// then finds the wait over), at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize)]
pub(crate) struct Problem<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) title: &'a str,
    pub(crate) status: u16,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pool: Option<&'a str>,
}

impl Problem<'_> {
    pub(crate) const CONTENT_TYPE: &'static str = "application/problem+json";

    pub(crate) fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(Self::CONTENT_TYPE),
        );
        response
    }
}

pub(crate) fn problem_type(slug: &str) -> String {
    format!("urn:axum-pools:problem:{slug}")
}

impl IntoResponse for PoolError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "pool setup error answered 500");
        } else {
            tracing::debug!(error = %self, "lease refused");
        }
        let detail = self.to_string();
        let mut response = Problem {
            kind: problem_type(self.slug()),
            title: self.title(),
            status: status.as_u16(),
            detail,
            pool: self.pool(),
        }
        .into_response_with(status);
        if let Some(after) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_semantics_table() {
        let pool = || "p".to_owned();
        for e in [
            PoolError::Timeout {
                pool: pool(),
                waited: Duration::from_secs(5),
            },
            PoolError::Overloaded {
                pool: pool(),
                max_waiting: 1,
            },
            PoolError::ShuttingDown { pool: pool() },
            PoolError::Backend {
                pool: pool(),
                source: BackendError::new("refused"),
            },
        ] {
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
            assert!(e.retry_after().is_some(), "{e}");
        }
        for e in [
            PoolError::MissingLayer,
            PoolError::UnknownPool {
                requested: "x".into(),
                registered: vec!["p".into()],
            },
        ] {
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{e}");
            assert!(e.retry_after().is_none());
        }
    }

    #[test]
    fn messages_name_the_fix() {
        assert!(
            PoolError::MissingLayer
                .to_string()
                .contains(".layer(PoolLayer::new(manager))")
        );
        let e = PoolError::AmbiguousPool {
            type_name: "AsyncPgConnection",
            candidates: vec!["primary".into(), "replica".into()],
        };
        assert!(e.to_string().contains("primary, replica"), "{e}");
        assert!(
            e.to_string().contains("pool_name!(Primary = \"primary\")"),
            "{e}"
        );
    }
}

/// What a handler using [`DbConn`](crate::DbConn) or [`DbTx`](crate::DbTx)
/// can fail with: a lease refused, or a query failed. Handlers return
/// `Result<_, DbError>` and use `?` on both.
///
/// | error | status |
/// |---|---|
/// | [`DbError::Pool`] | as [`PoolError`] (503 with `Retry-After`, or 500) |
/// | `NotFound` from diesel | 404 |
/// | unique violation | 409 |
/// | a failed commit | 500, "nothing was stored" |
/// | an option the backend does not support | 500 naming it |
/// | any other diesel error | 500 |
///
/// The body never holds SQL, values or credentials: the detail goes to the
/// log (`tracing`, level `error` for 500s).
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use axum_pools::DbError;
///
/// let response = DbError::from(diesel::result::Error::NotFound).into_response();
/// assert_eq!(response.status(), StatusCode::NOT_FOUND);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No connection could be leased.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A query (or `BEGIN`) failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// `COMMIT` failed: the transaction's changes were not stored.
    #[error("the transaction could not be committed: {0}")]
    Commit(#[source] diesel::result::Error),
    /// A transaction option the backend does not support.
    #[error("{backend} does not support {option}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The option and what to do instead.
        option: &'static str,
    },
}

impl DbError {
    /// The HTTP status this error answers with.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// let e = axum_pools::DbError::from(diesel::result::Error::RollbackTransaction);
    /// assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            Self::Pool(e) => e.status(),
            Self::Query(Error::NotFound) => StatusCode::NOT_FOUND,
            Self::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        let this = match self {
            Self::Pool(e) => return e.into_response(),
            other => other,
        };
        let status = this.status();
        let (slug, title, detail) = match &this {
            Self::Pool(_) => unreachable!("answered above"),
            Self::Query(_) if status == StatusCode::NOT_FOUND => {
                ("not-found", "Not found", "no matching row".to_owned())
            }
            Self::Query(_) if status == StatusCode::CONFLICT => (
                "conflict",
                "Conflict",
                "a row with the same unique values already exists".to_owned(),
            ),
            Self::Query(_) => (
                "database-error",
                "Database error",
                "the database query failed".to_owned(),
            ),
            Self::Commit(_) => (
                "commit-failed",
                "Transaction not committed",
                "the transaction could not be committed; nothing was stored".to_owned(),
            ),
            Self::Unsupported { .. } => ("unsupported", "Unsupported option", this.to_string()),
        };
        if status.is_server_error() {
            tracing::error!(error = %this, "database error answered {status}");
        } else {
            tracing::debug!(error = %this, "database error answered {status}");
        }
        Problem {
            kind: problem_type(slug),
            title,
            status: status.as_u16(),
            detail,
            pool: None,
        }
        .into_response_with(status)
    }
}
