//! [`HttpResponse`] and its body, [`HttpBody`], which holds the pooled
//! connection until it has been read to its end.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde::de::DeserializeOwned;

use super::{Http, HttpError};
use crate::pool::{Lease, Shared};

/// A response from the upstream. Its body ([`HttpBody`]) holds the pooled
/// connection until it is read to its end ([`bytes`](Self::bytes),
/// [`json`](Self::json), [`text`](Self::text)); dropped before that, the
/// connection is closed rather than handed to the next request.
///
/// ```no_run
/// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
/// let response = c.get("/quote").send().await?;
/// if response.status().is_success() {
///     let quote: serde_json::Value = response.json().await?;
/// }
/// # Ok(()) }
/// ```
pub struct HttpResponse {
    response: http::Response<HttpBody>,
    read_timeout: Duration,
    max_body: u64,
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
        response: http::Response<HttpBody>,
        read_timeout: Duration,
        max_body: u64,
    ) -> Self {
        Self {
            response,
            read_timeout,
            max_body,
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

    /// Reads the whole body (bounded by the pool's `request_timeout` and
    /// `max_response_body`); the connection goes back to the pool as the
    /// body ends.
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
    /// not arrive, [`HttpError::BodyTooLarge`] when it is longer than
    /// `max_response_body`; the connection is then closed (unless the whole
    /// body had already arrived: read to its end, it goes back).
    pub async fn bytes(self) -> Result<Bytes, HttpError> {
        let mut body = self.response.into_body();
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        let limited = Limited::new(&mut body, limit).collect();
        let failed = match tokio::time::timeout(self.read_timeout, limited).await {
            Ok(Ok(collected)) => return Ok(collected.to_bytes()),
            Ok(Err(e)) => match e.downcast::<HttpError>() {
                Ok(e) => return Err(*e),
                // The only other error `Limited` makes.
                Err(_) => HttpError::BodyTooLarge {
                    pool: body.pool_name().to_owned(),
                    limit: self.max_body,
                },
            },
            Err(_) => HttpError::Timeout {
                pool: body.pool_name().to_owned(),
                after: self.read_timeout,
            },
        };
        // `body` still holds the connection, in doubt, unless its stream
        // ended: dropped, it is closed.
        Err(failed)
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
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Decode(json_error(&e)))
    }

    /// The response with its body to stream yourself. The body holds the
    /// connection until it has been read to its end; the guard is kept for
    /// code written when it held it, and need not be kept alive.
    ///
    /// ```no_run
    /// use http_body_util::BodyExt;
    /// # async fn demo(r: axum_pools::HttpResponse) -> Result<(), axum_pools::HttpError> {
    /// let (response, _guard) = r.into_parts();
    /// let mut body = response.into_body();
    /// while let Some(frame) = body.frame().await {
    ///     let _chunk = frame?.into_data();
    /// }
    /// # Ok(()) }
    /// ```
    pub fn into_parts(self) -> (http::Response<HttpBody>, ConnectionGuard) {
        (self.response, ConnectionGuard { _private: () })
    }
}

/// Returned by [`HttpResponse::into_parts`] beside the response. The
/// connection now travels in the [`HttpBody`], which returns it when read to
/// its end; this guard holds nothing and only keeps older code compiling.
///
/// ```no_run
/// # fn demo(r: axum_pools::HttpResponse) {
/// let (response, guard) = r.into_parts();
/// drop(guard); // harmless: the body keeps the connection
/// # }
/// ```
#[derive(Debug)]
pub struct ConnectionGuard {
    _private: (),
}

/// The body of an [`HttpResponse`]: streams the upstream's body and holds
/// the pooled connection until the end of the stream, then returns it.
/// Dropped earlier, or failing, it returns the connection in doubt and the
/// pool closes it: an unread rest of a body is never left for the next
/// request to trip over.
///
/// ```no_run
/// use http_body_util::BodyExt;
/// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
/// let (response, _) = c.get("/export.csv").send().await?.into_parts();
/// let mut body: axum_pools::HttpBody = response.into_body();
/// while let Some(frame) = body.frame().await {
///     if let Ok(chunk) = frame?.into_data() {
///         println!("{} bytes", chunk.len());
///     }
/// }
/// # Ok(()) }
/// ```
pub struct HttpBody {
    inner: Incoming,
    /// Until the end of the stream.
    lease: Option<Lease<Http>>,
    /// The pool, for errors after the lease went back (a body over
    /// `max_response_body` whose last frame ended the stream).
    pool: Arc<Shared>,
}

impl HttpBody {
    pub(crate) fn new(inner: Incoming, lease: Lease<Http>) -> Self {
        let mut body = Self {
            inner,
            pool: lease.shared().clone(),
            lease: Some(lease),
        };
        // An empty body (HEAD, 204, 304, `content-length: 0`) is over before
        // it is read.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The stream ended: the connection is known good and goes back.
    fn release(&mut self) {
        if let Some(mut lease) = self.lease.take() {
            lease.in_doubt = false;
        }
    }

    fn pool_name(&self) -> &str {
        &self.pool.name
    }
}

/// What went wrong decoding an upstream's JSON, without serde_json's own
/// words: they quote the body's values (`invalid type: string "…"`, an
/// unknown field's name), which may be a token the upstream returned.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "does not match the expected type",
        Category::Eof => "ended early",
    };
    format!(
        "the JSON body {what} (line {}, column {})",
        e.line(),
        e.column()
    )
}

impl fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBody")
            .field("pool", &self.pool_name())
            .field("holds_connection", &self.lease.is_some())
            .finish()
    }
}

impl Body for HttpBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.release();
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                let error = HttpError::Upstream {
                    pool: this.pool_name().to_owned(),
                    message: e.to_string(),
                };
                // Still in doubt: the pool closes it.
                this.lease = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
