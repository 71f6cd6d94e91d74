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
    fmt,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::future::join_all;
use tokio::{task::AbortHandle, time::Instant};

mod builder;
mod tasks;

pub use self::builder::PoolManagerBuilder;
use self::tasks::annotate;
use crate::{
    breaker::Breaker,
    error::PoolError,
    health::{HealthReport, PoolHealth},
    pool::{Backend, ErasedPool, Pool},
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
        PoolManagerBuilder::new()
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

    /// Drains every pool: new acquisitions and requests already waiting
    /// (for a free connection, or for one being opened for them) are
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

    fn breaker(&self, pool: &str) -> Result<&Breaker, PoolError> {
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
