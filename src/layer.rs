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
//! A request with a body is read first (up to
//! [`PoolLayer::read_body_first`], 2 MiB by default) and its handler runs
//! once the body has arrived: `DbConn` and `DbTx` lease (and `BEGIN`) only
//! then, so clients trickling uploads hold no connection. A larger body
//! reaches the handler after its first 2 MiB, the rest still streaming. A
//! request without a body pays nothing for this.
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
    body::{Body, Bytes, HttpBody as _},
    http::Request,
    response::{IntoResponse, Response},
};
use futures_util::{StreamExt as _, future::BoxFuture};
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
///
/// Kept to three machine words: tokio swaps it in and out of a thread-local
/// at every poll of the request's future, so what most requests never need
/// sits behind one box.
pub(crate) struct RequestScope {
    pub(crate) manager: PoolManager,
    /// The pool the request's last lease came from, for the log lines of
    /// errors that carry no pool (`DbError`).
    leased: Cell<Option<Arc<crate::pool::Shared>>>,
    /// Made by a `DbTx`, or by a `query_timeout` that fired.
    rare: OnceCell<Box<Rare>>,
}

/// The part of a [`RequestScope`] few requests use.
#[derive(Default)]
struct Rare {
    finish: OnceCell<Arc<dyn Finish>>,
    /// The first pool whose `query_timeout` cut a round trip of this
    /// request, and that timeout.
    query_timeout: Cell<Option<(String, Duration)>>,
}

impl RequestScope {
    fn rare(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }
}

/// The name of the pool the request being served leased from last, if a
/// [`PoolLayer`] serves it and it leased.
pub(crate) fn leased_pool() -> Option<String> {
    with_scope(|scope| {
        let pool = scope.leased.take();
        let name = pool.as_ref().map(|p| p.name.clone());
        scope.leased.set(pool);
        name
    })
    .flatten()
}

/// Notes, at a lease's return, that the request leased from `pool` (for
/// the log lines of errors that carry no pool) and, when a round trip of
/// that connection timed out after `timed_out` (`query_timeout`), that
/// [`PoolLayer`] answers 504 naming the pool if the handler then fails
/// (5xx); the first such pool is kept.
pub(crate) fn note_return(pool: &Arc<crate::pool::Shared>, timed_out: Option<Duration>) {
    with_scope(|scope| {
        if let Some(after) = timed_out {
            let rare = scope.rare();
            let noted = rare.query_timeout.take();
            rare.query_timeout
                .set(Some(noted.unwrap_or_else(|| (pool.name.clone(), after))));
        }
        scope.leased.set(Some(pool.clone()));
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
        let f = scope.rare().finish.get_or_init(|| Arc::new(T::default()));
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
    read_first: usize,
}

/// How much of a request body [`PoolLayer`] reads before the handler runs,
/// by default: axum's own default body limit.
pub const READ_BODY_FIRST: usize = 2 * 1024 * 1024;

impl PoolLayer {
    /// A layer serving `manager`.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let layer = axum_pools::PoolLayer::new(manager);
    /// # }
    /// ```
    pub fn new(manager: PoolManager) -> Self {
        Self {
            manager,
            read_first: READ_BODY_FIRST,
        }
    }

    /// How much of a request body is read before the handler runs (default
    /// [`READ_BODY_FIRST`], 2 MiB): a handler taking `DbConn` or `DbTx`
    /// then leases (and begins) only once its upload has arrived, so
    /// clients trickling bodies hold no connection. A body larger than
    /// `limit` reaches the handler after its first `limit` bytes, the rest
    /// still streaming; `0` turns reading ahead off.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// // Uploads up to 16 MiB arrive before their handler leases.
    /// let layer = axum_pools::PoolLayer::new(manager).read_body_first(16 << 20);
    /// # }
    /// ```
    pub fn read_body_first(mut self, limit: usize) -> Self {
        self.read_first = limit;
        self
    }
}

impl<S> Layer<S> for PoolLayer {
    type Service = PoolService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PoolService {
            inner,
            manager: self.manager.clone(),
            read_first: self.read_first,
        }
    }
}

/// The service of [`PoolLayer`]. See the [module docs](crate::layer).
#[derive(Clone, Debug)]
#[must_use]
pub struct PoolService<S> {
    inner: S,
    manager: PoolManager,
    read_first: usize,
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
        Self {
            inner,
            manager,
            read_first: READ_BODY_FIRST,
        }
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

impl<S> Service<Request<Body>> for PoolService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    // The reading future yields the inner call's future on purpose: the
    // response future polls it in place, as it does for bodiless requests.
    #[allow(clippy::async_yields_async)]
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let scope = RequestScope {
            manager: self.manager.clone(),
            leased: Cell::new(None),
            rare: OnceCell::new(),
        };
        if self.read_first == 0 || req.body().is_end_stream() {
            // Extractors run when the inner future is polled, inside the
            // scope.
            let future = self.inner.call(req);
            return ResponseFuture {
                state: State::Inner {
                    future: SCOPE.scope(scope, future),
                },
            };
        }
        // The service that was made ready serves this request, later.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.read_first;
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Reading {
                future: Box::pin(async move {
                    let body = read_first(body, limit).await;
                    SCOPE.scope(scope, inner.call(Request::from_parts(parts, body)))
                }),
            },
        }
    }
}

/// Up to `limit` bytes of `body`, read now, followed by the rest (or by the
/// error that ended it), for the handler to read as if nothing happened.
async fn read_first(mut body: Body, limit: usize) -> Body {
    let mut read: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let rest = loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break None,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    read.push(data);
                }
                // (Trailers, which a handler cannot read through axum's
                // body extractors, are not kept.)
                if size > limit {
                    break Some(Ok(body));
                }
            }
            Some(Err(e)) => break Some(Err(e)),
        }
    };
    match rest {
        // Whole: one buffer, as hyper would have handed it over.
        None => Body::from(match read.len() {
            0 => Bytes::new(),
            1 => read.swap_remove(0),
            _ => Bytes::from(read.concat()),
        }),
        Some(rest) => {
            let head = futures_util::stream::iter(read.into_iter().map(Ok::<_, axum::Error>));
            match rest {
                Ok(body) => Body::from_stream(head.chain(body.into_data_stream())),
                Err(e) => {
                    Body::from_stream(head.chain(futures_util::stream::once(async { Err(e) })))
                }
            }
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

    impl<F> PinnedDrop for ResponseFuture<F> {
        /// Dropped before the response is out (client gone, a timeout
        /// outside, a panic): the request's future goes inside
        /// [`while_cancelling`](crate::pool::lease::while_cancelling), so leases it
        /// drops mid round trip are not handed out again.
        fn drop(this: Pin<&mut Self>) {
            let mut state = this.project().state;
            if !matches!(state.as_mut().project(), StateProj::Done) {
                crate::pool::lease::while_cancelling(|| state.set(State::Done));
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // The request body arriving, before the inner service is called.
        Reading { future: BoxFuture<'static, TaskLocalFuture<RequestScope, F>> },
        Inner { #[pin] future: TaskLocalFuture<RequestScope, F> },
        Finishing { future: BoxFuture<'static, Response> },
        // Answered (or dropped).
        Done,
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
                StateProj::Reading { future } => {
                    let future = ready!(future.as_mut().poll(cx));
                    this.state.set(State::Inner { future });
                }
                StateProj::Inner { mut future } => {
                    let mut response = ready!(future.as_mut().poll(cx))?;
                    // Most requests: no transaction, no timeout.
                    let Some(rare) = future.take_value().and_then(|s| s.rare.into_inner()) else {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    };
                    if let Some((pool, after)) = rare.query_timeout.into_inner()
                        && response.status().is_server_error()
                    {
                        response = PoolError::QueryTimeout { pool, after }.into_response();
                    }
                    let finish = rare.finish.into_inner().and_then(|finish| finish.close());
                    match finish {
                        None => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Some(finish) => this.state.set(State::Finishing {
                            future: finish(response),
                        }),
                    }
                }
                StateProj::Finishing { future } => {
                    let response = ready!(future.as_mut().poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("ResponseFuture polled after it answered"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(chunks: Vec<std::io::Result<&'static [u8]>>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(|c| c.map(Bytes::from_static)),
        ))
    }

    async fn text(body: Body) -> Result<String, axum::Error> {
        let bytes = axum::body::to_bytes(body, usize::MAX).await?;
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_handler_reads_the_same_body_whatever_was_read_first() {
        let whole = read_first(streamed(vec![Ok(b"ab"), Ok(b"cd")]), 1024).await;
        assert_eq!(text(whole).await.unwrap(), "abcd");
        // Over the limit: the first part read, the rest still streaming.
        let over = read_first(streamed(vec![Ok(b"abc"), Ok(b"def"), Ok(b"gh")]), 4).await;
        assert_eq!(text(over).await.unwrap(), "abcdefgh");
        // A body that failed fails the handler's read the same way.
        let cut = streamed(vec![
            Ok(b"abc"),
            Err(std::io::Error::other("reset by peer")),
        ]);
        let e = text(read_first(cut, 1024).await).await.unwrap_err();
        assert!(e.to_string().contains("reset by peer"), "{e}");
    }
}
