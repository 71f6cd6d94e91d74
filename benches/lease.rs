//! Lease cost: get + drop through our manager vs raw deadpool over the same
//! SQLite connections (diesel-async's deadpool manager with
//! `RecyclingMethod::Fast`, so neither side runs a query on checkout).
//!
//! ```sh
//! cargo bench -p benchmarks --bench lease                 # all, ~1.5 min after the release build
//! cargo bench -p benchmarks --bench lease -- uncontended  # one group
//! ```
//!
//! Through the `benchmarks` package (benchmarks/Cargo.toml): built as this
//! crate's own bench it would get the dev-dependencies' tokio `test-util`,
//! whose pausable clock (behind a mutex) every timer and clock read of
//! both pools would pay, as no user does. The crate keeps it as a bench
//! target so the suite builds and lints it.
//!
//! - `uncontended/*`: one task doing get + drop in a loop; ns per cycle.
//! - `contended/*`: 128 tasks share a pool of 16, 1024 get + drop each
//!   (2^17 cycles); wall time for all of them.
//! - `*/axum_pools_query_timeout`: the same with `query_timeout` set.
//!
//! One multi-thread runtime with 2 workers, as in `shared/peers/lease-bench`.
//! Our pool always runs with its `acquire_timeout` (5 s), so it is compared
//! with raw deadpool both without a wait timeout and with a 5 s one.

use std::time::{Duration, Instant};

use axum_pools::{DbConfig, DbConn, PoolManager, SqliteConnection};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
    deadpool::{Object, Pool},
};
use tokio::runtime::Runtime;

const POOL_MAX: usize = 16;
const TASKS: u64 = 128;
const CYCLES: u64 = 1 << 17;
const WAIT: Duration = Duration::from_secs(5);

trait Lease: Clone + Send + Sync + 'static {
    fn lease(&self) -> impl Future<Output = ()> + Send;
}

#[derive(Clone)]
struct Ours(PoolManager);

impl Lease for Ours {
    async fn lease(&self) {
        let conn = DbConn::<SqliteConnection>::acquire(&self.0)
            .await
            .expect("lease");
        drop(conn);
    }
}

#[derive(Clone)]
struct Raw(Pool<SqliteConnection>, Option<Duration>);

impl Lease for Raw {
    async fn lease(&self) {
        let conn: Object<SqliteConnection> = match self.1 {
            None => self.0.get().await.expect("lease"),
            Some(wait) => self
                .0
                .timeout_get(&deadpool::managed::Timeouts {
                    wait: Some(wait),
                    ..Default::default()
                })
                .await
                .expect("lease"),
        };
        drop(conn);
    }
}

async fn ours(url: &str, query_timeout: Option<Duration>) -> Ours {
    let config = DbConfig::from_url(url)
        .min_size(POOL_MAX)
        .max_size(POOL_MAX)
        .acquire_timeout(WAIT)
        .query_timeout(query_timeout)
        .health_check_interval(None);
    Ours(
        PoolManager::builder()
            .database::<SqliteConnection>("bench", config)
            .build()
            .await
            .expect("manager"),
    )
}

async fn raw(url: &str, wait: Option<Duration>) -> Raw {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<SqliteConnection>::new_with_config(url, config);
    let mut builder = Pool::builder(manager).max_size(POOL_MAX);
    if wait.is_some() {
        builder = builder.runtime(deadpool::Runtime::Tokio1);
    }
    let pool = builder.build().expect("deadpool");
    // Open every connection up front, as our min_size does.
    let warm: Vec<_> = futures_util::future::join_all((0..POOL_MAX).map(|_| pool.get())).await;
    drop(warm);
    Raw(pool, wait)
}

async fn contended<L: Lease>(pool: &L) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..CYCLES / TASKS {
                    pool.lease().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    start.elapsed()
}

fn bench<L: Lease>(c: &mut Criterion, rt: &Runtime, name: &str, pool: &L) {
    c.benchmark_group("uncontended")
        .bench_function(name, |b| b.to_async(rt).iter(|| pool.lease()));
    c.benchmark_group("contended")
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .throughput(Throughput::Elements(CYCLES))
        .bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += contended(pool).await;
                    }
                    total
                })
            });
        });
}

fn lease(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = dir.path().join("bench.db").display().to_string();

    let ours_plain = rt.block_on(ours(&url, None));
    let ours_timed = rt.block_on(ours(&url, Some(Duration::from_secs(1))));
    let raw_plain = rt.block_on(raw(&url, None));
    let raw_wait = rt.block_on(raw(&url, Some(WAIT)));
    bench(c, &rt, "deadpool", &raw_plain);
    bench(c, &rt, "deadpool_wait5s", &raw_wait);
    bench(c, &rt, "axum_pools", &ours_plain);
    // The lease path's share of `query_timeout`: the watch checked at
    // return and at recycle (SQLite itself has no round trip to bound).
    bench(c, &rt, "axum_pools_query_timeout", &ours_timed);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = lease
}
criterion_main!(benches);
