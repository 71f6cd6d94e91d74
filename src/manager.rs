//! [`PoolManager`]: the registry of named pools, their build (validation,
//! concurrent warm-up, one error naming the failing pool), background health
//! checks and maintenance, and the draining shutdown.
//!
//! ```no_run
//! use axum::Router;
//! use axum_pools::{DbConfig, PoolLayer, PoolManager, SqliteConnection};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PoolManager::builder()
//!     .database::<SqliteConnection>("notes", DbConfig::from_url("notes.db").max_size(4))
//!     .build()
//!     .await?;
//!
//! let app: Router = Router::new()
//!     .merge(manager.router())
//!     .layer(PoolLayer::new(manager.clone()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(manager.drain_on(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```

use std::{
    any::TypeId,
    collections::HashSet,
    fmt,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::future::{BoxFuture, join_all};
use tokio::{task::AbortHandle, time::Instant};

use crate::{
    backend::diesel::{DbConnection, Diesel},
    config::{ConfigError, DbConfig, PoolConfig},
    error::{BackendError, PoolError},
    health::{HealthReport, PoolHealth},
    pool::{Backend, ErasedPool, Pool},
    redact::Redactor,
    stats::StatsSnapshot,
};

/// A cheap-to-clone handle on every pool of the service.
///
/// Build one with [`PoolManager::builder`]. Put it on the router with
/// [`PoolLayer`](crate::PoolLayer) so extractors find it, serve its
/// [`router`](PoolManager::router), and shut down with
/// [`drain_on`](PoolManager::drain_on). It can also be axum state
/// (`State<PoolManager>`), with [`DbConn::acquire`](crate::DbConn::acquire)
/// taking a lease from it.
///
/// See the [module docs](self) for an end-to-end example.
#[derive(Clone)]
pub struct PoolManager {
    inner: Arc<Inner>,
}

struct Inner {
    /// Registration order. Lookups scan it: a service has a handful of
    /// pools, and a scan beats hashing on the lease path.
    pools: Vec<Arc<dyn ErasedPool>>,
    /// The backend type of each pool, parallel to `pools`.
    types: Vec<TypeId>,
    tasks: Mutex<Vec<AbortHandle>>,
    drained: tokio::sync::OnceCell<DrainReport>,
    drain_timeout: Duration,
    /// Rejection counters of rate limiters reporting to `/pools/metrics`.
    rate_limiters: Mutex<Vec<(String, Arc<std::sync::atomic::AtomicU64>)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        abort_all(&self.tasks);
    }
}

fn abort_all(tasks: &Mutex<Vec<AbortHandle>>) {
    for task in tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        task.abort();
    }
}

/// What [`PoolManager::drain`] did.
///
/// ```no_run
/// # async fn demo(manager: axum_pools::PoolManager) {
/// let report = manager.drain(std::time::Duration::from_secs(10)).await;
/// assert_eq!(report.outstanding, 0, "every lease came back in time");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// How long draining took.
    pub elapsed: Duration,
    /// Leases still held when the deadline passed (0 when all returned).
    pub outstanding: u64,
}

impl PoolManager {
    /// Starts registering pools.
    ///
    /// ```
    /// let builder = axum_pools::PoolManager::builder();
    /// ```
    pub fn builder() -> PoolManagerBuilder {
        PoolManagerBuilder {
            entries: Vec::new(),
            requirements: Vec::new(),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// The registered pool names, in registration order.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// assert_eq!(manager.pool_names(), ["primary", "replica"]);
    /// # }
    /// ```
    #[must_use]
    pub fn pool_names(&self) -> Vec<&str> {
        self.inner
            .pools
            .iter()
            .map(|p| p.shared().name.as_str())
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.pool_names().into_iter().map(str::to_owned).collect()
    }

    /// Statistics of every pool, in registration order.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// let total: u64 = manager.stats().iter().map(|s| s.timeouts).sum();
    /// # }
    /// ```
    #[must_use]
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.inner.pools.iter().map(|p| p.snapshot()).collect()
    }

    /// Statistics of the pool called `name`.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// let leased = manager.stats_of("primary").map(|s| s.active);
    /// # }
    /// ```
    #[must_use]
    pub fn stats_of(&self, name: &str) -> Option<StatsSnapshot> {
        self.erased(name).map(|p| p.snapshot())
    }

    /// The latest health of every pool, from the periodic checks' cache
    /// (pools with periodic checks off are checked on demand, at most once a
    /// second).
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// let ok = manager.health().await.status != axum_pools::HealthStatus::Fail;
    /// # }
    /// ```
    pub async fn health(&self) -> HealthReport {
        let pools = self.inner.pools.iter();
        HealthReport::from_pools(
            join_all(pools.map(|p| async move { annotate(p, p.health().await) })).await,
        )
    }

    /// The latest health of the pool called `name`.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// let primary = manager.health_of("primary").await;
    /// # }
    /// ```
    pub async fn health_of(&self, name: &str) -> Option<PoolHealth> {
        match self.erased(name) {
            Some(p) => Some(annotate(p, p.health().await)),
            None => None,
        }
    }

    /// Checks every pool now, concurrently, bypassing the cache (and
    /// refreshing it).
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// let fresh = manager.check_health().await;
    /// # }
    /// ```
    pub async fn check_health(&self) -> HealthReport {
        let pools = self.inner.pools.iter();
        HealthReport::from_pools(
            join_all(pools.map(|p| async move { annotate(p, p.check_health().await) })).await,
        )
    }

    /// Whether [`drain`](Self::drain) has started.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// assert!(!manager.is_draining());
    /// # }
    /// ```
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.inner.pools.iter().any(|p| p.shared().is_draining())
    }

    /// Drains every pool: new acquisitions and requests already waiting are
    /// refused at once (503 "shutting down"); leases in use may finish until
    /// `timeout`; then the pools close and background tasks stop.
    ///
    /// Idempotent: a second call (or a concurrent one) waits for the first
    /// and returns its report.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager) {
    /// let report = manager.drain(std::time::Duration::from_secs(10)).await;
    /// println!("drained in {:?}, {} leases abandoned", report.elapsed, report.outstanding);
    /// # }
    /// ```
    pub async fn drain(&self, timeout: Duration) -> DrainReport {
        self.inner
            .drained
            .get_or_init(|| self.drain_now(timeout))
            .await
            .clone()
    }

    async fn drain_now(&self, timeout: Duration) -> DrainReport {
        let start = Instant::now();
        let deadline = start + timeout;
        tracing::info!(pools = self.inner.pools.len(), "draining pools");
        for pool in &self.inner.pools {
            pool.begin_drain();
        }
        let outstanding: u64 = join_all(self.inner.pools.iter().map(|p| p.wait_returned(deadline)))
            .await
            .into_iter()
            .sum();
        for pool in &self.inner.pools {
            pool.close();
        }
        abort_all(&self.inner.tasks);
        let report = DrainReport {
            elapsed: start.elapsed(),
            outstanding,
        };
        if outstanding > 0 {
            tracing::warn!(outstanding, "drain deadline passed with leases still held");
        }
        tracing::info!(elapsed = ?report.elapsed, "pools drained and closed");
        report
    }

    /// A future for `axum::serve(..).with_graceful_shutdown(..)`: waits for
    /// `signal`, then [`drain`](Self::drain)s with the builder's
    /// `drain_timeout` (default 30 s) and completes.
    ///
    /// While it drains, handlers that ask for a connection get 503
    /// "shutting down" and requests holding one finish normally.
    ///
    /// ```no_run
    /// # async fn demo(manager: axum_pools::PoolManager, app: axum::Router, listener: tokio::net::TcpListener) {
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(manager.drain_on(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     }))
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub fn drain_on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let manager = self.clone();
        async move {
            signal.await;
            manager.drain(manager.inner.drain_timeout).await;
        }
    }

    fn breaker(&self, pool: &str) -> Result<&crate::pool::breaker::Breaker, PoolError> {
        self.erased(pool)
            .map(|p| &p.shared().breaker)
            .ok_or_else(|| PoolError::UnknownPool {
                requested: pool.to_owned(),
                registered: self.names(),
            })
    }

    /// Operator control: opens `pool`'s circuit breaker until
    /// [`reset_breaker`](Self::reset_breaker); every acquisition is refused
    /// with 503 meanwhile.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) -> Result<(), axum_pools::PoolError> {
    /// manager.force_open("primary")?; // maintenance window
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::UnknownPool`].
    pub fn force_open(&self, pool: &str) -> Result<(), PoolError> {
        self.breaker(pool).map(|b| b.force_open())
    }

    /// Operator control: keeps `pool`'s breaker closed, whatever fails,
    /// until [`reset_breaker`](Self::reset_breaker).
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) -> Result<(), axum_pools::PoolError> {
    /// manager.force_closed("primary")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::UnknownPool`].
    pub fn force_closed(&self, pool: &str) -> Result<(), PoolError> {
        self.breaker(pool).map(|b| b.force_closed())
    }

    /// Operator control: closes `pool`'s breaker, clears its counts, and
    /// lets it open and close on its own again.
    ///
    /// ```no_run
    /// # fn demo(manager: axum_pools::PoolManager) -> Result<(), axum_pools::PoolError> {
    /// manager.reset_breaker("primary")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::UnknownPool`].
    pub fn reset_breaker(&self, pool: &str) -> Result<(), PoolError> {
        self.breaker(pool).map(|b| b.reset())
    }

    /// The rejection counter of the rate limiter called `name` (made on
    /// first use), reported by `/pools/metrics`.
    pub(crate) fn rate_limiter_counter(&self, name: &str) -> Arc<std::sync::atomic::AtomicU64> {
        let mut limiters = self
            .inner
            .rate_limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, counter)) = limiters.iter().find(|(n, _)| n == name) {
            return counter.clone();
        }
        let counter = Arc::default();
        limiters.push((name.to_owned(), Arc::clone(&counter)));
        counter
    }

    /// `(name, rejections)` of every rate limiter reporting here.
    pub(crate) fn rate_limiters(&self) -> Vec<(String, u64)> {
        self.inner
            .rate_limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, c)| (n.clone(), c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn erased_pools(&self) -> &[Arc<dyn ErasedPool>] {
        &self.inner.pools
    }

    fn erased(&self, name: &str) -> Option<&Arc<dyn ErasedPool>> {
        self.inner.pools.iter().find(|p| p.shared().name == name)
    }

    /// The pool of backend `B`: the one called `name`, or without a name the
    /// only one of that backend.
    pub(crate) fn pool<B: Backend>(
        &self,
        name: Option<&str>,
        type_name: &'static str,
    ) -> Result<&Pool<B>, PoolError> {
        let pool = self.erased_for::<B>(name, type_name)?;
        Ok(pool
            .as_any()
            .downcast_ref::<Pool<B>>()
            .expect("erased_for checked the type"))
    }

    /// [`pool`](Self::pool), as the shared handle (for extractors that keep
    /// the pool beyond one lease).
    pub(crate) fn erased_for<B: Backend>(
        &self,
        name: Option<&str>,
        type_name: &'static str,
    ) -> Result<&Arc<dyn ErasedPool>, PoolError> {
        let pools = &self.inner.pools;
        let pool = match name {
            Some(name) => self.erased(name).ok_or_else(|| PoolError::UnknownPool {
                requested: name.to_owned(),
                registered: self.names(),
            })?,
            None => {
                let wanted = TypeId::of::<B>();
                let mut of_type = pools
                    .iter()
                    .zip(&self.inner.types)
                    .filter(|(_, t)| **t == wanted)
                    .map(|(p, _)| p);
                match (of_type.next(), of_type.next()) {
                    (Some(one), None) => one,
                    (Some(_), Some(_)) => {
                        return Err(PoolError::AmbiguousPool {
                            type_name,
                            candidates: pools
                                .iter()
                                .zip(&self.inner.types)
                                .filter(|(_, t)| **t == wanted)
                                .map(|(p, _)| p.shared().name.clone())
                                .collect(),
                        });
                    }
                    (None, _) => {
                        return Err(PoolError::NoPoolForType {
                            type_name,
                            registered: self.names(),
                        });
                    }
                }
            }
        };
        if pool.as_any().is::<Pool<B>>() {
            Ok(pool)
        } else {
            Err(PoolError::WrongPoolType {
                pool: pool.shared().name.clone(),
                requested: type_name,
                actual: pool.shared().kind,
            })
        }
    }
}

impl fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolManager")
            .field("pools", &self.pool_names())
            .field("draining", &self.is_draining())
            .finish()
    }
}

type Init =
    Box<dyn FnOnce() -> BoxFuture<'static, Result<Arc<dyn ErasedPool>, BackendError>> + Send>;

struct Entry {
    name: String,
    url: String,
    type_id: TypeId,
    config: PoolConfig,
    init: Init,
}

/// A check that a pool an extractor names exists ([`PoolManagerBuilder::require`]).
type Requirement = fn(&PoolManager) -> Result<(), PoolError>;

/// Registers named pools, then [`build`](Self::build)s the manager.
///
/// ```no_run
/// use axum_pools::{DbConfig, PoolManager, SqliteConnection};
///
/// # async fn demo() -> Result<(), axum_pools::PoolError> {
/// let manager = PoolManager::builder()
///     .database::<SqliteConnection>("notes", DbConfig::from_url("notes.db"))
///     .drain_timeout(std::time::Duration::from_secs(10))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct PoolManagerBuilder {
    entries: Vec<Entry>,
    requirements: Vec<Requirement>,
    drain_timeout: Duration,
}

impl fmt::Debug for PoolManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolManagerBuilder")
            .field(
                "pools",
                &self
                    .entries
                    .iter()
                    .map(|e| (&e.name, &e.url))
                    .collect::<Vec<_>>(),
            )
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl PoolManagerBuilder {
    /// Registers a SQL pool called `name` of connection type `C`
    /// (`AsyncPgConnection`, `AsyncMysqlConnection` or
    /// [`SqliteConnection`](crate::SqliteConnection)).
    ///
    /// ```no_run
    /// use axum_pools::{DbConfig, PoolManager, SqliteConnection};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .database::<SqliteConnection>("notes", DbConfig::from_url("notes.db").max_size(4))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn database<C: DbConnection>(self, name: impl Into<String>, config: DbConfig) -> Self {
        self.database_with_hooks::<C>(name, config, crate::Hooks::new())
    }

    /// [`database`](Self::database) with [`Hooks`](crate::Hooks): code run
    /// when a connection is opened, before each lease, after each release.
    ///
    /// ```no_run
    /// use axum_pools::{DbConfig, Hooks, PoolManager, SqliteConnection};
    /// use diesel_async::SimpleAsyncConnection;
    ///
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let hooks = Hooks::<SqliteConnection>::new().after_create(|conn| {
    ///     Box::pin(async move {
    ///         conn.batch_execute("PRAGMA cache_size = -8000").await.map_err(|e| e.to_string())
    ///     })
    /// });
    /// let manager = PoolManager::builder()
    ///     .database_with_hooks::<SqliteConnection>("main", DbConfig::from_url("app.db"), hooks)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn database_with_hooks<C: DbConnection>(
        self,
        name: impl Into<String>,
        config: DbConfig,
        hooks: crate::Hooks<C>,
    ) -> Self {
        let DbConfig { url, pool } = config;
        self.register(
            name.into(),
            Ok(Diesel::<C>::new(url.clone())),
            &url,
            pool,
            hooks,
        )
    }

    /// Registers a Redis pool called `name` (feature `redis`); handlers take
    /// [`RedisConn`](crate::RedisConn).
    ///
    /// ```no_run
    /// use axum_pools::{PoolManager, RedisConfig};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .redis("cache", RedisConfig::from_url("redis://127.0.0.1:6379/0").max_size(16))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(self, name: impl Into<String>, config: crate::config::RedisConfig) -> Self {
        let crate::config::RedisConfig { url, pool } = config;
        self.register(
            name.into(),
            crate::backend::redis::Redis::new(&url),
            &url,
            pool,
            crate::Hooks::new(),
        )
    }

    /// Registers an outbound HTTP pool called `name` (feature `http`);
    /// handlers take [`HttpClient`](crate::HttpClient) with a marker naming it.
    ///
    /// ```no_run
    /// use axum_pools::{HttpConfig, PoolManager};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .http("billing", HttpConfig::new("http://billing.internal:8080").max_size(32))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Unlike a database, an upstream that is down does not fail the build:
    /// its pool starts unhealthy and recovers when the upstream does.
    #[cfg(feature = "http")]
    pub fn http(self, name: impl Into<String>, config: crate::backend::http::HttpConfig) -> Self {
        let url = config.base_url.clone();
        let pool = config.pool.clone();
        self.register(
            name.into(),
            crate::backend::http::Http::new(config),
            &url,
            pool,
            crate::Hooks::new(),
        )
    }

    /// `backend` is `Err` when the URL could not even be parsed; the build
    /// then fails naming the pool.
    fn register<B: Backend>(
        mut self,
        name: String,
        backend: Result<B, String>,
        url: &str,
        config: PoolConfig,
        hooks: crate::Hooks<B::Connection>,
    ) -> Self {
        let redactor = Redactor::from_url(url);
        let (pool_name, pool_config) = (name.clone(), config.clone());
        self.entries.push(Entry {
            name,
            url: redactor.url().to_owned(),
            type_id: TypeId::of::<B>(),
            config,
            init: Box::new(move || {
                Box::pin(async move {
                    let backend = backend.map_err(|e| BackendError::new(redactor.scrub(&e)))?;
                    let pool = Pool::new(pool_name, backend, pool_config, redactor, hooks);
                    if let Err(e) = pool.warm_up().await {
                        if pool.backend().required_at_build() {
                            return Err(e);
                        }
                        tracing::warn!(pool = %pool.shared().name, error = %e, "upstream unreachable at build; the pool starts unhealthy");
                    }
                    pool.check_health().await;
                    Ok(Arc::new(pool) as Arc<dyn ErasedPool>)
                })
            }),
        });
        self
    }

    /// Checks at [`build`](Self::build) that the pool extractor `E` would
    /// lease from exists and is unambiguous (e.g.
    /// `require::<DbConn<AsyncPgConnection, Replica>>()`), so a missing pool
    /// fails the build instead of the first request. See
    /// [`RequiresPool`](crate::extract::RequiresPool).
    ///
    /// ```no_run
    /// use axum_pools::{DbConfig, DbConn, PoolManager, SqliteConnection};
    /// # async fn demo() -> Result<(), axum_pools::PoolError> {
    /// let manager = PoolManager::builder()
    ///     .database::<SqliteConnection>("main", DbConfig::from_url("app.db"))
    ///     .require::<DbConn<SqliteConnection>>()
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn require<E: crate::extract::RequiresPool>(mut self) -> Self {
        self.requirements.push(E::check);
        self
    }

    /// How long [`PoolManager::drain_on`] lets leases in use finish.
    ///
    /// Default: `30s`.
    ///
    /// ```
    /// let b = axum_pools::PoolManager::builder().drain_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Validates every config, then opens every pool concurrently
    /// (`max(min_size, 1)` connections each, plus one health check) and
    /// starts each pool's background task.
    ///
    /// # Errors
    ///
    /// [`PoolError::Config`] naming the pool, field and value;
    /// [`PoolError::Setup`] naming the first pool (in registration order)
    /// that failed to open, with its URL redacted. On error every pool that
    /// did open is closed again.
    pub async fn build(self) -> Result<PoolManager, PoolError> {
        let mut names = HashSet::new();
        for entry in &self.entries {
            if entry.name.is_empty() {
                return Err(
                    ConfigError::new("name", "\"\"", "a pool needs a non-empty name").into(),
                );
            }
            if ["live", "ready"].contains(&entry.name.as_str()) {
                return Err(ConfigError::new(
                    "name",
                    format!("{:?}", entry.name),
                    "is reserved (/pools/health/live and /ready); choose another name",
                )
                .into());
            }
            if !names.insert(entry.name.as_str()) {
                return Err(ConfigError::new(
                    "name",
                    format!("{:?}", entry.name),
                    "is registered twice; give each pool its own name",
                )
                .into());
            }
            entry
                .config
                .validate()
                .map_err(|e| e.for_pool(&entry.name))?;
        }
        let mut types = Vec::with_capacity(self.entries.len());
        let mut labels = Vec::with_capacity(self.entries.len());
        let mut inits = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            types.push(entry.type_id);
            labels.push((entry.name, entry.url));
            inits.push((entry.init)());
        }
        let results = join_all(inits).await;
        let mut pools = Vec::with_capacity(results.len());
        let mut failure = None;
        for ((name, url), result) in labels.into_iter().zip(results) {
            match result {
                Ok(pool) => pools.push(pool),
                Err(source) if failure.is_none() => failure = Some((name, url, source)),
                Err(_) => {}
            }
        }
        if let Some((pool, url, source)) = failure {
            for p in &pools {
                p.close();
            }
            tracing::error!(%pool, %url, error = %source, "pool setup failed; closed the pools already opened");
            return Err(PoolError::Setup { pool, url, source });
        }
        let tasks = pools.iter().map(spawn_maintenance).collect();
        for p in &pools {
            let s = p.shared();
            tracing::info!(pool = %s.name, backend = s.kind, url = %s.redactor.url(), max_size = s.config.max_size, "pool ready");
        }
        let manager = PoolManager {
            inner: Arc::new(Inner {
                pools,
                types,
                tasks: Mutex::new(tasks),
                drained: tokio::sync::OnceCell::new(),
                drain_timeout: self.drain_timeout,
                rate_limiters: Mutex::new(Vec::new()),
            }),
        };
        for check in &self.requirements {
            if let Err(e) = check(&manager) {
                for p in &manager.inner.pools {
                    p.close();
                }
                tracing::error!(error = %e, "a required pool is missing");
                return Err(e);
            }
        }
        Ok(manager)
    }
}

/// Adds what the stats tell to a pool's health: utilization, whether it is
/// required, and `warn` when a passing pool is saturated (every connection
/// busy, or requests waiting).
fn annotate(pool: &Arc<dyn ErasedPool>, mut health: PoolHealth) -> PoolHealth {
    let s = pool.snapshot();
    let used = s.size.saturating_sub(s.idle);
    health.utilization_percent = Some((used as f64 * 1000.0 / s.max_size as f64).round() / 10.0);
    health.required = pool.shared().config.required;
    if health.status == crate::health::HealthStatus::Pass && (s.waiting > 0 || used >= s.max_size) {
        health.status = crate::health::HealthStatus::Warn;
        health.error = Some(format!(
            "saturated: {used} of {} connections in use, {} waiting",
            s.max_size, s.waiting
        ));
    }
    health
}

/// Waits for `interval`'s next tick, or forever when there is none.
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How often the reaper looks: a quarter of the shortest of `idle_timeout`
/// and `max_lifetime`, between 250 ms and 30 s.
fn maintenance_interval(config: &PoolConfig) -> Duration {
    [config.idle_timeout, config.max_lifetime]
        .into_iter()
        .flatten()
        .min()
        .map_or(Duration::from_secs(30), |d| d / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// One task per pool: periodic health checks and maintenance. It holds the
/// pool weakly and ends when the pool is gone or the manager drains.
fn spawn_maintenance(pool: &Arc<dyn ErasedPool>) -> AbortHandle {
    let weak = Arc::downgrade(pool);
    let config = &pool.shared().config;
    let health_every = config.health_check_interval;
    let maintain_every = maintenance_interval(config);
    let rotate_every = pool.shared().breaker.rotation_interval();
    let leak_threshold = config.leak_threshold;
    // Leaks are looked for four times per threshold (at least every 10 ms).
    let leak_every = leak_threshold.map(|t| (t / 4).max(Duration::from_millis(10)));
    // The schedule starts now, not when the task is first polled.
    let start = Instant::now();
    tokio::spawn(async move {
        let mut health = health_every.map(|p| {
            let mut i = tokio::time::interval_at(start + p, p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut maintain = tokio::time::interval_at(start + maintain_every, maintain_every);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rotate = rotate_every.map(|p| tokio::time::interval_at(start + p, p));
        let mut leaks = leak_every.map(|p| tokio::time::interval_at(start + p, p));
        loop {
            enum Job {
                Check,
                Maintain,
                Rotate,
                Leaks,
            }
            let job = tokio::select! {
                () = tick(health.as_mut()) => Job::Check,
                _ = maintain.tick() => Job::Maintain,
                () = tick(rotate.as_mut()) => Job::Rotate,
                () = tick(leaks.as_mut()) => Job::Leaks,
            };
            let Some(pool) = weak.upgrade() else { break };
            if pool.shared().is_draining() {
                break;
            }
            match job {
                Job::Check => {
                    pool.check_health().await;
                }
                Job::Maintain => pool.maintain().await,
                Job::Rotate => pool.shared().breaker.rotate(),
                Job::Leaks => {
                    let shared = pool.shared();
                    if let Some(threshold) = leak_threshold {
                        shared.leaks.scan(&shared.name, threshold);
                    }
                }
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_interval_bounds() {
        let c = PoolConfig::default();
        assert_eq!(maintenance_interval(&c), Duration::from_secs(30));
        let c = c
            .idle_timeout(Some(Duration::from_secs(2)))
            .max_lifetime(None);
        assert_eq!(maintenance_interval(&c), Duration::from_millis(500));
        let c = c.idle_timeout(Some(Duration::from_millis(100)));
        assert_eq!(maintenance_interval(&c), Duration::from_millis(250));
    }
}
