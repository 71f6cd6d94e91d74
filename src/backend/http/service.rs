//! The request path on tower parts (see the [module docs](super)):
//! `FollowRedirect` → `Retry` → [`Leasing`] → `Timeout` → [`SendOn`].

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::future::{BoxFuture, Either as Wait, Ready, ready};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tower::{
    BoxError, Service, ServiceExt,
    retry::{
        Policy, Retry,
        backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff},
    },
    timeout::{Timeout, error::Elapsed},
    util::{BoxService, Either, rng::HasherRng},
};
use tower_http::follow_redirect::{
    FollowRedirect,
    policy::{Limited, PolicyExt, SameOrigin, clone_body_fn},
};

use super::{Http, HttpBody, HttpError};
use crate::{
    breaker::Admission,
    error::PoolError,
    pool::{ErasedPool, Lease, Pool, Shared},
    stats::inc,
};

/// The request body: the whole body in memory, so a retry or a 307/308
/// redirect can send it again.
pub(super) type Body = Full<Bytes>;

/// A random share of each backoff added on top of it (tower's jitter:
/// `delay = base × (1 + jitter × r)`, `r` in `[0, 1)`).
const JITTER: f64 = 0.5;

/// The backoff doubles per retry up to this multiple of `retry_backoff`.
const MAX_BACKOFF_FACTOR: u32 = 1024;

type Attempts = Retry<RetryPolicy, Leasing>;

/// The stack one request runs through. The redirect-following branch is
/// boxed: its future carries a copy of the request for the next hop, and
/// it is off by default (`max_redirects` 0), so the common case's future
/// stays the size of the retry layer's.
pub(super) type Stack = Either<Redirects, Attempts>;

type Redirects = BoxService<Request<Body>, Response<HttpBody>, HttpError>;

/// The stack for one request to `pool` (whose backend is `http`). Built per
/// request: it is a few `Arc` clones, and each request's retry policy and
/// backoff start afresh.
pub(super) fn stack(pool: &Arc<dyn ErasedPool>, http: &Http) -> Stack {
    let config = &http.config;
    let leasing = Leasing {
        pool: pool.clone(),
        send: Timeout::new(SendOn, config.attempt_timeout()),
    };
    let policy = RetryPolicy {
        pool: pool.clone(),
        left: config.retries,
        non_idempotent: config.retry_non_idempotent,
        waits: Waits::new(config.retry_backoff),
    };
    let attempts = Retry::new(policy, leasing);
    if config.max_redirects == 0 {
        return Either::Right(attempts);
    }
    let clone: fn(&Body) -> Option<Body> = |body| Some(body.clone());
    let redirects = SameOrigin::new()
        .and::<_, Body, HttpError>(Limited::new(config.max_redirects as usize))
        .and::<_, Body, HttpError>(clone_body_fn(clone));
    Either::Left(BoxService::new(FollowRedirect::with_policy(
        attempts, redirects,
    )))
}

fn pool_of(erased: &Arc<dyn ErasedPool>) -> &Pool<Http> {
    erased
        .as_any()
        .downcast_ref()
        .expect("an HttpClient is only made for an HTTP pool")
}

/// One attempt: leases a connection (under `acquire_timeout`, the breaker,
/// load shedding and drain), counts the attempt, sends through the
/// `request_timeout`, tells the breaker the outcome and hands the
/// connection to the response body.
#[derive(Clone)]
pub(super) struct Leasing {
    pool: Arc<dyn ErasedPool>,
    send: Timeout<SendOn>,
}

impl Service<Request<Body>> for Leasing {
    type Response = Response<HttpBody>;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<Response<HttpBody>, HttpError>>;

    /// Always ready: the pool is waited for in the call, under its
    /// `acquire_timeout`.
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), HttpError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let erased = self.pool.clone();
        let send = self.send.clone();
        Box::pin(async move {
            let pool = pool_of(&erased);
            let http = pool.backend();
            let counters = &http.counters;
            // Counted once, however many connections it takes to send.
            let mut counted = false;
            let attempt = |counted: &mut bool, request: &Request<Body>| {
                if !std::mem::replace(counted, true) {
                    inc(&counters.requests);
                    if request.extensions().get::<Retried>().is_some() {
                        inc(&counters.retries);
                    }
                }
            };
            // Once more for each request a reused connection gives back
            // unsent; each such connection is discarded, so this ends.
            loop {
                let lease = match pool.acquire().await {
                    Ok(lease) => lease,
                    Err(e) => {
                        // No connection could be opened (refused, reset,
                        // timed out, TLS), or none was left for a request
                        // given back unsent: an attempt that got no response.
                        if counted || matches!(e, PoolError::Backend { .. }) {
                            attempt(&mut counted, &request);
                            inc(&counters.errors);
                        }
                        return Err(e.into());
                    }
                };
                attempt(&mut counted, &request);
                let outcome = Outcome {
                    shared: pool.shared().clone(),
                    admission: Some(lease.admission()),
                };
                http.prepare(&mut request, lease.is_h2());
                let start = Instant::now();
                let e = match send.clone().oneshot((lease, request)).await {
                    Ok((lease, response)) => {
                        counters.latency.0.record(start.elapsed());
                        let status = response.status();
                        outcome.settle(!status.is_server_error());
                        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
                        inc(&counters.status_classes[class]);
                        return Ok(response.map(|body| HttpBody::new(body, lease)));
                    }
                    Err(e) => match e.downcast::<NotSent>() {
                        Ok(unsent) => {
                            // The breaker learns nothing: the upstream saw
                            // nothing (`outcome` drops unsettled).
                            tracing::debug!(
                                pool = %pool.shared().name,
                                "an idle connection closed as a request was queued on it; sending it on another"
                            );
                            request = unsent.0;
                            continue;
                        }
                        Err(e) => e,
                    },
                };
                inc(&counters.errors);
                outcome.settle(false);
                let pool = pool.shared().name.clone();
                return Err(if e.is::<Elapsed>() {
                    inc(&counters.timeouts);
                    HttpError::Timeout {
                        pool,
                        after: http.config.attempt_timeout(),
                    }
                } else {
                    HttpError::Upstream {
                        pool,
                        message: message(&e),
                    }
                });
            }
        })
    }
}

/// The text of a send error: a TLS failure in words, else hyper's, with
/// its cause (e.g. "connection reset by peer") when it has one. Never
/// carries a URL.
fn message(e: &BoxError) -> String {
    // A TLS 1.3 server checks the client's certificate after the client
    // has finished its handshake: its alert arrives with the first request.
    if let Some(reason) = crate::tls::reason(&**e) {
        return super::knob_names(&reason);
    }
    match std::error::Error::source(&**e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The breaker admission of one attempt until its outcome is known; dropped
/// unsettled (the attempt was cancelled), a half-open probe gives its
/// permit back.
struct Outcome {
    shared: Arc<Shared>,
    admission: Option<Admission>,
}

impl Outcome {
    fn settle(mut self, success: bool) {
        if let Some(admission) = self.admission.take() {
            if success {
                self.shared.breaker.success(&admission);
            } else {
                self.shared.breaker.failure(&admission);
            }
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.shared.breaker.neutral(&admission);
        }
    }
}

/// Sends one request on a leased connection, which is in doubt from here
/// until the response body has been read to its end.
#[derive(Clone, Copy, Debug)]
pub(super) struct SendOn;

impl Service<(Lease<Http>, Request<Body>)> for SendOn {
    type Response = (Lease<Http>, Response<Incoming>);
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, (mut lease, request): (Lease<Http>, Request<Body>)) -> Self::Future {
        Box::pin(async move {
            // Cancelled, timed out or failed from here on, the lease goes
            // back with the flag set and the pool discards the connection.
            lease.in_doubt = true;
            let reused = lease.served();
            match lease.send(request).await {
                Ok(response) => Ok((lease, response)),
                // A fresh connection that closes at once is a failure (the
                // upstream refuses us); a reused one closed while idle.
                Err((_, Some(request))) if reused => Err(NotSent(request).into()),
                Err((e, _)) => Err(e.into()),
            }
        })
    }
}

/// A request a reused connection gave back unsent: the upstream closed the
/// connection while it sat idle (its keep-alive timeout), as it was
/// leased. It goes out again on another connection whatever its method,
/// as neither a retry nor an error: the upstream never saw it.
struct NotSent(Request<Body>);

impl std::fmt::Debug for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the request: its URI may carry a token.
        f.write_str("NotSent")
    }
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection closed before the request went out")
    }
}

impl std::error::Error for NotSent {}

/// Marks a request the retry policy sends again, so that its attempt
/// counts as a retry.
#[derive(Clone, Copy)]
struct Retried;

/// Which attempts are tried again, and when.
#[derive(Clone)]
pub(super) struct RetryPolicy {
    pool: Arc<dyn ErasedPool>,
    /// Retries left for this request.
    left: u32,
    non_idempotent: bool,
    waits: Waits,
}

impl RetryPolicy {
    fn may_retry(&self, request: &Request<Body>) -> bool {
        self.left > 0 && (self.non_idempotent || request.method().is_idempotent())
    }
}

/// The waits before each retry of one request: `base`, doubling per retry
/// up to `MAX_BACKOFF_FACTOR` times it, each plus up to `JITTER` of itself
/// at random (tower's exponential backoff); none when `base` is zero.
#[derive(Clone)]
struct Waits {
    base: Duration,
    /// Made at the first retry, with its own random source.
    backoff: Option<ExponentialBackoff>,
}

impl Waits {
    const fn new(base: Duration) -> Self {
        Self {
            base,
            backoff: None,
        }
    }

    fn next(&mut self) -> Wait<Sleep, Ready<()>> {
        if self.base.is_zero() {
            return Wait::Right(ready(()));
        }
        let base = self.base;
        let backoff = self.backoff.get_or_insert_with(|| {
            ExponentialBackoffMaker::new(
                base,
                base.saturating_mul(MAX_BACKOFF_FACTOR),
                JITTER,
                HasherRng::default(),
            )
            .expect("a non-zero base, its multiple and a jitter in [0, 100]")
            .make_backoff()
        });
        Wait::Left(backoff.next_backoff())
    }
}

/// Whether an attempt's result is worth another attempt: no response (a
/// connection that could not be opened, a reset or timed-out attempt) or
/// 502, 503, 504. The pool's own refusals are not: it already waited
/// `acquire_timeout`, shed the request, is draining, or its breaker is open.
pub(super) fn retryable<B>(result: &Result<Response<B>, HttpError>) -> bool {
    match result {
        Ok(response) => matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
        Err(e) => matches!(
            e,
            HttpError::Timeout { .. }
                | HttpError::Upstream { .. }
                | HttpError::Pool(PoolError::Backend { .. })
        ),
    }
}

impl Policy<Request<Body>, Response<HttpBody>, HttpError> for RetryPolicy {
    type Future = Wait<Sleep, Ready<()>>;

    fn retry(
        &mut self,
        request: &mut Request<Body>,
        result: &mut Result<Response<HttpBody>, HttpError>,
    ) -> Option<Self::Future> {
        if !self.may_retry(request) || !retryable(result) {
            return None;
        }
        self.left -= 1;
        // Counted when the attempt is made: the caller may give up during
        // the backoff.
        request.extensions_mut().insert(Retried);
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            let outcome = match result {
                Ok(response) => response.status().to_string(),
                Err(e) => e.to_string(),
            };
            let pool = &self.pool.shared().name;
            tracing::debug!(pool = %pool, %outcome, left = self.left, "retrying");
        }
        Some(self.waits.next())
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        if !self.may_retry(request) {
            return None;
        }
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_double_from_the_base_plus_at_most_half_of_jitter() {
        let base = Duration::from_millis(100);
        let mut waits = Waits::new(base);
        for n in 0..5 {
            let start = Instant::now();
            waits.next().await;
            let waited = start.elapsed();
            let floor = base * 2u32.pow(n);
            assert!(
                waited >= floor && waited <= floor.mul_f64(1.0 + JITTER),
                "retry {n}: waited {waited:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_stop_growing_at_their_cap_and_a_zero_base_waits_not_at_all() {
        let base = Duration::from_millis(1);
        let mut waits = Waits::new(base);
        for _ in 0..20 {
            waits.next().await;
        }
        let start = Instant::now();
        waits.next().await;
        assert!(start.elapsed() <= base * MAX_BACKOFF_FACTOR);

        let start = Instant::now();
        let mut none = Waits::new(Duration::ZERO);
        none.next().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn no_response_and_gateway_statuses_are_retried_pool_refusals_and_others_not() {
        let status = |code: u16| -> Result<Response<()>, HttpError> {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            Ok(response)
        };
        for code in [502, 503, 504] {
            assert!(retryable(&status(code)), "{code}");
        }
        for code in [200, 404, 429, 500] {
            assert!(!retryable(&status(code)), "{code}");
        }
        let pool = || "p".to_owned();
        let timeout = HttpError::Timeout {
            pool: pool(),
            after: Duration::from_secs(1),
        };
        let reset = HttpError::Upstream {
            pool: pool(),
            message: "connection reset".into(),
        };
        let exhausted = HttpError::Pool(PoolError::Timeout {
            pool: pool(),
            waited: Duration::from_secs(1),
        });
        let refused = HttpError::Pool(PoolError::Backend {
            pool: pool(),
            source: crate::BackendError::new("connection refused"),
        });
        let open = HttpError::Pool(PoolError::CircuitOpen {
            pool: pool(),
            retry_after: Duration::from_secs(1),
        });
        assert!(retryable::<()>(&Err(timeout)));
        assert!(retryable::<()>(&Err(reset)));
        assert!(retryable::<()>(&Err(refused)));
        assert!(!retryable::<()>(&Err(exhausted)));
        assert!(!retryable::<()>(&Err(open)));
    }
}
