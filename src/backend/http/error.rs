//! [`HttpError`]: what a request through an [`HttpClient`](super::HttpClient)
//! can fail with, answered as problem+json.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::{error::PoolError, problem::Problem};

/// What a request through an [`HttpClient`](super::HttpClient) can fail with.
///
/// | error | status |
/// |---|---|
/// | [`HttpError::Pool`] | as [`PoolError`] (503 with `Retry-After` when the pool is exhausted) |
/// | [`HttpError::Timeout`] | 504 |
/// | [`HttpError::Upstream`], [`HttpError::BodyTooLarge`], [`HttpError::Decode`] | 502 |
/// | [`HttpError::InvalidRequest`] | 500 |
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// let e = axum_pools::HttpError::Timeout { pool: "billing".into(), after: std::time::Duration::from_secs(3) };
/// assert_eq!(e.into_response().status(), StatusCode::GATEWAY_TIMEOUT);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No connection could be leased.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// No response within `request_timeout` (after the allowed attempts).
    #[error("upstream '{pool}' did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// The pool.
        pool: String,
        /// The bound that passed.
        after: Duration,
    },
    /// The upstream refused, reset or closed the connection.
    #[error("upstream '{pool}' failed: {message}")]
    Upstream {
        /// The pool.
        pool: String,
        /// What failed.
        message: String,
    },
    /// The response body is longer than the pool's `max_response_body`; it
    /// was not read further and its connection is closed (unless the body
    /// had arrived whole: read to its end, the connection goes back).
    #[error(
        "the response body from upstream '{pool}' is larger than max_response_body ({limit} bytes); raise it in the pool's HttpConfig or stream the body with into_parts"
    )]
    BodyTooLarge {
        /// The pool.
        pool: String,
        /// The pool's `max_response_body`.
        limit: u64,
    },
    /// The response body was not what the caller asked for: not UTF-8
    /// text, or not the expected JSON (where it says so and at which line
    /// and column, quoting none of the body: its values may be tokens).
    #[error("the upstream's response could not be decoded: {0}")]
    Decode(String),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let this = match self {
            Self::Pool(e) => return e.into_response(),
            other => other,
        };
        let (status, slug, title) = match &this {
            Self::Pool(_) => unreachable!("answered above"),
            Self::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Upstream timed out",
            ),
            Self::Upstream { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream-failed",
                "Upstream failed",
            ),
            Self::BodyTooLarge { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream-response-too-large",
                "Upstream response too large",
            ),
            Self::Decode(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream-response",
                "Bad upstream response",
            ),
            Self::InvalidRequest(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid-upstream-request",
                "Invalid upstream request",
            ),
        };
        let pool = match &this {
            Self::Timeout { pool, .. }
            | Self::Upstream { pool, .. }
            | Self::BodyTooLarge { pool, .. } => Some(pool.as_str()),
            _ => None,
        };
        tracing::warn!(pool = pool.unwrap_or("unknown"), error = %this, "upstream request failed");
        Problem::new(status, slug, title, this.to_string())
            .pool(pool)
            .into_response()
    }
}
