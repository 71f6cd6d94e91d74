//! [`RateLimitLayer`]: GCRA rate limiting (governor) with one state shared
//! by every clone of the service — tower's own `RateLimit` is per clone, and
//! axum clones services per connection, so it does not limit at all there.
//!
//! Over the limit: 429 `application/problem+json` with `Retry-After`. Every
//! answer carries the IETF draft headers `RateLimit-Policy` (`"<name>";q=<burst>;w=<window s>`)
//! and `RateLimit` (`"<name>";r=<remaining>;t=<s until full>`) unless
//! turned off; the name is `default` unless [`RateLimitLayer::name`] sets it.
//!
//! | key | what counts as one client |
//! |---|---|
//! | [`KeyBy::PeerIp`] | the TCP peer (`ConnectInfo<SocketAddr>`; serve with `into_make_service_with_connect_info`) |
//! | [`KeyBy::ClientIp`] | the client behind trusted proxies: `X-Forwarded-For` / `Forwarded` are read only when the peer is in a trusted network; from anyone else they are ignored |
//! | [`KeyBy::Header`] | a header's value (an API key); requests without it share one key |
//! | [`KeyBy::Global`] | everyone together |
//! | [`KeyBy::custom`] | what a function of the request returns |
//!
//! Memory: keys whose state is indistinguishable from a fresh one are
//! dropped once more than `max_keys` (default 100 000) are held. A key is
//! fresh again `per` after its last request, so a client that sends a new
//! key with every request ([`KeyBy::Header`], many IPv6 addresses) keeps
//! up to its request rate × `per` keys held until then; bound such keys
//! upstream (authenticate API keys first) or key by network.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use axum_pools::layer::{KeyBy, RateLimitLayer};
//!
//! let app: Router = Router::new()
//!     .route("/search", get(|| async { "results" }))
//!     .layer(
//!         RateLimitLayer::new(10, Duration::from_secs(1)) // 10 per second…
//!             .burst(20)                                  // …with bursts of 20
//!             .key(KeyBy::client_ip(["10.0.0.0/8"]).expect("CIDR")),
//!     );
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    http::{HeaderValue, Request, StatusCode},
    response::{IntoResponse, Response},
};
use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

mod keys;
mod report;
mod store;

pub use self::keys::{KeyBy, KeyFn, TrustedProxies};
use self::store::{Check, Decision, Local, Store};
use crate::problem::{Problem, retry_after_secs};

struct Shared {
    store: Box<dyn Store>,
    /// The limiter's name: its policy's in the headers, its keys' prefix in
    /// a shared store, and in its log lines.
    name: String,
    key: KeyBy,
    reports: report::Reports,
    burst: u32,
    per_cell: Duration,
    headers: bool,
    /// What to do when a shared store gives no answer.
    on_error: FailPolicy,
    /// Times the store gave no answer.
    store_errors: AtomicU64,
    /// Shared with the manager when the limiter reports to `/pools/metrics`.
    rejected: Arc<AtomicU64>,
}

impl Shared {
    fn policy(&self) -> HeaderValue {
        // Rounded up: a client that keeps to the advertised rate is never
        // refused (1 per 1.5 s is advertised as 1 per 2 s).
        let window = retry_after_secs(self.per_cell * self.burst);
        HeaderValue::from_str(&format!("\"{}\";q={};w={window}", self.name, self.burst))
            .expect("digits and ASCII")
    }

    fn state(&self, remaining: u32) -> HeaderValue {
        let to_full = (self.per_cell * (self.burst - remaining.min(self.burst))).as_secs_f64();
        HeaderValue::from_str(&format!(
            "\"{}\";r={remaining};t={}",
            self.name,
            to_full.ceil() as u64
        ))
        .expect("digits and ASCII")
    }

    /// The headers an allowed request's response carries, if any.
    fn allowed_headers(&self, remaining: u32) -> Option<(HeaderValue, HeaderValue)> {
        self.headers.then(|| (self.policy(), self.state(remaining)))
    }
}

/// Layer limiting the request rate per client with GCRA; state shared by
/// every clone. See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct RateLimitLayer {
    name: String,
    count: u32,
    per: Duration,
    burst: Option<u32>,
    key: KeyBy,
    max_keys: usize,
    headers: bool,
    /// Made on the first `layer` call and shared by every clone of this
    /// layer: axum applies a router's layers again for each request.
    shared: Arc<OnceLock<Arc<Shared>>>,
    /// The rejection counter `/pools/metrics` reports, once registered.
    counter: Option<Arc<AtomicU64>>,
    #[cfg(feature = "redis")]
    distributed: Option<(crate::PoolManager, String)>,
    on_error: FailPolicy,
}

/// What a Redis-backed limiter does when Redis cannot answer.
///
/// ```
/// let policy = axum_pools::layer::FailPolicy::Open;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPolicy {
    /// Let the request through (logged and counted).
    Open,
    /// Refuse it with 503 (logged and counted).
    Closed,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.name)
            .field("count", &self.count)
            .field("per", &self.per)
            .field("burst", &self.burst)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// `count` requests per `per` for each client (key: the peer IP), with
    /// bursts of `count`.
    ///
    /// # Panics
    ///
    /// When `count` is 0 or `per` is zero: a limit that allows nothing is a
    /// setup mistake.
    ///
    /// ```
    /// let layer = axum_pools::layer::RateLimitLayer::new(100, std::time::Duration::from_secs(60));
    /// ```
    pub fn new(count: u32, per: Duration) -> Self {
        assert!(count > 0, "RateLimitLayer::new: count must be at least 1");
        assert!(
            !per.is_zero(),
            "RateLimitLayer::new: per must be greater than zero"
        );
        Self {
            name: "default".to_owned(),
            count,
            per,
            burst: None,
            key: KeyBy::PeerIp,
            max_keys: 100_000,
            headers: true,
            shared: Arc::default(),
            counter: None,
            #[cfg(feature = "redis")]
            distributed: None,
            on_error: FailPolicy::Open,
        }
    }

    /// Reports this limiter's rejections in `manager`'s `/pools/metrics` as
    /// `axum_pools_rate_limited_total{limiter="<name>"}`.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let layer = axum_pools::layer::RateLimitLayer::new(10, std::time::Duration::from_secs(1))
    ///     .metrics(&manager, "api");
    /// # }
    /// ```
    /// The limiter is then called `name` too (see [`name`](Self::name)).
    pub fn metrics(mut self, manager: &crate::PoolManager, name: &str) -> Self {
        self.counter = Some(manager.rate_limiter_counter(name));
        self.name(name)
    }

    /// The limiter's name (default `default`): its policy's name in the
    /// `RateLimit-Policy` and `RateLimit` headers, the prefix of its keys in
    /// a shared store (so limiters with other names or quotas on one Redis
    /// never share a budget), and in its log lines.
    ///
    /// # Panics
    ///
    /// When `name` is empty or has characters other than ASCII letters,
    /// digits, `_`, `-` and `.` (it goes into a header as is).
    ///
    /// ```
    /// let search = axum_pools::layer::RateLimitLayer::new(10, std::time::Duration::from_secs(1))
    ///     .name("search");
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
            "RateLimitLayer::name: {name:?} must be ASCII letters, digits, `_`, `-` or `.`"
        );
        self.name = name.to_owned();
        self.changed()
    }

    /// Keeps the limiter's state in Redis, through `manager`'s Redis pool
    /// called `pool` (feature `redis`), so every replica sharing that Redis
    /// shares one limit: one round trip per request, an atomic GCRA in a Lua
    /// script loaded once (`EVALSHA`), on Redis' clock. When Redis does not
    /// answer, `on_error` decides.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use axum_pools::layer::{FailPolicy, RateLimitLayer};
    /// # fn demo(manager: axum_pools::PoolManager) {
    /// let layer = RateLimitLayer::new(100, Duration::from_secs(60))
    ///     .distributed(manager, "cache", FailPolicy::Open);
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn distributed(
        mut self,
        manager: crate::PoolManager,
        pool: impl Into<String>,
        on_error: FailPolicy,
    ) -> Self {
        self.distributed = Some((manager, pool.into()));
        self.on_error = on_error;
        self.changed()
    }

    /// A builder method changed the config: the limiter is made anew.
    fn changed(mut self) -> Self {
        self.shared = Arc::default();
        self
    }

    /// Requests a client may make at once before the rate applies.
    ///
    /// Default: `count`.
    ///
    /// ```
    /// let layer = axum_pools::layer::RateLimitLayer::new(1, std::time::Duration::from_secs(1)).burst(5);
    /// ```
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst.max(1));
        self.changed()
    }

    /// What one client is.
    ///
    /// Default: [`KeyBy::PeerIp`].
    ///
    /// ```
    /// use axum_pools::layer::{KeyBy, RateLimitLayer};
    /// let layer = RateLimitLayer::new(5, std::time::Duration::from_secs(1))
    ///     .key(KeyBy::Header(axum::http::HeaderName::from_static("x-api-key")));
    /// ```
    pub fn key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self.changed()
    }

    /// Keys held before fresh ones are dropped.
    ///
    /// Default: `100_000`.
    ///
    /// ```
    /// let layer = axum_pools::layer::RateLimitLayer::new(5, std::time::Duration::from_secs(1)).max_keys(10_000);
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self.changed()
    }

    /// Whether every response carries `RateLimit-Policy` and `RateLimit`
    /// (429s always carry `Retry-After`).
    ///
    /// Default: `true`.
    ///
    /// ```
    /// let layer = axum_pools::layer::RateLimitLayer::new(5, std::time::Duration::from_secs(1)).headers(false);
    /// ```
    pub fn headers(mut self, on: bool) -> Self {
        self.headers = on;
        self.changed()
    }

    fn build(&self) -> Arc<Shared> {
        let burst = self.burst.unwrap_or(self.count);
        let per_cell = (self.per / self.count).max(Duration::from_nanos(1));
        let local = || Box::new(Local::new(burst, per_cell, self.max_keys)) as Box<dyn Store>;
        #[cfg(feature = "redis")]
        let store = match &self.distributed {
            Some((manager, pool)) => Box::new(redis::RedisStore::new(
                manager.clone(),
                pool.clone(),
                &self.name,
                burst,
                per_cell,
            )) as Box<dyn Store>,
            None => local(),
        };
        #[cfg(not(feature = "redis"))]
        let store = local();
        Arc::new(Shared {
            store,
            name: self.name.clone(),
            key: self.key.clone(),
            reports: report::Reports::default(),
            burst,
            per_cell,
            headers: self.headers,
            on_error: self.on_error,
            store_errors: AtomicU64::new(0),
            rejected: self.counter.clone().unwrap_or_default(),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    /// Every service this layer makes shares one limiter: layering a router
    /// once limits it once, however axum clones it.
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            shared: self.shared.get_or_init(|| self.build()).clone(),
        }
    }
}

/// The service of [`RateLimitLayer`]; clones share the limiter. See the
/// [module docs](self).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("keys", &self.shared.store.keys())
            .field("rejected", &self.shared.rejected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S> RateLimit<S> {
    /// Requests refused so far.
    ///
    /// ```
    /// # use axum_pools::layer::RateLimitLayer;
    /// # use tower_layer::Layer;
    /// # let svc = RateLimitLayer::new(1, std::time::Duration::from_secs(1)).layer(());
    /// assert_eq!(svc.rejected(), 0);
    /// ```
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Times a shared store (Redis, feature `redis`) could not decide; always
    /// 0 for the in-process limiter.
    ///
    /// ```
    /// # use axum_pools::layer::RateLimitLayer;
    /// # use tower_layer::Layer;
    /// # let svc = RateLimitLayer::new(1, std::time::Duration::from_secs(1)).layer(());
    /// assert_eq!(svc.backend_errors(), 0);
    /// ```
    #[must_use]
    pub fn backend_errors(&self) -> u64 {
        self.shared.store_errors.load(Ordering::Relaxed)
    }

    /// Clients (keys) whose state is held now.
    ///
    /// ```
    /// # use axum_pools::layer::RateLimitLayer;
    /// # use tower_layer::Layer;
    /// # let svc = RateLimitLayer::new(1, std::time::Duration::from_secs(1)).layer(());
    /// assert_eq!(svc.keys(), 0);
    /// ```
    #[must_use]
    pub fn keys(&self) -> usize {
        self.shared.store.keys()
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let (parts, body) = req.into_parts();
        let key = shared.key.key(&parts);
        if matches!(key, keys::Key::Unknown) && shared.key.by_peer() {
            shared.reports.no_peer(&shared.name);
        }
        let req = Request::from_parts(parts, body);
        match shared.store.check(key) {
            Check::Decided(Decision::Allowed { remaining }) => {
                RateLimitFuture::allowed(self.inner.call(req), shared.allowed_headers(remaining))
            }
            Check::Decided(Decision::Limited { wait }) => {
                RateLimitFuture::limited(shared.limited(wait))
            }
            Check::Asking(answer) => {
                // The ready service goes into the future; a clone stays here.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                RateLimitFuture::boxed(Box::pin(asked(shared.clone(), answer, inner, req)))
            }
        }
    }
}

/// Serves `req` by a shared store's `answer`; `on_error` decides when there
/// is none.
async fn asked<S, B>(
    shared: Arc<Shared>,
    answer: BoxFuture<'static, Result<Decision, String>>,
    mut inner: S,
    req: Request<B>,
) -> Result<Response, S::Error>
where
    S: Service<Request<B>, Response = Response>,
{
    match answer.await {
        Ok(Decision::Allowed { remaining }) => {
            let mut response = inner.call(req).await?;
            if let Some((policy, state)) = shared.allowed_headers(remaining) {
                let h = response.headers_mut();
                h.insert("ratelimit-policy", policy);
                h.insert("ratelimit", state);
            }
            Ok(response)
        }
        Ok(Decision::Limited { wait }) => Ok(shared.limited(wait)),
        Err(error) => {
            shared.store_errors.fetch_add(1, Ordering::Relaxed);
            shared
                .reports
                .store_failed(&shared.name, shared.on_error, &error);
            match shared.on_error {
                FailPolicy::Open => inner.call(req).await,
                FailPolicy::Closed => Ok(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate-limiter-unavailable",
                    "Rate limiter unavailable",
                    "the rate limiter cannot decide; retry later".to_owned(),
                )
                .retry_after(Some(Duration::from_secs(1)))
                .into_response()),
            }
        }
    }
}

impl Shared {
    /// The 429 answer, counted.
    fn limited(&self, wait: Duration) -> Response {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let secs = retry_after_secs(wait);
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("the rate limit is exhausted; retry in {secs}s"),
        )
        .retry_after(Some(wait))
        .into_response();
        let h = response.headers_mut();
        if self.headers {
            h.insert("ratelimit-policy", self.policy());
            h.insert("ratelimit", self.state(0));
        }
        response
    }
}

#[cfg(feature = "redis")]
mod redis;

pin_project! {
    /// The response future of [`RateLimit`].
    #[must_use = "futures do nothing unless polled"]
    pub struct RateLimitFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Allowed {
            #[pin]
            future: F,
            headers: Option<(HeaderValue, HeaderValue)>,
        },
        Limited { response: Option<Response> },
        Boxed { future: futures_util::future::BoxFuture<'static, Result<Response, E>> },
    }
}

impl<F, E> RateLimitFuture<F, E> {
    fn boxed(future: futures_util::future::BoxFuture<'static, Result<Response, E>>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }

    fn allowed(future: F, headers: Option<(HeaderValue, HeaderValue)>) -> Self {
        Self {
            state: State::Allowed { future, headers },
        }
    }

    fn limited(response: Response) -> Self {
        Self {
            state: State::Limited {
                response: Some(response),
            },
        }
    }
}

impl<F, E> fmt::Debug for RateLimitFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for RateLimitFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Allowed { future, headers } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some((policy, state)) = headers.take() {
                    let h = response.headers_mut();
                    h.insert("ratelimit-policy", policy);
                    h.insert("ratelimit", state);
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Limited { response } => Poll::Ready(Ok(response
                .take()
                .expect("RateLimitFuture polled after completion"))),
            StateProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
