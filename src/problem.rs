//! The one place an RFC 9457 `application/problem+json` answer is built,
//! with its `Retry-After` when the client may try again.
//!
//! Every error of the crate that becomes a response ([`PoolError`](crate::PoolError),
//! [`DbError`](crate::DbError), the HTTP client's errors, the breaker and
//! rate-limit layers, the routes) describes itself as a [`Problem`] and lets
//! [`Problem::into_response`] write the body and the headers.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// The media type of every error body.
pub(crate) const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem: what went wrong, for whom, and when to retry.
#[derive(Debug)]
pub(crate) struct Problem<'a> {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// A short stable slug; the `type` is `urn:axum-pools:problem:<slug>`.
    pub(crate) slug: &'a str,
    /// A short summary of the kind.
    pub(crate) title: &'a str,
    /// What happened and what to do; never a secret.
    pub(crate) detail: String,
    /// The pool concerned, when there is one.
    pub(crate) pool: Option<&'a str>,
    /// Sent as `Retry-After` in whole seconds (rounded up, at least 1); a
    /// 503 without one says 1.
    pub(crate) retry_after: Option<Duration>,
}

impl<'a> Problem<'a> {
    /// A problem without a pool or a `Retry-After`.
    pub(crate) fn new(status: StatusCode, slug: &'a str, title: &'a str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
            pool: None,
            retry_after: None,
        }
    }

    /// Names the pool concerned.
    pub(crate) fn pool(mut self, pool: Option<&'a str>) -> Self {
        self.pool = pool;
        self
    }

    /// Asks the client to come back after `wait`.
    pub(crate) fn retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }
}

/// The body as it is serialized.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<&'a str>,
}

impl IntoResponse for Problem<'_> {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            kind: format!("urn:axum-pools:problem:{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            pool: self.pool,
        })
        .unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        // Every 503 says when to come back: 1 s unless the problem says.
        let wait = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(Duration::from_secs(1)));
        if let Some(wait) = wait {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        response
    }
}

/// Whole seconds for a `Retry-After` header: rounded up (a client retrying
/// then finds the wait over), at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn body_and_headers() {
        let response = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "retry later".into(),
        )
        .pool(Some("db"))
        .retry_after(Some(Duration::from_millis(200)))
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
