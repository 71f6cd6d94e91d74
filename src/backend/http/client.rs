//! [`HttpClient`] and [`RequestBuilder`]: requests to an upstream through
//! its pool.

use std::{fmt, marker::PhantomData, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde::Serialize;
use tower::ServiceExt;

use super::{Http, HttpError, HttpResponse, service};
use crate::{
    error::PoolError,
    extract::{ByType, PoolSelector, RequiresPool, leased_extractor, request_manager},
    manager::PoolManager,
    pool::{ErasedPool, Pool},
};

/// A client bound to one upstream's pool: `client.get("/invoices/1").send().await`.
///
/// Every attempt leases a pooled connection, so the pool's `max_size` caps
/// the connections to the upstream and its `acquire_timeout`, load shedding
/// and drain apply. Idempotent requests are retried with backoff on
/// connection failures, timeouts and 502/503/504 (see
/// [`HttpConfig`](crate::HttpConfig)). Cheap to clone.
///
/// `N` picks the pool: by default the only HTTP pool; a marker from
/// [`pool_name!`](crate::pool_name) picks one by name.
///
/// ```no_run
/// use axum::Json;
/// use axum_pools::{HttpClient, HttpError, pool_name};
///
/// pool_name!(Billing = "billing");
///
/// async fn invoice(billing: HttpClient<Billing>) -> Result<Json<serde_json::Value>, HttpError> {
///     let invoice = billing.get("/invoices/1").send().await?.json().await?;
///     Ok(Json(invoice))
/// }
/// ```
pub struct HttpClient<N: PoolSelector = ByType> {
    pool: Arc<dyn ErasedPool>,
    _selector: PhantomData<fn() -> N>,
}

impl<N: PoolSelector> Clone for HttpClient<N> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            _selector: PhantomData,
        }
    }
}

impl<N: PoolSelector> fmt::Debug for HttpClient<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("pool", &self.pool.shared().name)
            .finish_non_exhaustive()
    }
}

impl<N: PoolSelector> HttpClient<N> {
    /// The client of the pool `N` selects in `manager` (the manager as
    /// axum state, or outside a request).
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) -> Result<(), axum_pools::PoolError> {
    /// let client = axum_pools::HttpClient::<axum_pools::ByType>::from_manager(&manager)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// No (or more than one, unnamed) HTTP pool is registered.
    pub fn from_manager(manager: &PoolManager) -> Result<Self, PoolError> {
        Ok(Self {
            pool: manager
                .erased_for::<Http>(N::NAME, "an HTTP client")?
                .clone(),
            _selector: PhantomData,
        })
    }

    fn pool(&self) -> &Pool<Http> {
        self.pool
            .as_any()
            .downcast_ref()
            .expect("from_manager checked the pool's type")
    }

    /// The name of the pool.
    ///
    /// ```no_run
    /// # fn demo(c: axum_pools::HttpClient) { let _ = c.pool_name(); }
    /// ```
    #[must_use]
    pub fn pool_name(&self) -> &str {
        &self.pool.shared().name
    }

    /// A request of `method` to `path` (appended to the pool's base URL;
    /// it may carry a query string).
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// let r = c.request(http::Method::OPTIONS, "/").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: Method, path: impl Into<String>) -> RequestBuilder<N> {
        RequestBuilder {
            client: self.clone(),
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error: None,
        }
    }

    /// A `GET` request. See [`request`](Self::request).
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// let body = c.get("/quote?symbol=ACME").send().await?.text().await?;
    /// # Ok(()) }
    /// ```
    pub fn get(&self, path: impl Into<String>) -> RequestBuilder<N> {
        self.request(Method::GET, path)
    }

    /// A `POST` request (not retried unless `retry_non_idempotent`).
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// c.post("/events").json(&serde_json::json!({"kind": "signup"})).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn post(&self, path: impl Into<String>) -> RequestBuilder<N> {
        self.request(Method::POST, path)
    }

    /// A `PUT` request.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// c.put("/flags/beta").body("on").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn put(&self, path: impl Into<String>) -> RequestBuilder<N> {
        self.request(Method::PUT, path)
    }

    /// A `DELETE` request.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// c.delete("/sessions/42").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, path: impl Into<String>) -> RequestBuilder<N> {
        self.request(Method::DELETE, path)
    }

    /// A `HEAD` request.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// let exists = c.head("/files/a.txt").send().await?.status().is_success();
    /// # Ok(()) }
    /// ```
    pub fn head(&self, path: impl Into<String>) -> RequestBuilder<N> {
        self.request(Method::HEAD, path)
    }
}

impl<N: PoolSelector> RequiresPool for HttpClient<N> {
    fn check(manager: &PoolManager) -> Result<(), PoolError> {
        Self::from_manager(manager).map(|_| ())
    }
}

leased_extractor!(impl<N: PoolSelector> for HttpClient<N>, |_| {
    Ok(Self::from_manager(&request_manager()?)?)
});

/// A request being built; [`send`](Self::send) it.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<N: PoolSelector = ByType> {
    client: HttpClient<N>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    error: Option<HttpError>,
}

/// Shows the method only: the path may carry a key (`?api_key=`) or a
/// token as a segment, and `Debug` output ends up in logs.
impl<N: PoolSelector> fmt::Debug for RequestBuilder<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl<N: PoolSelector> RequestBuilder<N> {
    /// Adds a header.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// c.get("/me").header("x-request-id", "abc").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => {
                self.error = Some(HttpError::InvalidRequest(
                    "a header name or value is not valid HTTP".into(),
                ));
            }
        }
        self
    }

    /// Sets the body.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// c.post("/raw").body(vec![1u8, 2, 3]).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// c.post("/orders").json(&serde_json::json!({"sku": "A1", "qty": 2})).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body.into();
                self.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(e) => {
                self.error = Some(HttpError::InvalidRequest(format!("body is not JSON: {e}")))
            }
        }
        self
    }

    /// Sends the request through the pool's stack (see the
    /// [module docs](crate::backend::http)): leases a connection per
    /// attempt, retries what may be retried, follows redirects if
    /// configured.
    ///
    /// ```no_run
    /// # async fn demo(c: axum_pools::HttpClient) -> Result<(), axum_pools::HttpError> {
    /// let response = c.get("/health").send().await?;
    /// assert!(response.status().is_success());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`HttpError`]: no connection (the pool's error), no response
    /// (refused, reset, timed out) after the allowed attempts, or an invalid
    /// request.
    pub async fn send(self) -> Result<HttpResponse, HttpError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Self {
            client,
            method,
            path,
            headers,
            body,
            ..
        } = self;
        let http = client.pool().backend();
        let uri = http.uri(&path).map_err(HttpError::InvalidRequest)?;
        let request = http.request(method, uri, headers, body);
        let response = service::stack(&client.pool, http).oneshot(request).await?;
        let config = &http.config;
        Ok(HttpResponse::new(
            response,
            config.request_timeout,
            config.max_response_body,
        ))
    }
}
