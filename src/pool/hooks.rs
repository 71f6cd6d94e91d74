//! Lifecycle hooks of a pool: code of the application that runs when a
//! connection is opened, before each lease, and after each release.

use std::{fmt, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;

/// An async hook on a connection; an `Err` (a message) rejects it.
pub type ConnectionHook<C> =
    Arc<dyn for<'a> Fn(&'a mut C) -> BoxFuture<'a, Result<(), String>> + Send + Sync>;

/// A hook told about every returned lease.
pub type ReleaseHook = Arc<dyn Fn(&Released<'_>) + Send + Sync>;

/// A hook told about every lease handed out.
pub type LeaseHook = Arc<dyn Fn(&Leased<'_>) + Send + Sync>;

/// What [`Hooks::after_lease`] is told.
#[derive(Debug)]
#[non_exhaustive]
pub struct Leased<'a> {
    /// The pool.
    pub pool: &'a str,
    /// How long the acquisition waited (zero when a connection was free).
    pub waited: Duration,
}

/// What [`Hooks::after_release`] is told.
#[derive(Debug)]
#[non_exhaustive]
pub struct Released<'a> {
    /// The pool.
    pub pool: &'a str,
    /// How long the lease was held: from when it was handed out (after any
    /// wait) to its return.
    pub held: Duration,
}

/// Lifecycle hooks for a pool of connections `C`, given to
/// [`PoolManagerBuilder::database_with_hooks`](crate::PoolManagerBuilder::database_with_hooks).
///
/// - `after_create` (async) runs once on every new connection before its
///   first use (session settings, prepared statements); an error discards the
///   connection and fails that acquisition as a backend error.
/// - `before_lease` (async) runs before each lease is handed out; an error
///   discards the connection and the acquisition takes another.
/// - `after_lease` (sync) is told about every lease handed out and its wait.
/// - `after_release` (sync: it runs in `Drop`) is told about every returned
///   lease and how long it was held.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use axum_pools::{Hooks, SqliteConnection};
/// use diesel_async::SimpleAsyncConnection;
///
/// let leases = Arc::new(AtomicUsize::new(0));
/// let counted = leases.clone();
/// let hooks = Hooks::<SqliteConnection>::new()
///     .after_create(|conn| {
///         Box::pin(async move {
///             conn.batch_execute("PRAGMA cache_size = -8000").await.map_err(|e| e.to_string())
///         })
///     })
///     .after_release(move |released| {
///         counted.fetch_add(1, Ordering::Relaxed);
///         tracing::debug!(pool = released.pool, held = ?released.held, "returned");
///     });
/// ```
pub struct Hooks<C> {
    pub(crate) after_create: Option<ConnectionHook<C>>,
    pub(crate) before_lease: Option<ConnectionHook<C>>,
    pub(crate) after_lease: Option<LeaseHook>,
    pub(crate) after_release: Option<ReleaseHook>,
}

impl<C> Default for Hooks<C> {
    fn default() -> Self {
        Self {
            after_create: None,
            before_lease: None,
            after_lease: None,
            after_release: None,
        }
    }
}

impl<C> Clone for Hooks<C> {
    fn clone(&self) -> Self {
        Self {
            after_create: self.after_create.clone(),
            before_lease: self.before_lease.clone(),
            after_lease: self.after_lease.clone(),
            after_release: self.after_release.clone(),
        }
    }
}

impl<C> fmt::Debug for Hooks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("after_create", &self.after_create.is_some())
            .field("before_lease", &self.before_lease.is_some())
            .field("after_lease", &self.after_lease.is_some())
            .field("after_release", &self.after_release.is_some())
            .finish()
    }
}

impl<C> Hooks<C> {
    /// No hooks.
    ///
    /// ```
    /// let hooks = axum_pools::Hooks::<()>::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `hook` on every new connection before its first use.
    ///
    /// ```
    /// let hooks = axum_pools::Hooks::<u32>::new().after_create(|n| Box::pin(async move {
    ///     *n += 1;
    ///     Ok(())
    /// }));
    /// ```
    #[must_use]
    pub fn after_create<F>(mut self, hook: F) -> Self
    where
        F: for<'a> Fn(&'a mut C) -> BoxFuture<'a, Result<(), String>> + Send + Sync + 'static,
    {
        self.after_create = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` before each lease is handed out.
    ///
    /// ```
    /// let hooks = axum_pools::Hooks::<u32>::new().before_lease(|n| Box::pin(async move {
    ///     if *n > 100 { Err("too old".into()) } else { Ok(()) }
    /// }));
    /// ```
    #[must_use]
    pub fn before_lease<F>(mut self, hook: F) -> Self
    where
        F: for<'a> Fn(&'a mut C) -> BoxFuture<'a, Result<(), String>> + Send + Sync + 'static,
    {
        self.before_lease = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` after every lease is handed out.
    ///
    /// ```
    /// let hooks = axum_pools::Hooks::<u32>::new().after_lease(|l| println!("{} waited {:?}", l.pool, l.waited));
    /// ```
    #[must_use]
    pub fn after_lease(mut self, hook: impl Fn(&Leased<'_>) + Send + Sync + 'static) -> Self {
        self.after_lease = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` after every lease is returned.
    ///
    /// ```
    /// let hooks = axum_pools::Hooks::<u32>::new().after_release(|r| println!("{} held {:?}", r.pool, r.held));
    /// ```
    #[must_use]
    pub fn after_release(mut self, hook: impl Fn(&Released<'_>) + Send + Sync + 'static) -> Self {
        self.after_release = Some(Arc::new(hook));
        self
    }
}
