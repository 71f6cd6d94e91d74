//! The pool core shared by every backend: one acquire path (drain check,
//! fast try, bounded wait with load shedding, validation past the bypass
//! window, lifetime retirement, stats), the [`Lease`] guard, health checks
//! and maintenance (reaping and topping up to `min_size`).
//!
//! A backend supplies only how to connect, ping and tell a broken
//! connection ([`Backend`]); everything a pool promises lives here, so it
//! holds for every extractor.

mod backend;
pub(crate) mod clock;
mod erased;
pub(crate) mod hooks;
pub(crate) mod leaks;
pub(crate) mod lease;
mod maintain;
mod managed;
mod round_trip;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use deadpool::managed::{Object, PoolError as DpError, QueueMode, TimeoutType, Timeouts};
use tokio::{sync::Notify, time::Instant};

use self::managed::Managed;
pub(crate) use self::round_trip::RoundTrip;
pub(crate) use self::{backend::Backend, erased::ErasedPool, lease::Lease};
use crate::{
    breaker::{Admission, Breaker},
    config::PoolConfig,
    error::{BackendError, PoolError},
    health::{HealthStatus, PoolHealth},
    redact::Redactor,
    stats::{PoolStats, inc},
};

/// The state of one pool that connections and leases point back to.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    component_type: &'static str,
    pub(crate) config: PoolConfig,
    pub(crate) stats: PoolStats,
    pub(crate) redactor: Redactor,
    pub(crate) breaker: Breaker,
    pub(crate) leaks: leaks::Leaks,
    pub(crate) after_release: Option<hooks::ReleaseHook>,
    after_lease: Option<hooks::LeaseHook>,
    draining: AtomicBool,
    /// Woken when draining starts (waiters give up).
    drain_started: Notify,
    /// Woken when a lease returns while draining.
    lease_returned: Notify,
    /// The latest health result and when it was taken.
    health: Mutex<(PoolHealth, Option<Instant>)>,
    /// Single flight for on-demand health checks.
    checking: tokio::sync::Mutex<()>,
    /// What the backend told about the server at the last passing check.
    server: Mutex<Option<BTreeMap<String, String>>>,
}

impl Shared {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn refuse_draining(&self) -> PoolError {
        inc(&self.stats.rejected_draining);
        PoolError::ShuttingDown {
            pool: self.name.clone(),
        }
    }

    pub(crate) fn cached_health(&self) -> (PoolHealth, Option<Instant>) {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store_health(&self, health: PoolHealth) {
        let mut slot = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if slot.0.status != health.status {
            match health.status {
                HealthStatus::Pass => tracing::info!(pool = %self.name, "pool healthy"),
                _ => tracing::warn!(
                    pool = %self.name,
                    status = ?health.status,
                    error = health.error.as_deref().unwrap_or(""),
                    "pool health changed"
                ),
            }
        }
        *slot = (health, Some(Instant::now()));
    }
}

const NO_WAIT: Timeouts = Timeouts {
    wait: Some(Duration::ZERO),
    create: None,
    recycle: None,
};

/// One pool of one backend.
pub(crate) struct Pool<B: Backend> {
    dp: deadpool::managed::Pool<Managed<B>>,
    shared: Arc<Shared>,
}

impl<B: Backend> Pool<B> {
    pub(crate) fn new(
        name: String,
        backend: B,
        config: PoolConfig,
        redactor: Redactor,
        hooks: hooks::Hooks<B::Connection>,
    ) -> Self {
        let kind = backend.kind();
        let stats = PoolStats::new();
        // The lease is the call, unless the backend reports each call itself.
        let grants = (!B::RECORDS_OUTCOMES).then(|| stats.acquire_wait.clone());
        let breaker = Breaker::counting(config.breaker.clone(), grants).named(&name);
        let shared = Arc::new(Shared {
            health: Mutex::new((PoolHealth::unchecked(&name, kind, B::COMPONENT_TYPE), None)),
            component_type: B::COMPONENT_TYPE,
            name,
            kind,
            stats,
            redactor,
            breaker,
            leaks: leaks::Leaks::default(),
            after_release: hooks.after_release.clone(),
            after_lease: hooks.after_lease.clone(),
            draining: AtomicBool::new(false),
            drain_started: Notify::new(),
            lease_returned: Notify::new(),
            checking: tokio::sync::Mutex::new(()),
            server: Mutex::new(None),
            config,
        });
        let dp = deadpool::managed::Pool::builder(Managed::new(backend, shared.clone(), hooks))
            .max_size(shared.config.max_size)
            // LIFO keeps a few connections hot (no ping needed inside the bypass
            // window) and lets the rest sit idle long enough to be reaped.
            .queue_mode(QueueMode::Lifo)
            // No `.runtime(..)`: `try_idle` relies on deadpool refusing a
            // `create: Some(0)` timeout up front (`NoRuntimeSpecified`)
            // instead of polling the connect once under a zero timeout.
            .build()
            .expect("a pool without deadpool timeouts needs no runtime");
        Self { dp, shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn backend(&self) -> &B {
        &self.dp.manager().backend
    }

    /// The only path to a connection.
    ///
    /// The wait recorded is the time from the first thing the call had to
    /// wait for (a slot, a new connection, a reset, a ping, a hook) until
    /// the connection is ready. A connection that was free and needed none
    /// of these records zero and costs no clock read here (the common case;
    /// see [`clock`] for the one the return costs).
    #[cfg_attr(not(any(feature = "http", feature = "redis")), allow(dead_code))]
    pub(crate) async fn acquire(&self) -> Result<Lease<B>, PoolError> {
        self.acquire_for(None).await
    }

    /// [`acquire`](Self::acquire) on behalf of `route` (method and matched
    /// path), named in leak warnings.
    ///
    /// The common case (an idle connection that needs no round trip) is
    /// decided synchronously in the first poll; everything that may wait
    /// runs in [`acquire_slow`](Self::acquire_slow), boxed, so this future
    /// stays small and has nothing to clean up on the fast path.
    pub(crate) async fn acquire_for(&self, route: Option<Arc<str>>) -> Result<Lease<B>, PoolError> {
        let shared = &*self.shared;
        // Without a subscriber at debug: one atomic load, no span at all
        // (the macro alone would still hand its fields to the `log` bridge).
        let span = if tracing::level_enabled!(tracing::Level::DEBUG) {
            tracing::debug_span!(
                "pool.acquire",
                pool = %shared.name,
                wait_us = tracing::field::Empty,
                outcome = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        if shared.is_draining() {
            return Err(failed(&span, shared.refuse_draining()));
        }
        let admission = shared.breaker.admit();
        if let Admission::Rejected(retry_after) = admission {
            return Err(failed(
                &span,
                PoolError::CircuitOpen {
                    pool: shared.name.clone(),
                    retry_after,
                },
            ));
        }
        // From here until its outcome is reported the admission is held by
        // a guard: an acquisition cancelled or panicking on the way gives a
        // half-open probe's permit back, or the breaker would wait forever
        // for that probe.
        let admitted = Admitted {
            breaker: &shared.breaker,
            admission,
            settled: false,
        };
        // The slow path checks these again, as it does for every
        // connection it gets; keep the two in step.
        let first = match self.try_idle() {
            Ok((obj, now))
                if !obj.expired(now)
                    && !self.backend().needs_reset(&obj.conn)
                    && now.saturating_duration_since(obj.since)
                        < shared.config.alive_bypass_window
                    && self.dp.manager().hooks.before_lease.is_none() =>
            {
                return Ok(self.grant(obj, now, None, admitted, route, &span));
            }
            first => first,
        };
        Box::pin(self.acquire_slow(admitted, first, route, span)).await
    }

    /// Whatever may wait: a slot, a new connection, a reset, a ping, a
    /// hook, all within one deadline, `acquire_timeout` after the first
    /// wait (a ping is also bounded by `validation_timeout`). `first` is
    /// what the fast path got from deadpool.
    async fn acquire_slow(
        &self,
        mut admitted: Admitted<'_>,
        first: Result<(Object<Managed<B>>, Instant), DpError<BackendError>>,
        route: Option<Arc<str>>,
        span: tracing::Span,
    ) -> Result<Lease<B>, PoolError> {
        let shared = &*self.shared;
        // When the lease path first had to wait for anything, on tokio's
        // clock.
        let mut started: Option<Instant> = None;
        let limit = shared.config.acquire_timeout;
        let mut first = Some(first);
        loop {
            let attempt = first.take().unwrap_or_else(|| self.try_idle());
            let (mut obj, now) = match attempt {
                Ok(got) => got,
                Err(e) => {
                    let start = *started.get_or_insert_with(Instant::now);
                    let deadline = start + limit;
                    // Boxed: these futures are large and rarely needed.
                    let got = match e {
                        DpError::Timeout(TimeoutType::Wait) => {
                            Box::pin(self.wait(start, deadline)).await
                        }
                        DpError::NoRuntimeSpecified => {
                            Box::pin(self.open_new(start, deadline)).await
                        }
                        e => Err(self.map_error(e)),
                    };
                    match got {
                        Ok(obj) => (obj, clock::now()),
                        Err(e) => return Err(failed(&span, self.refused(e, &mut admitted))),
                    }
                }
            };
            if obj.expired(now) {
                drop(Object::take(obj));
                continue;
            }
            // Each round trip below marks the connection in doubt until it
            // is seen through: cancelled there, it is discarded at recycle.
            let reset = self.backend().needs_reset(&obj.conn);
            if reset {
                let start = *started.get_or_insert_with(Instant::now);
                let reset = Box::pin(self.dp.manager().reset(&mut obj));
                match tokio::time::timeout_at(start + limit, reset).await {
                    Ok(true) => {}
                    cut => {
                        drop(Object::take(obj));
                        if cut.is_err() {
                            let e = self.timed_out(start);
                            return Err(failed(&span, self.refused(e, &mut admitted)));
                        }
                        continue;
                    }
                }
            }
            // Opened for this acquisition: just proven alive, and a step that
            // fails on it ends the acquisition (no storm of new connections).
            let fresh = Object::metrics(&obj).recycle_count == 0;
            // A reset that went through proved the connection alive.
            if !reset
                && !fresh
                && now.saturating_duration_since(obj.since) >= shared.config.alive_bypass_window
            {
                let start = *started.get_or_insert_with(Instant::now);
                inc(&shared.stats.validations);
                obj.in_doubt = true;
                let ping = self.backend().ping(&mut obj.conn);
                let bound = (Instant::now() + shared.config.validation_timeout).min(start + limit);
                let checked = Box::pin(tokio::time::timeout_at(bound, ping));
                if !matches!(checked.await, Ok(Ok(()))) {
                    inc(&shared.stats.broken);
                    tracing::debug!(pool = %shared.name, "idle connection failed validation; discarded");
                    drop(Object::take(obj));
                    if Instant::now() >= start + limit {
                        let e = self.timed_out(start);
                        return Err(failed(&span, self.refused(e, &mut admitted)));
                    }
                    continue;
                }
                obj.in_doubt = false;
            }
            if let Some(hook) = &self.dp.manager().hooks.before_lease {
                let start = *started.get_or_insert_with(Instant::now);
                obj.in_doubt = true;
                let ran = tokio::time::timeout_at(start + limit, Box::pin(hook(&mut obj.conn)));
                let why = match ran.await {
                    Ok(Ok(())) => None,
                    Ok(Err(why)) => Some(format!(
                        "before_lease hook: {}",
                        shared.redactor.scrub(&why)
                    )),
                    Err(_) => {
                        drop(Object::take(obj));
                        let e = self.timed_out(start);
                        return Err(failed(&span, self.refused(e, &mut admitted)));
                    }
                };
                if let Some(why) = why {
                    tracing::debug!(pool = %shared.name, reason = %why, "before_lease hook rejected a connection; discarded");
                    drop(Object::take(obj));
                    if fresh {
                        let e = self.map_error(DpError::Backend(BackendError::new(why)));
                        return Err(failed(&span, self.refused(e, &mut admitted)));
                    }
                    continue;
                }
                obj.in_doubt = false;
            }
            // The lease is taken now: after whatever it waited for.
            let taken_at = if started.is_some() { clock::now() } else { now };
            return Ok(self.grant(obj, taken_at, started, admitted, route, &span));
        }
    }

    /// Hands `obj` out as a lease taken at `taken_at`, after waiting since
    /// `started` (tokio's clock; `None`: it waited for nothing).
    #[inline]
    fn grant(
        &self,
        mut obj: Object<Managed<B>>,
        taken_at: Instant,
        started: Option<Instant>,
        mut admitted: Admitted<'_>,
        route: Option<Arc<str>>,
        span: &tracing::Span,
    ) -> Lease<B> {
        let shared = &*self.shared;
        let wait = started.map_or(Duration::ZERO, |start| Instant::now() - start);
        shared.stats.acquire_wait.record(wait);
        if !B::RECORDS_OUTCOMES {
            shared.breaker.success(&admitted.admission);
            admitted.settled = true;
        }
        if started.is_some() {
            acquired_slowly(shared, wait);
        }
        if !span.is_disabled() {
            span.record("wait_us", wait.as_micros() as u64);
            span.record("outcome", "ok");
        }
        let ticket = shared
            .config
            .leak_threshold
            .map(|_| shared.leaks.taken(taken_at, route));
        obj.since = taken_at;
        // The lease exists before the hook runs: a hook that panics drops
        // it, and it is returned like any other.
        let lease = Lease::new(obj, admitted.admission.probe(), ticket);
        // A backend that reports each call itself reports from the lease.
        admitted.settled = true;
        if let Some(hook) = &shared.after_lease {
            hook(&hooks::Leased {
                pool: &shared.name,
                waited: wait,
            });
        }
        lease
    }

    /// The fast path: an idle connection, if one is free right now, checked
    /// out without waiting and without opening one.
    ///
    /// deadpool's checkout future is polled once, here, on this stack frame,
    /// so it never becomes part of the caller's future (it is ~1 KiB, and
    /// moving it cost more than the rest of the lease). One poll is enough:
    /// the wait is `Some(0)` (a `try_acquire`), the recycle only does the
    /// local broken check, and opening a connection is refused up front:
    /// `create: Some(0)` on a pool without a deadpool runtime makes deadpool
    /// answer [`DpError::NoRuntimeSpecified`] before the connect is polled,
    /// which the caller reads as "room for a new connection". With the
    /// connection comes when it was checked out, on the bookkeeping clock.
    fn try_idle(&self) -> Result<(Object<Managed<B>>, Instant), DpError<BackendError>> {
        const IDLE_ONLY: Timeouts = Timeouts {
            wait: Some(Duration::ZERO),
            create: Some(Duration::ZERO),
            recycle: None,
        };
        let checkout = std::pin::pin!(self.dp.timeout_get(&IDLE_ONLY));
        match checkout.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(got) => got.map(|obj| {
                let now = clock::checked_out(&obj);
                (obj, now)
            }),
            // Unreachable as the pool is built (debug builds, and so the
            // tests, say so loudly); were it reached, dropping the checkout
            // is safe (deadpool returns the permit and closes a connection
            // it was recycling) and the caller takes the path that may wait.
            std::task::Poll::Pending => {
                debug_assert!(false, "deadpool's checkout waited in the fast path");
                Err(DpError::NoRuntimeSpecified)
            }
        }
    }

    /// A free slot but no idle connection: open one (bounded by
    /// `acquire_timeout` inside [`Managed`]), or wait if others took the
    /// slot first. A connect may hang as long as its server does: a drain
    /// that starts meanwhile refuses it at once.
    async fn open_new(
        &self,
        start: Instant,
        deadline: Instant,
    ) -> Result<Object<Managed<B>>, PoolError> {
        let open = async {
            match tokio::time::timeout_at(deadline, self.dp.timeout_get(&NO_WAIT)).await {
                Ok(Ok(obj)) => Ok(obj),
                Ok(Err(DpError::Timeout(TimeoutType::Wait))) => {
                    Box::pin(self.wait(start, deadline)).await
                }
                Ok(Err(e)) => Err(self.map_error(e)),
                Err(_) => Err(self.timed_out(start)),
            }
        };
        self.shared.unless_draining(open).await
    }

    /// A connection for the health check, in the state a user would get it:
    /// one left dirty is reset, and one that cannot be is discarded for the
    /// next (the caller bounds the whole by its deadline).
    async fn clean_checkout(&self) -> Result<Object<Managed<B>>, DpError<BackendError>> {
        loop {
            let mut obj = self.dp.get().await?;
            if !self.backend().needs_reset(&obj.conn) || self.dp.manager().reset(&mut obj).await {
                return Ok(obj);
            }
            drop(Object::take(obj));
        }
    }

    /// Tells the breaker how a refused acquisition counts: a backend that
    /// failed or gave no connection in time is a failure; load shedding and
    /// draining are our own refusals.
    fn refused(&self, e: PoolError, admitted: &mut Admitted<'_>) -> PoolError {
        let breaker = &self.shared.breaker;
        match e {
            PoolError::Timeout { .. } | PoolError::Backend { .. } => {
                breaker.failure(&admitted.admission);
            }
            _ => breaker.neutral(&admitted.admission),
        }
        admitted.settled = true;
        e
    }

    /// The slow path: no slot was free at once.
    async fn wait(
        &self,
        start: Instant,
        deadline: Instant,
    ) -> Result<Object<Managed<B>>, PoolError> {
        let shared = &*self.shared;
        let stats = &shared.stats;
        let waiting = stats.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        let _waiting = DecrementOnDrop(&stats.waiting);
        if let Some(max_waiting) = shared.config.max_waiting
            && waiting > max_waiting
        {
            inc(&stats.shed);
            return Err(PoolError::Overloaded {
                pool: shared.name.clone(),
                max_waiting,
            });
        }
        let got = async {
            match tokio::time::timeout_at(deadline, self.dp.get()).await {
                Ok(Ok(obj)) if shared.is_draining() => {
                    drop(obj);
                    Err(shared.refuse_draining())
                }
                Ok(Ok(obj)) => Ok(obj),
                Ok(Err(e)) => Err(self.map_error(e)),
                Err(_) => Err(self.timed_out(start)),
            }
        };
        shared.unless_draining(got).await
    }

    /// No usable connection within `acquire_timeout` of `start`.
    fn timed_out(&self, start: Instant) -> PoolError {
        let shared = &*self.shared;
        inc(&shared.stats.timeouts);
        tracing::warn!(pool = %shared.name, "acquire timed out: no usable connection within acquire_timeout");
        PoolError::Timeout {
            pool: shared.name.clone(),
            waited: shared.config.acquire_timeout.min(Instant::now() - start),
        }
    }

    fn map_error(&self, e: DpError<BackendError>) -> PoolError {
        let pool = self.shared.name.clone();
        match e {
            DpError::Backend(source) => PoolError::Backend { pool, source },
            DpError::Closed => self.shared.refuse_draining(),
            DpError::Timeout(_) => PoolError::Timeout {
                pool,
                waited: self.shared.config.acquire_timeout,
            },
            other => PoolError::Backend {
                pool,
                source: BackendError::new(other.to_string()),
            },
        }
    }
}

/// Logs an acquisition that waited longer than `slow_acquire_threshold`
/// (the span is emitted for every one that waited).
#[cold]
fn acquired_slowly(shared: &Shared, wait: Duration) {
    if shared
        .config
        .slow_acquire_threshold
        .is_some_and(|limit| wait >= limit)
    {
        tracing::warn!(pool = %shared.name, waited = ?wait, "slow acquire: waited longer than slow_acquire_threshold for a connection");
    }
}

/// Records a refused acquisition's outcome on its span.
fn failed(span: &tracing::Span, e: PoolError) -> PoolError {
    if !span.is_disabled() {
        span.record("outcome", tracing::field::display(&e));
    }
    e
}

/// A breaker admission whose outcome is not reported yet; dropped so (a
/// cancelled or panicking acquisition), a half-open probe gives its permit
/// back.
struct Admitted<'a> {
    breaker: &'a Breaker,
    admission: Admission,
    settled: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.neutral(&self.admission);
        }
    }
}

struct DecrementOnDrop<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
