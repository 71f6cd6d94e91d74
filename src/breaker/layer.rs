//! [`CircuitBreakerLayer`]: the pools' circuit breaker for any tower
//! service (an outbound client, a slow dependency behind a route).
//!
//! A [`Classify`] decides which results are failures; the default,
//! [`ServerErrors`], counts errors and 5xx responses. When the breaker is
//! open the service is not called: the call fails at once with
//! [`CircuitBreakerError::Open`] (answered 503 with `Retry-After` when it
//! becomes a response). The state is shared by every clone of the service
//! and every service the layer makes. The thresholds are those of the pools:
//! [`BreakerConfig`].
//!
//! ```
//! use axum_pools::{BreakerConfig, layer::CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//!
//! let client = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(BreakerConfig::default()))
//!     .service_fn(|req: http::Request<String>| async move {
//!         Ok::<_, std::io::Error>(http::Response::new(req.into_body()))
//!     });
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    breaker::{Admission, Breaker, BreakerState, BreakerStats},
    config::BreakerConfig,
    problem::{Problem, retry_after_secs},
};

/// Decides whether a call's result counts as a failure.
///
/// ```
/// use axum_pools::layer::Classify;
///
/// /// 404s count too.
/// #[derive(Clone)]
/// struct NotFoundIsFailure;
///
/// impl<B, E> Classify<http::Response<B>, E> for NotFoundIsFailure {
///     fn is_failure(&self, result: &Result<http::Response<B>, E>) -> bool {
///         result.as_ref().map_or(true, |r| r.status().is_server_error() || r.status() == 404)
///     }
/// }
/// ```
pub trait Classify<R, E>: Clone + Send + Sync + 'static {
    /// Whether `result` is a failure.
    fn is_failure(&self, result: &Result<R, E>) -> bool;
}

/// The default classifier: errors and 5xx responses are failures.
///
/// ```
/// use axum_pools::layer::{Classify, ServerErrors};
/// let r: Result<http::Response<()>, ()> = Ok(http::Response::builder().status(503).body(()).unwrap());
/// assert!(ServerErrors.is_failure(&r));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerErrors;

impl<B, E> Classify<http::Response<B>, E> for ServerErrors {
    fn is_failure(&self, result: &Result<http::Response<B>, E>) -> bool {
        result
            .as_ref()
            .map_or(true, |r| r.status().is_server_error())
    }
}

/// Layer wrapping a service in a circuit breaker. See the [module docs](crate::breaker).
#[derive(Clone)]
#[must_use]
pub struct CircuitBreakerLayer<C = ServerErrors> {
    config: BreakerConfig,
    classifier: C,
    breaker: Arc<OnceLock<Arc<Breaker>>>,
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A breaker with `config`, counting errors and 5xx as failures.
    ///
    /// ```
    /// let layer = axum_pools::layer::CircuitBreakerLayer::new(axum_pools::BreakerConfig::default());
    /// ```
    ///
    /// # Panics
    ///
    /// When `config` is invalid, naming the field (as a pool's build
    /// refuses it): `half_open_probes` 0 would keep the breaker half-open
    /// for good, `failure_rate_percent` outside 1–100, `window` or
    /// `open_duration` zero.
    pub fn new(config: BreakerConfig) -> Self {
        if let Err(e) = config.validate() {
            panic!("CircuitBreakerLayer::new: {e}");
        }
        Self {
            config,
            classifier: ServerErrors,
            breaker: Arc::default(),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same breaker with another classifier.
    ///
    /// ```
    /// # #[derive(Clone)] struct Mine;
    /// # impl<R, E> axum_pools::layer::Classify<R, E> for Mine { fn is_failure(&self, r: &Result<R, E>) -> bool { r.is_err() } }
    /// let layer = axum_pools::layer::CircuitBreakerLayer::new(Default::default()).classify(Mine);
    /// ```
    pub fn classify<D>(self, classifier: D) -> CircuitBreakerLayer<D> {
        CircuitBreakerLayer {
            config: self.config,
            classifier,
            breaker: Arc::default(),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            classifier: self.classifier.clone(),
            breaker: self
                .breaker
                .get_or_init(|| Arc::new(Breaker::new(self.config.clone())))
                .clone(),
        }
    }
}

/// The service of [`CircuitBreakerLayer`]; clones share the breaker.
#[derive(Clone)]
pub struct CircuitBreaker<S, C = ServerErrors> {
    inner: S,
    classifier: C,
    breaker: Arc<Breaker>,
}

impl<S, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// The breaker's state and counts.
    ///
    /// ```
    /// # use tower_layer::Layer;
    /// let svc = axum_pools::layer::CircuitBreakerLayer::new(Default::default()).layer(());
    /// assert_eq!(svc.stats().state, axum_pools::BreakerState::Closed);
    /// ```
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        self.breaker.stats()
    }

    /// Operator control: open until [`reset`](Self::reset).
    ///
    /// ```
    /// # use tower_layer::Layer;
    /// let svc = axum_pools::layer::CircuitBreakerLayer::new(Default::default()).layer(());
    /// svc.force_open();
    /// assert_eq!(svc.stats().state, axum_pools::BreakerState::ForcedOpen);
    /// ```
    pub fn force_open(&self) {
        self.breaker.force_open();
    }

    /// Operator control: closed, whatever fails, until [`reset`](Self::reset).
    ///
    /// ```
    /// # use tower_layer::Layer;
    /// let svc = axum_pools::layer::CircuitBreakerLayer::new(Default::default()).layer(());
    /// svc.force_closed();
    /// ```
    pub fn force_closed(&self) {
        self.breaker.force_closed();
    }

    /// Operator control: closed and automatic again.
    ///
    /// ```
    /// # use tower_layer::Layer;
    /// let svc = axum_pools::layer::CircuitBreakerLayer::new(Default::default()).layer(());
    /// svc.reset();
    /// ```
    pub fn reset(&self) {
        self.breaker.reset();
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = CircuitBreakerError<S::Error>;
    type Future = CircuitBreakerFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(CircuitBreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let admission = self.breaker.admit();
        let state = match admission {
            Admission::Rejected(retry_after) => State::Open { retry_after },
            admission => State::Called {
                future: self.inner.call(req),
                admission,
                breaker: self.breaker.clone(),
                classifier: self.classifier.clone(),
                settled: false,
            },
        };
        CircuitBreakerFuture { state }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`]. Dropped before the call
    /// finished (the request was cancelled), it reports nothing, and a
    /// half-open probe's permit goes back, so the next request can probe.
    #[must_use = "futures do nothing unless polled"]
    pub struct CircuitBreakerFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }

    impl<F, C> PinnedDrop for CircuitBreakerFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            if let StateProj::Called { admission, breaker, settled, .. } = this.project().state.project()
                && !*settled
            {
                breaker.neutral(admission);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Open { retry_after: Duration },
        Called {
            #[pin]
            future: F,
            admission: Admission,
            breaker: Arc<Breaker>,
            classifier: C,
            // The outcome was reported.
            settled: bool,
        },
    }
}

impl<F, C> fmt::Debug for CircuitBreakerFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerFuture")
            .finish_non_exhaustive()
    }
}

impl<F, C, R, E> Future for CircuitBreakerFuture<F, C>
where
    F: Future<Output = Result<R, E>>,
    C: Classify<R, E>,
{
    type Output = Result<R, CircuitBreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Open { retry_after } => Poll::Ready(Err(CircuitBreakerError::Open {
                retry_after: *retry_after,
            })),
            StateProj::Called {
                future,
                admission,
                breaker,
                classifier,
                settled,
            } => {
                let result = ready!(future.poll(cx));
                *settled = true;
                let failed = classifier.is_failure(&result);
                breaker.maybe_rotate(failed);
                if failed {
                    breaker.failure(admission);
                } else {
                    breaker.success(admission);
                }
                Poll::Ready(result.map_err(CircuitBreakerError::Inner))
            }
        }
    }
}

/// The error of a [`CircuitBreaker`]-wrapped service.
///
/// ```
/// use axum::{http::StatusCode, response::IntoResponse};
/// use axum_pools::layer::CircuitBreakerError;
/// let e = CircuitBreakerError::<std::io::Error>::Open { retry_after: std::time::Duration::from_millis(1500) };
/// assert_eq!(e.to_string(), "the circuit breaker is open; retry in 2s");
/// let r = e.into_response();
/// assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(r.headers()["retry-after"], "2");
///
/// // The service's own error: 502 problem+json, its text only in the log.
/// let e = CircuitBreakerError::Inner(std::io::Error::other("secret detail"));
/// let r = e.into_response();
/// assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
/// assert_eq!(r.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CircuitBreakerError<E> {
    /// The breaker is open: the service was not called.
    #[error("the circuit breaker is open; retry in {}s", retry_after_secs(*retry_after))]
    Open {
        /// Until it lets probes through.
        retry_after: Duration,
    },
    /// The service's own error.
    #[error(transparent)]
    Inner(E),
}

impl<E: fmt::Display> IntoResponse for CircuitBreakerError<E> {
    fn into_response(self) -> Response {
        match self {
            Self::Open { retry_after } => {
                let secs = retry_after_secs(retry_after);
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "circuit-open",
                    "Circuit open",
                    format!("the dependency is failing; retry in {secs}s"),
                )
                .retry_after(Some(retry_after))
                .into_response()
            }
            Self::Inner(e) => {
                tracing::error!(error = %e, "service failed");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "dependency-failed",
                    "Dependency failed",
                    "the dependency failed".to_owned(),
                )
                .into_response()
            }
        }
    }
}

impl BreakerState {
    /// Whether calls are refused in this state.
    ///
    /// ```
    /// assert!(axum_pools::BreakerState::Open.refuses());
    /// assert!(!axum_pools::BreakerState::HalfOpen.refuses());
    /// ```
    #[must_use]
    pub fn refuses(self) -> bool {
        matches!(self, Self::Open | Self::ForcedOpen)
    }
}
