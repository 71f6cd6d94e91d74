//! CircuitBreakerLayer around any tower service, with the paused clock.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{http::StatusCode, response::IntoResponse};
use axum_pools::{
    BreakerConfig, BreakerState,
    layer::{CircuitBreakerError, CircuitBreakerLayer, Classify},
};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

#[derive(Clone, Default)]
struct Upstream {
    failing: Arc<AtomicBool>,
    status: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    /// Calls never answer.
    hang: Arc<AtomicBool>,
}

impl Upstream {
    fn service(
        &self,
    ) -> impl Service<(), Response = http::Response<()>, Error = Infallible, Future: Send> + Clone
    {
        let this = self.clone();
        service_fn(move |()| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if this.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let status = if this.failing.load(Ordering::SeqCst) {
                    500
                } else {
                    match this.status.load(Ordering::SeqCst) {
                        0 => 200,
                        s => s as u16,
                    }
                };
                Ok(http::Response::builder().status(status).body(()).unwrap())
            }
        })
    }
}

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        open_duration: Duration::from_secs(10),
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn opens_on_5xx_refuses_without_calling_then_probes_close_it() {
    let up = Upstream::default();
    let mut svc = CircuitBreakerLayer::new(config()).layer(up.service());
    up.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let r = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(svc.stats().state, BreakerState::Open);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(
        matches!(err, CircuitBreakerError::Open { retry_after } if retry_after == Duration::from_secs(10))
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 3, "not called while open");
    let response = err.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "10");

    // Half-open after open_duration: two probes succeed, it closes.
    up.failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(10)).await;
    let mut clone = svc.clone();
    assert!(svc.ready().await.unwrap().call(()).await.is_ok());
    assert_eq!(
        clone.stats().state,
        BreakerState::HalfOpen,
        "clones share the state"
    );
    assert!(clone.ready().await.unwrap().call(()).await.is_ok());
    assert_eq!(svc.stats().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_opens_it_again() {
    let up = Upstream::default();
    let mut svc = CircuitBreakerLayer::new(config()).layer(up.service());
    up.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let r = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(svc.stats().state, BreakerState::Open);
    assert_eq!(svc.stats().opened, 2);
}

#[derive(Clone)]
struct NotFoundToo;

impl<B, E> Classify<http::Response<B>, E> for NotFoundToo {
    fn is_failure(&self, result: &Result<http::Response<B>, E>) -> bool {
        result.as_ref().map_or(true, |r| {
            r.status().is_server_error() || r.status() == StatusCode::NOT_FOUND
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_what_fails() {
    let up = Upstream::default();
    up.status.store(404, Ordering::SeqCst);
    let mut default = CircuitBreakerLayer::new(config()).layer(up.service());
    for _ in 0..10 {
        let _ = default.ready().await.unwrap().call(()).await;
    }
    assert_eq!(
        default.stats().state,
        BreakerState::Closed,
        "a 4xx is not a failure by default"
    );

    let mut strict = CircuitBreakerLayer::new(config())
        .classify(NotFoundToo)
        .layer(up.service());
    for _ in 0..3 {
        let _ = strict.ready().await.unwrap().call(()).await;
    }
    assert_eq!(strict.stats().state, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_failures_age_out_of_the_window_without_a_background_task() {
    let up = Upstream::default();
    let mut svc = CircuitBreakerLayer::new(BreakerConfig {
        consecutive_failures: 0,
        min_calls: 4,
        window: Duration::from_secs(10),
        ..config()
    })
    .layer(up.service());
    up.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    up.failing.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    up.failing.store(true, Ordering::SeqCst);
    let _ = svc.ready().await.unwrap().call(()).await;
    assert_eq!(
        svc.stats().state,
        BreakerState::Closed,
        "the 3 old failures left the window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_half_open_probe_gives_its_permit_back() {
    let up = Upstream::default();
    let mut svc = CircuitBreakerLayer::new(config()).layer(up.service());
    up.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(svc.stats().state, BreakerState::Open);
    tokio::time::sleep(Duration::from_secs(10)).await;

    // Both probes of the half-open period hang, and their requests are
    // cancelled (a client gone, a tower timeout).
    up.failing.store(false, Ordering::SeqCst);
    up.hang.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let probe = svc.ready().await.unwrap().call(());
        let cancelled = tokio::time::timeout(Duration::from_secs(1), probe).await;
        assert!(cancelled.is_err(), "the probe hangs");
    }
    assert_eq!(svc.stats().state, BreakerState::HalfOpen);

    // Their permits came back: the next requests probe, succeed, close it.
    up.hang.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let r = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(svc.stats().state, BreakerState::Closed);
}

#[test]
#[should_panic(expected = "breaker.half_open_probes")]
fn a_config_that_would_stay_half_open_for_good_is_refused_naming_the_field() {
    let _ = CircuitBreakerLayer::new(BreakerConfig {
        half_open_probes: 0,
        ..BreakerConfig::default()
    });
}

#[test]
#[should_panic(expected = "breaker.failure_rate_percent")]
fn a_failure_rate_of_zero_is_refused_naming_the_field() {
    let _ = CircuitBreakerLayer::new(BreakerConfig {
        failure_rate_percent: 0,
        ..BreakerConfig::default()
    });
}
