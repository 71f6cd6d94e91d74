//! The breaker state machine, tested without a pool or a clock of its own.

use super::*;

fn breaker(config: BreakerConfig) -> Breaker {
    Breaker::new(config)
}

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_rate_percent: 50,
        min_calls: 10,
        window: Duration::from_secs(10),
        consecutive_failures: 5,
        open_duration: Duration::from_secs(5),
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

/// One call as the lease path makes it: a granted lease is recorded in
/// the pool's grants (when the breaker counts them) and reported.
fn call(b: &Breaker, ok: bool) -> Admission {
    let a = b.admit();
    if matches!(a, Admission::Rejected(_)) {
        return a;
    }
    if ok {
        if let Some(grants) = &b.grants {
            grants.record(Duration::ZERO);
        }
        b.success(&a);
    } else {
        b.failure(&a);
    }
    a
}

/// A pool's breaker: its successes are the pool's granted leases.
fn pooled(config: BreakerConfig) -> Breaker {
    Breaker::counting(config, Some(Arc::new(Histogram::new())))
}

#[test]
fn a_pool_breaker_takes_its_successes_from_the_granted_leases() {
    let b = pooled(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    assert!(b.counts_grants());
    for _ in 0..20 {
        call(&b, true);
    }
    // Reported one by one, these would be counted twice.
    assert_eq!(b.halves[0][0].load(Ordering::Relaxed), 0);
    for _ in 0..19 {
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Closed, "{:?}", b.window_counts());
    }
    assert_eq!(b.window_counts(), (39, 19));
    call(&b, false); // 20 of 40
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn a_granted_lease_breaks_a_pool_breakers_run_of_failures() {
    let b = pooled(BreakerConfig {
        min_calls: 1000,
        consecutive_failures: 3,
        ..config()
    });
    for ok in [false, false, true, false, false] {
        call(&b, ok);
        assert_eq!(b.state(), BreakerState::Closed);
    }
    call(&b, false); // 3 in a row
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn a_pool_breakers_window_forgets_old_grants() {
    let b = pooled(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    for _ in 0..100 {
        call(&b, true);
    }
    b.rotate();
    for _ in 0..10 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Closed, "10 of 110 failed");
    b.rotate(); // the half with the 100 grants is gone
    for _ in 0..10 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Open, "{:?}", b.window_counts());
}

#[tokio::test(start_paused = true)]
async fn a_pool_breaker_closes_after_its_probes_and_starts_a_fresh_window() {
    let b = pooled(config());
    for _ in 0..5 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(call(&b, true).probe().is_some());
    assert!(call(&b, true).probe().is_some());
    assert_eq!(b.state(), BreakerState::Closed);
    // The probes' grants are not in the new window.
    assert_eq!(b.window_counts(), (0, 0));
    for _ in 0..4 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Closed, "4 in a row, not 5");
}

#[test]
fn a_rotation_half_done_does_not_drop_the_windows_grants() {
    let b = pooled(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    for _ in 0..100 {
        call(&b, true);
    }
    // What a failure sees between the two steps of `rotate`: the new
    // half's base stored, `current` not yet switched.
    let next = 1 - b.current.load(Ordering::Relaxed);
    b.grants_base[next].store(b.grants_now(), Ordering::Relaxed);
    for _ in 0..10 {
        call(&b, false);
    }
    assert_eq!(b.window_counts(), (110, 10));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_count_bounded_window_counts_each_success_even_for_a_pool() {
    let b = pooled(BreakerConfig {
        window_calls: 20,
        ..config()
    });
    assert!(!b.counts_grants());
    call(&b, true);
    assert_eq!(b.window_counts(), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_refuses_until_open_duration() {
    let b = breaker(config());
    for _ in 0..4 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    call(&b, false);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.admit(), Admission::Rejected(Duration::from_secs(5)));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(b.admit(), Admission::Rejected(Duration::from_secs(3)));
    assert_eq!(b.stats().opened, 1);
    assert_eq!(b.stats().rejected, 2);
    assert_eq!(b.stats().retry_after_ms, 3000);
}

#[tokio::test(start_paused = true)]
async fn a_success_breaks_the_run_but_the_failure_rate_still_opens() {
    let b = breaker(config());
    // 4 failures, 1 success, repeated: never 5 in a row; 80 % failures.
    for i in 0..9 {
        call(&b, i % 5 == 4);
        assert_eq!(b.state(), BreakerState::Closed, "call {i}");
    }
    call(&b, false); // 10th call: 8 of 10 failed
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn below_min_calls_the_rate_does_not_count() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    for _ in 0..9 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Closed, "9 calls < min_calls");
    call(&b, false);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_failures_leave_the_window() {
    let b = breaker(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    for _ in 0..9 {
        call(&b, false);
    }
    b.rotate();
    b.rotate(); // a whole window later: both halves dropped
    for _ in 0..9 {
        call(&b, true);
    }
    call(&b, false);
    assert_eq!(b.state(), BreakerState::Closed, "1 failure in 10 calls");
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_limited_probes_and_closes_when_they_succeed() {
    let b = breaker(config());
    for _ in 0..5 {
        call(&b, false);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let p1 = b.admit();
    assert!(p1.probe().is_some());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let p2 = b.admit();
    assert!(p2.probe().is_some());
    assert!(matches!(b.admit(), Admission::Rejected(_)), "only 2 probes");
    b.success(&p1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.success(&p2);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.admit(), Admission::Allowed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_again_for_a_full_open_duration() {
    let b = breaker(config());
    for _ in 0..5 {
        call(&b, false);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = b.admit();
    assert!(probe.probe().is_some());
    b.failure(&probe);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.admit(), Admission::Rejected(Duration::from_secs(5)));
    assert_eq!(b.stats().opened, 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_neither_succeeds_nor_fails_gives_its_permit_back() {
    let b = breaker(BreakerConfig {
        half_open_probes: 1,
        ..config()
    });
    for _ in 0..5 {
        call(&b, false);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = b.admit();
    assert!(matches!(b.admit(), Admission::Rejected(_)));
    b.neutral(&probe);
    assert!(b.admit().probe().is_some());
}

/// Probes A and B of one half-open period; B fails, and after the next
/// `open_duration` probe C is out in the next period.
async fn a_late_probe_of_an_earlier_period(b: &Breaker) -> (Admission, Admission) {
    for _ in 0..5 {
        call(b, false);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let a = b.admit();
    let probe_b = b.admit();
    b.failure(&probe_b);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    let c = b.admit();
    assert!(c.probe().is_some());
    (a, c)
}

#[tokio::test(start_paused = true)]
async fn a_permit_given_back_from_an_earlier_half_open_period_is_void() {
    let b = breaker(config());
    let (a, _c) = a_late_probe_of_an_earlier_period(&b).await;
    b.neutral(&a);
    // The period allows two probes: C and one more, not a third.
    assert!(b.admit().probe().is_some());
    assert!(matches!(b.admit(), Admission::Rejected(_)), "3 probes out");
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_a_probe_of_an_earlier_half_open_period_count_for_nothing() {
    let b = breaker(config());
    let (a, c) = a_late_probe_of_an_earlier_period(&b).await;
    b.success(&a);
    b.success(&c);
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "one of this period's two probes succeeded"
    );
    b.failure(&a);
    assert_eq!(b.state(), BreakerState::HalfOpen, "a late failure of A");
    let d = b.admit();
    b.success(&d);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn operators_can_force_and_reset() {
    let b = breaker(config());
    b.force_open();
    assert!(matches!(b.admit(), Admission::Rejected(_)));
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(b.state(), BreakerState::ForcedOpen, "stays open");
    b.force_closed();
    for _ in 0..20 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::ForcedClosed);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..5 {
        call(&b, false);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_count_bounded_window_forgets_old_successes() {
    let base = BreakerConfig {
        consecutive_failures: 0,
        min_calls: 4,
        ..config()
    };
    for (window_calls, opens) in [(0, false), (4, true)] {
        let b = breaker(BreakerConfig {
            window_calls,
            ..base.clone()
        });
        for _ in 0..8 {
            call(&b, true);
        }
        call(&b, false);
        call(&b, false);
        // Time-only window: 2 failures in 10 calls. Last ~4 calls: 2 of 4.
        assert_eq!(
            b.state() == BreakerState::Open,
            opens,
            "window_calls {window_calls}"
        );
    }
}

#[test]
fn disabled_admits_everything() {
    let b = breaker(BreakerConfig {
        enabled: false,
        ..config()
    });
    for _ in 0..100 {
        assert_eq!(call(&b, false), Admission::Allowed);
    }
    assert_eq!(b.state(), BreakerState::Disabled);
}
