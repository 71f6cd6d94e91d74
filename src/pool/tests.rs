//! The pool core against a backend double whose every step (connect, ping,
//! reset, the `before_lease` hook) can be scripted Ok, Err, Slow or Never,
//! deadpool-style, with tokio's paused clock: each fault is answered within
//! `acquire_timeout`, and an acquisition cancelled at any of those steps
//! leaves no waiter counted, no lease out, no probe permit held, and no
//! connection handed out again in the state its cut step left it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::{Backend, RoundTrip};
use crate::{
    Hooks, PoolConfig, PoolError, PoolManager,
    breaker::BreakerState,
    config::BreakerConfig,
    extract::{ByType, Pooled},
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Ok,
    Err,
    /// Finishes after 2 s, longer than any acquisition may take.
    Slow,
    Never,
}

async fn act(a: Act) -> Result<(), String> {
    match a {
        Act::Ok => Ok(()),
        Act::Err => Err("scripted failure".to_owned()),
        Act::Slow => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(())
        }
        Act::Never => std::future::pending().await,
    }
}

#[derive(Clone, Copy, Debug)]
struct Script {
    connect: Act,
    ping: Act,
    reset: Act,
    hook: Act,
}

const ALL_OK: Script = Script {
    connect: Act::Ok,
    ping: Act::Ok,
    reset: Act::Ok,
    hook: Act::Ok,
};

#[derive(Clone, Default)]
struct Double {
    script: Arc<Mutex<Option<Script>>>,
    opened: Arc<AtomicUsize>,
}

impl Double {
    fn now(&self) -> Script {
        self.script.lock().unwrap().unwrap_or(ALL_OK)
    }

    fn set(&self, script: Script) {
        *self.script.lock().unwrap() = Some(script);
    }
}

struct Conn {
    /// Left in a state `reset` must undo.
    dirty: bool,
}

impl Backend for Double {
    type Connection = Conn;

    fn kind(&self) -> &'static str {
        "double"
    }

    async fn connect(&self, _: Option<Arc<RoundTrip>>) -> Result<Conn, String> {
        act(self.now().connect).await?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Conn { dirty: false })
    }

    async fn ping(&self, _: &mut Conn) -> Result<(), String> {
        act(self.now().ping).await
    }

    fn is_broken(&self, _: &mut Conn) -> bool {
        false
    }

    fn needs_reset(&self, conn: &Conn) -> bool {
        conn.dirty
    }

    async fn reset(&self, conn: &mut Conn) -> Result<(), String> {
        act(self.now().reset).await?;
        conn.dirty = false;
        Ok(())
    }
}

type Lease = Pooled<Double, ByType>;

async fn manager(double: &Double) -> PoolManager {
    let script = double.clone();
    let hooks = Hooks::<Conn>::new().before_lease(move |_| {
        let hook = script.now().hook;
        Box::pin(act(hook))
    });
    let config = PoolConfig::default()
        .min_size(1)
        .max_size(1)
        .acquire_timeout(Duration::from_secs(1))
        .validation_timeout(Duration::from_millis(300))
        // Every checkout pings: the ping step is always taken.
        .alive_bypass_window(Duration::ZERO)
        .health_check_interval(None)
        .breaker(BreakerConfig {
            consecutive_failures: 2,
            open_duration: Duration::from_secs(5),
            half_open_probes: 1,
            ..BreakerConfig::default()
        });
    PoolManager::builder()
        .register(
            "double".into(),
            Ok(double.clone()),
            &"double://".into(),
            config,
            hooks,
        )
        .build()
        .await
        .unwrap()
}

/// What must hold after any acquisition, finished or cut short.
fn nothing_leaked(m: &PoolManager, what: &str) {
    let s = m.stats_of("double").unwrap();
    assert_eq!(s.waiting, 0, "{what}: a waiter still counted");
    assert_eq!(s.active, 0, "{what}: a lease still out");
}

/// A step's name and the script that makes it `act`.
type Step = (&'static str, fn(Act) -> Script);

/// Every step an acquisition may take.
fn steps() -> [Step; 4] {
    [
        ("connect", |a| Script {
            connect: a,
            ..ALL_OK
        }),
        ("ping", |a| Script { ping: a, ..ALL_OK }),
        ("reset", |a| Script { reset: a, ..ALL_OK }),
        ("before_lease", |a| Script { hook: a, ..ALL_OK }),
    ]
}

/// Makes the next acquisition take `step` with `a`: a reset needs the idle
/// connection dirty; a connect needs it gone (dirty, its reset failing).
async fn prepare(m: &PoolManager, double: &Double, step: &str, script: Script) {
    let mut lease = Lease::acquire(m).await.unwrap();
    lease.dirty = matches!(step, "reset" | "connect");
    drop(lease);
    double.set(match step {
        "connect" => Script {
            reset: Act::Err,
            ..script
        },
        _ => script,
    });
}

#[tokio::test(start_paused = true)]
async fn every_step_failing_or_hanging_is_answered_within_acquire_timeout() {
    for (step, script) in steps() {
        for a in [Act::Err, Act::Slow, Act::Never] {
            let double = Double::default();
            let m = manager(&double).await;
            let what = format!("{step} {a:?}");
            prepare(&m, &double, step, script(a)).await;
            let start = tokio::time::Instant::now();
            let got = Lease::acquire(&m).await;
            let took = start.elapsed();
            assert!(took <= Duration::from_millis(1002), "{what}: took {took:?}");
            match (step, a) {
                // A connection that fails its ping or reset (bounded by
                // validation_timeout) is replaced by a fresh one, which
                // needs neither.
                ("ping" | "reset", _) => assert!(got.is_ok(), "{what}: {got:?}"),
                // A step that fails on a fresh connection ends the
                // acquisition rather than opening connection after
                // connection.
                (_, Act::Err) => {
                    assert!(
                        matches!(got, Err(PoolError::Backend { .. })),
                        "{what}: {got:?}"
                    )
                }
                _ => assert!(
                    matches!(
                        got,
                        Err(PoolError::Timeout { .. } | PoolError::Backend { .. })
                    ),
                    "{what}: {got:?}"
                ),
            }
            drop(got);
            nothing_leaked(&m, &what);
            // Healthy again: the pool serves (past an open breaker).
            double.set(ALL_OK);
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(Lease::acquire(&m).await.is_ok(), "{what}: serves again");
            nothing_leaked(&m, &what);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_acquisition_cancelled_at_any_step_leaks_nothing() {
    for (step, script) in steps() {
        let double = Double::default();
        let m = manager(&double).await;
        prepare(&m, &double, step, script(Act::Never)).await;
        let opened = double.opened.load(Ordering::SeqCst);
        // The client goes away while the step hangs.
        let cut = tokio::time::timeout(Duration::from_millis(100), Lease::acquire(&m)).await;
        assert!(cut.is_err(), "{step}: the step hangs");
        nothing_leaked(&m, step);
        // The connection whose step was cut is not handed out again.
        double.set(ALL_OK);
        let lease = Lease::acquire(&m).await.unwrap();
        assert!(!lease.dirty, "{step}");
        if step != "connect" {
            assert_eq!(
                double.opened.load(Ordering::SeqCst),
                opened + 1,
                "{step}: the cut connection was replaced"
            );
        }
        drop(lease);
        nothing_leaked(&m, step);
    }
}

#[tokio::test(start_paused = true)]
async fn a_half_open_probe_cancelled_mid_connect_gives_its_permit_back() {
    let double = Double::default();
    let m = manager(&double).await;
    // The one connection goes, and connecting fails: the breaker opens.
    let mut lease = Lease::acquire(&m).await.unwrap();
    lease.dirty = true;
    drop(lease);
    double.set(Script {
        reset: Act::Err,
        connect: Act::Err,
        ..ALL_OK
    });
    for _ in 0..2 {
        assert!(Lease::acquire(&m).await.is_err());
    }
    assert_eq!(
        m.stats_of("double").unwrap().breaker.state,
        BreakerState::Open
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The half-open period's one probe hangs connecting and is cancelled.
    double.set(Script {
        connect: Act::Never,
        ..ALL_OK
    });
    let cut = tokio::time::timeout(Duration::from_millis(100), Lease::acquire(&m)).await;
    assert!(cut.is_err());
    nothing_leaked(&m, "cancelled probe");

    // Its permit came back: the next acquisition probes and closes it.
    double.set(ALL_OK);
    drop(Lease::acquire(&m).await.unwrap());
    assert_eq!(
        m.stats_of("double").unwrap().breaker.state,
        BreakerState::Closed
    );
}

/// The test plan's "50 concurrent initializations of one pool initialize it
/// once". A pool is made once, by `build()`: its warm-up and its first check.
/// Fifty callers arriving together share the three connections it opened
/// (none is opened again), and fifty concurrent drains close each once.
#[tokio::test(start_paused = true)]
async fn races_50_concurrent_initializations_initialize_the_pool_once() {
    let double = Double::default();
    let config = PoolConfig::default()
        .min_size(3)
        .max_size(3)
        .acquire_timeout(Duration::from_secs(1))
        .health_check_interval(None);
    let m = PoolManager::builder()
        .register(
            "double".into(),
            Ok(double.clone()),
            &"double://".into(),
            config,
            Hooks::<Conn>::new(),
        )
        .build()
        .await
        .unwrap();
    assert_eq!(double.opened.load(Ordering::SeqCst), 3, "warmed once");
    assert_eq!(m.stats_of("double").unwrap().health_checks, 1);

    let callers: Vec<_> = (0..50)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                let lease = Lease::acquire(&m).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(lease);
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    // They shared the three: none was replaced or opened again.
    let s = m.stats_of("double").unwrap();
    assert_eq!((s.leases, s.created), (50, 3), "{s:?}");
    assert_eq!(double.opened.load(Ordering::SeqCst), 3);

    let closes: Vec<_> = (0..50)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.drain(Duration::from_secs(1)).await })
        })
        .collect();
    let mut reports = Vec::new();
    for close in closes {
        reports.push(format!("{:?}", close.await.unwrap()));
    }
    assert!(reports.iter().all(|r| *r == reports[0]), "{reports:?}");
    assert_eq!(m.stats_of("double").unwrap().closed, 3, "each closed once");
}

/// The test plan's "a health check against a backend that hangs returns
/// unhealthy within the acquisition timeout + 1 s": hanging at connect or
/// at the ping, the check fails within `validation_timeout`.
#[tokio::test(start_paused = true)]
async fn timeouts_health_check_against_a_hanging_backend_is_unhealthy_within_acquire_timeout_plus_1s()
 {
    for (step, script) in &steps()[..2] {
        let double = Double::default();
        let m = manager(&double).await;
        prepare(&m, &double, step, script(Act::Never)).await;
        let start = tokio::time::Instant::now();
        let report = m.check_health().await;
        let took = start.elapsed();
        assert_eq!(
            report.status,
            crate::HealthStatus::Fail,
            "{step}: {report:?}"
        );
        assert!(took <= Duration::from_secs(2), "{step}: took {took:?}");
        assert_eq!(
            took,
            Duration::from_millis(300),
            "{step}: validation_timeout"
        );
        nothing_leaked(&m, step);
    }
}
