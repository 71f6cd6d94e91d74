//! [`PoolLayer`]: makes the manager reachable from every request's task, so
//! extractors can lease from it, and finishes what a request left for the
//! end (a [`DbTx`](crate::DbTx)'s commit or rollback) by the response.
//!
//! Routes that never lease pay no allocation for it: the manager is a
//! task-local set while the request's future is polled (one reference count
//! per request), and the per-request slot a `DbTx` needs is made only when
//! one is extracted. A consequence: a service between `PoolLayer` and the
//! handler that moves the request to another task (`tower::buffer`) hides
//! the layer from the extractors (500 "no PoolLayer on this route"); put
//! `PoolLayer` inside such layers.
//!
//! `Router::layer` wraps every route in a boxed service that axum clones per
//! request, whatever the layer. Where that cost matters, wrap the whole
//! router instead: `PoolLayer::new(manager).layer(router.with_state(()))`
//! (`with_state` turns the handlers into routes once, as `axum::serve` does
//! for a bare router), served with `axum::ServiceExt::into_make_service`.
//!
//! The other tower layers of the crate live with their capability:
//! [`CircuitBreakerLayer`] in
//! [`breaker`](crate::breaker), [`RateLimitLayer`]
//! in [`rate_limit`](crate::rate_limit); they are re-exported here as before.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use axum_pools::{DbConn, PoolLayer, PoolManager, SqliteConnection};
//!
//! async fn handler(_db: DbConn<SqliteConnection>) -> &'static str { "leased" }
//!
//! # async fn demo(manager: PoolManager) {
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(PoolLayer::new(manager));
//! # }
//! ```

use std::{
    any::Any,
    cell::{Cell, OnceCell},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    http::Request,
    response::{IntoResponse, Response},
};
use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;

#[doc(inline)]
pub use crate::breaker::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerFuture, CircuitBreakerLayer, Classify,
    ServerErrors,
};
#[doc(inline)]
pub use crate::rate_limit::{
    FailPolicy, KeyBy, KeyFn, RateLimit, RateLimitFuture, RateLimitLayer, TrustedProxies,
};
use crate::{error::PoolError, manager::PoolManager};

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// What [`PoolLayer`] makes reachable while a request runs: the manager,
/// and the work the request leaves for the layer, made on first use.
pub(crate) struct RequestScope {
    pub(crate) manager: PoolManager,
    finish: OnceCell<Arc<dyn Finish>>,
    /// The first pool whose `query_timeout` cut a round trip of this
    /// request, and that timeout.
    query_timeout: Cell<Option<(String, Duration)>>,
}

/// Notes that a connection this request leased from `pool` timed out
/// (`query_timeout`): if the handler then fails (5xx), [`PoolLayer`]
/// answers 504 naming the pool instead.
pub(crate) fn note_query_timeout(pool: &str, after: Duration) {
    with_scope(|scope| {
        let noted = scope.query_timeout.take();
        scope
            .query_timeout
            .set(Some(noted.unwrap_or_else(|| (pool.to_owned(), after))));
    });
}

/// Work a request leaves for [`PoolLayer`] to finish by its response.
pub(crate) trait Finish: Any + Send + Sync {
    /// Takes what is pending (later arrivals are abandoned): `None` when
    /// there is nothing to do, else what finishes it by the response.
    fn close(&self) -> Option<FinishFn>;

    /// For [`finisher`].
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// Finishes a request's pending work by its response.
pub(crate) type FinishFn = Box<dyn FnOnce(Response) -> BoxFuture<'static, Response> + Send>;

/// Runs `f` on the scope of the request being served, if a [`PoolLayer`]
/// serves it.
pub(crate) fn with_scope<R>(f: impl FnOnce(&RequestScope) -> R) -> Option<R> {
    SCOPE.try_with(f).ok()
}

/// The request's finisher of type `T`, made on first use; `None` outside a
/// [`PoolLayer`].
pub(crate) fn finisher<T: Finish + Default>() -> Option<Arc<T>> {
    with_scope(|scope| {
        let f = scope.finish.get_or_init(|| Arc::new(T::default()));
        f.clone().into_any().downcast::<T>().ok()
    })
    .flatten()
}

/// Layer that makes a [`PoolManager`] reachable from every request, so
/// [`DbConn`](crate::DbConn) and [`DbTx`](crate::DbTx) can lease from it,
/// and commits or rolls back each request's `DbTx` by its response. See the
/// [module docs](crate::layer).
#[derive(Clone, Debug)]
#[must_use]
pub struct PoolLayer {
    manager: PoolManager,
}

impl PoolLayer {
    /// A layer serving `manager`.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let layer = axum_pools::PoolLayer::new(manager);
    /// # }
    /// ```
    pub fn new(manager: PoolManager) -> Self {
        Self { manager }
    }
}

impl<S> Layer<S> for PoolLayer {
    type Service = PoolService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PoolService::new(inner, self.manager.clone())
    }
}

/// The service of [`PoolLayer`]. See the [module docs](crate::layer).
#[derive(Clone, Debug)]
#[must_use]
pub struct PoolService<S> {
    inner: S,
    manager: PoolManager,
}

impl<S> PoolService<S> {
    /// Wraps `inner`, serving `manager`.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let router: axum::Router = axum::Router::new();
    /// let svc = axum_pools::PoolService::new(router, manager);
    /// # }
    /// ```
    pub fn new(inner: S, manager: PoolManager) -> Self {
        Self { inner, manager }
    }

    /// The same as [`PoolLayer::new`].
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let layer = axum_pools::PoolService::<()>::layer(manager);
    /// # }
    /// ```
    pub fn layer(manager: PoolManager) -> PoolLayer {
        PoolLayer::new(manager)
    }
}

impl<S, B> Service<Request<B>> for PoolService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let scope = RequestScope {
            manager: self.manager.clone(),
            finish: OnceCell::new(),
            query_timeout: Cell::new(None),
        };
        // Extractors run when the inner future is polled, inside the scope.
        let future = self.inner.call(req);
        ResponseFuture {
            state: State::Inner {
                future: SCOPE.scope(scope, future),
            },
        }
    }
}

pin_project! {
    /// The response future of [`PoolService`]: the inner service's, then the
    /// commit or rollback of the request's transactions, if it has any.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: TaskLocalFuture<RequestScope, F> },
        Finishing { future: BoxFuture<'static, Response> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { mut future } => {
                    let mut response = ready!(future.as_mut().poll(cx))?;
                    let Some(scope) = future.take_value() else {
                        return Poll::Ready(Ok(response));
                    };
                    if let Some((pool, after)) = scope.query_timeout.into_inner()
                        && response.status().is_server_error()
                    {
                        response = PoolError::QueryTimeout { pool, after }.into_response();
                    }
                    let finish = scope.finish.into_inner().and_then(|finish| finish.close());
                    match finish {
                        None => return Poll::Ready(Ok(response)),
                        Some(finish) => this.state.set(State::Finishing {
                            future: finish(response),
                        }),
                    }
                }
                StateProj::Finishing { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}
