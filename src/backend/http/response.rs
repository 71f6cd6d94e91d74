//! [`HttpResponse`] and [`ConnectionGuard`]: a response and the pooled
//! connection it holds until its body is read.

use std::{fmt, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::{Http, HttpError};
use crate::pool::Lease;

/// A response from the upstream. Holds its pooled connection until the body
/// is read ([`bytes`](Self::bytes), [`json`](Self::json), [`text`](Self::text))
/// or the response is dropped.
pub struct HttpResponse {
    response: http::Response<Incoming>,
    lease: Lease<Http>,
    read_timeout: Duration,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.response.status())
            .finish_non_exhaustive()
    }
}

impl HttpResponse {
    pub(crate) fn new(
        response: http::Response<Incoming>,
        lease: Lease<Http>,
        read_timeout: Duration,
    ) -> Self {
        Self {
            response,
            lease,
            read_timeout,
        }
    }

    /// The status.
    ///
    /// ```no_run
    /// # fn demo(r: axum_pools::HttpResponse) { let ok = r.status().is_success(); }
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The headers.
    ///
    /// ```no_run
    /// # fn demo(r: axum_pools::HttpResponse) { let etag = r.headers().get("etag"); }
    /// ```
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// Reads the whole body (bounded by the pool's `request_timeout`), then
    /// returns the connection to the pool.
    ///
    /// ```no_run
    /// # async fn demo(r: axum_pools::HttpResponse) -> Result<(), axum_pools::HttpError> {
    /// let bytes = r.bytes().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`HttpError::Timeout`] or [`HttpError::Upstream`] when the body does
    /// not arrive.
    pub async fn bytes(self) -> Result<Bytes, HttpError> {
        let Self {
            response,
            mut lease,
            read_timeout,
        } = self;
        let pool = lease.pool_name().to_owned();
        match tokio::time::timeout(read_timeout, response.into_body().collect()).await {
            Ok(Ok(body)) => Ok(body.to_bytes()),
            Ok(Err(e)) => {
                lease.poisoned = true;
                Err(HttpError::Upstream {
                    pool,
                    message: e.to_string(),
                })
            }
            Err(_) => {
                lease.poisoned = true;
                Err(HttpError::Timeout {
                    pool,
                    after: read_timeout,
                })
            }
        }
    }

    /// Reads the body as UTF-8 text.
    ///
    /// ```no_run
    /// # async fn demo(r: axum_pools::HttpResponse) -> Result<(), axum_pools::HttpError> {
    /// let text = r.text().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`bytes`](Self::bytes), or [`HttpError::Decode`] for invalid UTF-8.
    pub async fn text(self) -> Result<String, HttpError> {
        let bytes = self.bytes().await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| HttpError::Decode(e.to_string()))
    }

    /// Reads the body as JSON.
    ///
    /// ```no_run
    /// # async fn demo(r: axum_pools::HttpResponse) -> Result<(), axum_pools::HttpError> {
    /// let v: serde_json::Value = r.json().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`bytes`](Self::bytes), or [`HttpError::Decode`] when it is not
    /// the expected JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, HttpError> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Decode(e.to_string()))
    }

    /// The response with its body stream; the connection returns to the
    /// pool when `guard` is dropped (after the body is read).
    ///
    /// ```no_run
    /// # fn demo(r: axum_pools::HttpResponse) { let (response, guard) = r.into_parts(); }
    /// ```
    pub fn into_parts(self) -> (http::Response<Incoming>, ConnectionGuard) {
        (self.response, ConnectionGuard(self.lease))
    }
}

/// Keeps an [`HttpResponse`]'s connection leased while its body is streamed.
pub struct ConnectionGuard(Lease<Http>);

impl fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionGuard")
            .field(&self.0.pool_name())
            .finish()
    }
}
