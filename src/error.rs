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
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{
    config::ConfigError,
    problem::{Problem, retry_after_secs},
};

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
        /// How long the request waited: the pool's `acquire_timeout`.
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
    #[error("pool '{pool}' is failing and its circuit breaker is open; retry in {}s", crate::problem::retry_after_secs(*retry_after))]
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
    /// A round trip on a connection of the pool got no answer within its
    /// `query_timeout`; the connection was discarded. A request whose
    /// handler failed after it answers with this (504).
    #[error("pool '{pool}': the database did not answer within query_timeout ({}); the connection was discarded", humantime::format_duration(*after))]
    QueryTimeout {
        /// The pool.
        pool: String,
        /// Its `query_timeout`.
        after: Duration,
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
            Self::QueryTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
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
            | Self::QueryTimeout { pool, .. }
            | Self::WrongPoolType { pool, .. }
            | Self::Setup { pool, .. } => Some(pool),
            Self::Config(e) => e.pool(),
            _ => None,
        }
    }

    /// A short stable slug of the variant, used in the problem `type`.
    pub(crate) fn slug(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "acquire-timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::CircuitOpen { .. } => "circuit-open",
            Self::ShuttingDown { .. } => "shutting-down",
            Self::Backend { .. } => "backend-unavailable",
            Self::QueryTimeout { .. } => "query-timeout",
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
            Self::QueryTimeout { .. } => "Query timed out",
            Self::Config(_) | Self::Setup { .. } => "Pool setup failed",
            _ => "Pool misconfigured",
        }
    }
}

impl IntoResponse for PoolError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error()
            && status != StatusCode::SERVICE_UNAVAILABLE
            && status != StatusCode::GATEWAY_TIMEOUT
        {
            tracing::error!(error = %self, "pool setup error answered 500");
        } else {
            tracing::debug!(error = %self, "lease refused");
        }
        Problem::new(status, self.slug(), self.title(), self.to_string())
            .pool(self.pool())
            .retry_after(self.retry_after())
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_breakers_message_says_the_wait_its_retry_after_header_says() {
        let e = PoolError::CircuitOpen {
            pool: "p".to_owned(),
            retry_after: Duration::from_millis(1500),
        };
        assert!(e.to_string().ends_with("retry in 2s"), "{e}");
        assert_eq!(e.into_response().headers()["retry-after"], "2");
    }

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
        let e = PoolError::QueryTimeout {
            pool: pool(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.pool(), Some("p"));
        assert_eq!(e.slug(), "query-timeout");
        assert!(e.to_string().contains("query_timeout (1s 500ms)"), "{e}");
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
