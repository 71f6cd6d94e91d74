//! [`PoolLayer`]: puts the manager into every request's extensions.

use std::task::{Context, Poll};

use axum::http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::manager::PoolManager;

/// Layer that makes a [`PoolManager`] reachable from every request, so
/// [`DbConn`](crate::DbConn) and friends can lease from it. See the
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
    /// let svc = axum_pools::PoolService::new(tower::service_fn(|_req: axum::http::Request<axum::body::Body>| async {
    ///     Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::empty()))
    /// }), manager);
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
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.manager.clone());
        self.inner.call(req)
    }
}
