//! `GET /pools/metrics`: Prometheus text exposition (prometheus-client),
//! following OpenTelemetry's `db.client.connection.*` names where they fit.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `db_client_connection_count` | gauge | `pool_name`, `state` = `idle` \| `used` |
//! | `db_client_connection_max` | gauge | `pool_name` |
//! | `db_client_connection_idle_min` | gauge | `pool_name` |
//! | `db_client_connection_pending_requests` | gauge | `pool_name` |
//! | `db_client_connection_timeouts_total` | counter | `pool_name` |
//! | `db_client_connection_wait_time_seconds` | histogram | `pool_name` |
//! | `db_client_connection_use_time_seconds` | histogram | `pool_name` |
//! | `db_client_connection_create_time_seconds` | histogram | `pool_name` |
//! | `axum_pools_leases_total`, `axum_pools_shed_total`, `axum_pools_backend_errors_total`, `axum_pools_query_timeouts_total`, `axum_pools_breaker_rejections_total` | counter | `pool_name` |
//! | `axum_pools_breaker_state` | gauge, 1 for the current state | `pool_name`, `state` |
//! | `axum_pools_health_status` | gauge: 0 pass, 1 warn, 2 fail (cached check) | `pool_name` |
//! | `axum_pools_failovers_total` | counter: changes of master seen by a Redis pool behind Sentinel (those pools only) | `pool_name` |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_threads`, `process_start_time_seconds`, `process_open_fds`, `process_max_fds` | counter / gauges, from `/proc/self` (Linux only) | – |
//! | `tokio_workers`, `tokio_alive_tasks` | gauges: the runtime serving the scrape | – |
//! | `axum_pools_rate_limited_total` | counter: 429s of a [`RateLimitLayer`](crate::layer::RateLimitLayer) registered with `.metrics(&manager, name)` | `limiter` |
//!
//! Every series is computed at scrape time from the pools' atomics: the
//! lease path pays nothing for metrics.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet, prometheus_text},
    metrics::{MetricType, exemplar::Exemplar},
    registry::Registry,
};

use crate::{
    breaker::BreakerState, health::HealthStatus, histogram::Histogram, manager::PoolManager,
};

/// Histogram bounds (seconds) of the wait, use and create time series.
const LE: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug)]
struct PoolsCollector(PoolManager);

type Encoded = Result<(), std::fmt::Error>;

impl Collector for PoolsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        let pools: Vec<_> = self
            .0
            .erased_pools()
            .iter()
            .map(|p| (p.shared().clone(), p.snapshot()))
            .collect();
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     value: &dyn Fn(&crate::StatsSnapshot) -> i64|
         -> Encoded {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (_, s) in &pools {
                metric
                    .encode_family(&[("pool_name", s.pool.as_str())])?
                    .encode_gauge(&value(s))?;
            }
            Ok(())
        };
        let counter = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       value: &dyn Fn(&crate::StatsSnapshot) -> u64|
         -> Encoded {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (_, s) in &pools {
                metric
                    .encode_family(&[("pool_name", s.pool.as_str())])?
                    .encode_counter::<NoLabelSet, u64, f64>(
                        &value(s),
                        None::<&Exemplar<NoLabelSet, f64>>,
                    )?;
            }
            Ok(())
        };
        let histogram = |encoder: &mut DescriptorEncoder,
                         name: &str,
                         help: &str,
                         which: &dyn Fn(&crate::stats::PoolStats) -> &Histogram|
         -> Encoded {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (shared, _) in &pools {
                let (sum, count, buckets) = which(&shared.stats).prometheus(LE);
                metric
                    .encode_family(&[("pool_name", shared.name.as_str())])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
            Ok(())
        };

        {
            let mut metric = encoder.encode_descriptor(
                "db_client_connection_count",
                "Connections open now, by state.",
                None,
                MetricType::Gauge,
            )?;
            for (_, s) in &pools {
                let used = s.size.saturating_sub(s.idle) as i64;
                for (state, value) in [("idle", s.idle as i64), ("used", used)] {
                    metric
                        .encode_family(&[("pool_name", s.pool.as_str()), ("state", state)])?
                        .encode_gauge(&value)?;
                }
            }
        }
        gauge(
            &mut encoder,
            "db_client_connection_max",
            "The pool's max_size.",
            &|s| s.max_size as i64,
        )?;
        gauge(
            &mut encoder,
            "db_client_connection_idle_min",
            "The pool's min_size.",
            &|s| s.min_size as i64,
        )?;
        gauge(
            &mut encoder,
            "db_client_connection_pending_requests",
            "Requests waiting for a connection now.",
            &|s| s.waiting as i64,
        )?;
        counter(
            &mut encoder,
            "db_client_connection_timeouts",
            "Acquisitions that found no connection within acquire_timeout.",
            &|s| s.timeouts,
        )?;
        histogram(
            &mut encoder,
            "db_client_connection_wait_time_seconds",
            "Time successful acquisitions waited for a connection.",
            &|s| &s.acquire_wait,
        )?;
        histogram(
            &mut encoder,
            "db_client_connection_use_time_seconds",
            "Time leases were held.",
            &|s| &s.use_time,
        )?;
        histogram(
            &mut encoder,
            "db_client_connection_create_time_seconds",
            "Time opening a connection took.",
            &|s| &s.create_time,
        )?;
        counter(&mut encoder, "axum_pools_leases", "Leases granted.", &|s| {
            s.leases
        })?;
        counter(
            &mut encoder,
            "axum_pools_shed",
            "Acquisitions refused at once because max_waiting requests already waited.",
            &|s| s.shed,
        )?;
        counter(
            &mut encoder,
            "axum_pools_backend_errors",
            "Failures to open or validate a connection.",
            &|s| s.backend_errors,
        )?;
        counter(
            &mut encoder,
            "axum_pools_query_timeouts",
            "Round trips that got no answer within query_timeout (each cost its connection).",
            &|s| s.query_timeouts,
        )?;
        counter(
            &mut encoder,
            "axum_pools_breaker_rejections",
            "Acquisitions refused by the circuit breaker.",
            &|s| s.breaker.rejected,
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "axum_pools_breaker_state",
                "The circuit breaker's state (1 for the current one).",
                None,
                MetricType::Gauge,
            )?;
            for (_, s) in &pools {
                for (state, name) in [
                    (BreakerState::Closed, "closed"),
                    (BreakerState::Open, "open"),
                    (BreakerState::HalfOpen, "half_open"),
                    (BreakerState::ForcedOpen, "forced_open"),
                    (BreakerState::ForcedClosed, "forced_closed"),
                    (BreakerState::Disabled, "disabled"),
                ] {
                    metric
                        .encode_family(&[("pool_name", s.pool.as_str()), ("state", name)])?
                        .encode_gauge(&i64::from(s.breaker.state == state))?;
                }
            }
        }
        #[cfg(feature = "redis")]
        {
            let mut metric = encoder.encode_descriptor(
                "axum_pools_failovers",
                "Changes of master seen by a Redis pool behind Sentinel.",
                None,
                MetricType::Counter,
            )?;
            for (_, s) in &pools {
                if let Some(failovers) = s.failovers {
                    metric
                        .encode_family(&[("pool_name", s.pool.as_str())])?
                        .encode_counter::<NoLabelSet, u64, f64>(
                            &failovers,
                            None::<&Exemplar<NoLabelSet, f64>>,
                        )?;
                }
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "axum_pools_rate_limited",
                "Requests refused with 429 by a RateLimitLayer reporting here.",
                None,
                MetricType::Counter,
            )?;
            for (name, rejected) in self.0.rate_limiters() {
                metric
                    .encode_family(&[("limiter", name.as_str())])?
                    .encode_counter::<NoLabelSet, u64, f64>(
                        &rejected,
                        None::<&Exemplar<NoLabelSet, f64>>,
                    )?;
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "axum_pools_health_status",
                "The latest health check: 0 pass, 1 warn, 2 fail.",
                None,
                MetricType::Gauge,
            )?;
            for (shared, s) in &pools {
                let value: i64 = match shared.cached_health().0.status {
                    HealthStatus::Pass => 0,
                    HealthStatus::Warn => 1,
                    HealthStatus::Fail => 2,
                };
                metric
                    .encode_family(&[("pool_name", s.pool.as_str())])?
                    .encode_gauge(&value)?;
            }
        }
        super::process::encode(&mut encoder)
    }
}

/// Prometheus text exposition of every pool (see the module docs for the series).
#[utoipa::path(
    get,
    path = "/pools/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
pub(super) async fn metrics(State(manager): State<PoolManager>) -> Response {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PoolsCollector(manager)));
    let mut body = String::new();
    if let Err(e) = prometheus_text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
