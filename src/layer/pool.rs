//! [`PoolLayer`]: puts the manager and a transaction slot into every
//! request's extensions, and finishes the request's [`DbTx`](crate::DbTx)s
//! by the response status.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{http::Request, response::Response};
use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    extract::tx::{TxSlot, finish_all},
    manager::PoolManager,
};

/// What [`PoolLayer`] puts into each request: the manager and the slot where
/// the request's `DbTx`s leave their transactions. One extension, one
/// allocation per request.
#[derive(Clone)]
pub(crate) struct RequestScope(pub(crate) Arc<Scope>);

pub(crate) struct Scope {
    pub(crate) manager: PoolManager,
    pub(crate) tx: TxSlot,
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let scope = Arc::new(Scope {
            manager: self.manager.clone(),
            tx: TxSlot::default(),
        });
        req.extensions_mut().insert(RequestScope(scope.clone()));
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(req),
            },
            scope: Some(scope),
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
        scope: Option<Arc<Scope>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
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
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    let open = match this.scope.take() {
                        Some(scope) => scope.tx.close(),
                        None => Vec::new(),
                    };
                    if open.is_empty() {
                        return Poll::Ready(Ok(response));
                    }
                    this.state.set(State::Finishing {
                        future: Box::pin(finish_all(open, response)),
                    });
                }
                StateProj::Finishing { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}
