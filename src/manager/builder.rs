//! [`PoolManagerBuilder`]: registration, validation, and the concurrent
//! build that closes what it opened when one pool fails.
//!
//! Each backend adds its own registration method (`database`, `redis`,
//! `http`) in its folder; they all end in [`PoolManagerBuilder::register`].

use std::{
    any::TypeId,
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::future::{BoxFuture, join_all};

use super::{Inner, PoolManager, tasks::spawn_maintenance};
use crate::{
    config::{ConfigError, PoolConfig},
    error::{BackendError, PoolError},
    health::HealthStatus,
    pool::{Backend, ErasedPool, Pool},
    redact::Redactor,
    secret::ConnectionUrl,
};

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
    pub(super) fn new() -> Self {
        Self {
            entries: Vec::new(),
            requirements: Vec::new(),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// `backend` is `Err` when the URL could not even be parsed; the build
    /// then fails naming the pool.
    pub(crate) fn register<B: Backend>(
        mut self,
        name: String,
        backend: Result<B, String>,
        url: &ConnectionUrl,
        config: PoolConfig,
        hooks: crate::Hooks<B::Connection>,
    ) -> Self {
        let redactor = Redactor::new(url);
        let (pool_name, pool_config) = (name.clone(), config.clone());
        let required = config.required;
        // A refused URL without a scheme is not shown, not even redacted;
        // the error names the field, the reason and the fix.
        let (shown, backend) = match backend {
            Ok(backend) => (redactor.url().to_owned(), Ok(backend)),
            Err(e) => {
                let hint = crate::redact::encoding_hint(url)
                    .map(|hint| format!("; {hint}"))
                    .unwrap_or_default();
                (crate::redact::refused(url), Err(format!("{e}{hint}")))
            }
        };
        self.entries.push(Entry {
            name,
            url: shown,
            type_id: TypeId::of::<B>(),
            config,
            init: Box::new(move || {
                Box::pin(async move {
                    let backend = backend.map_err(|e| BackendError::new(redactor.scrub(&e)))?;
                    let pool = Pool::new(pool_name, backend, pool_config, redactor, hooks);
                    // A database the app cannot run without fails the
                    // build, with what the server said; an optional pool
                    // (`required(false)`) and an HTTP upstream (which may
                    // come later) start unhealthy instead.
                    let must = required && pool.backend().required_at_build();
                    if let Err(e) = pool.warm_up().await {
                        if must {
                            return Err(e);
                        }
                        tracing::warn!(pool = %pool.shared().name, error = %e, "upstream unreachable at build; the pool starts unhealthy");
                    }
                    // Connecting is not always logging in (Redis answers
                    // NOAUTH only to the first command): one real round trip.
                    let health = pool.check_health().await;
                    if must && health.status == HealthStatus::Fail {
                        let why = health.error.unwrap_or_else(|| "failed".to_owned());
                        return Err(BackendError::new(format!("the first health check at build: {why}")));
                    }
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
