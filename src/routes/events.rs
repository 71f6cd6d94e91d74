//! `GET /pools/events`: a Server-Sent Events stream of every pool's
//! statistics, health and the process figures, one snapshot a second.
//!
//! Each snapshot is made when the connection asks for the next event; the
//! library queues none. A client that reads slowly can fall behind only by
//! what its connection buffers (hyper's write buffer and the sockets'),
//! which is bounded; one that resumes after taking nothing for [`STALLED`]
//! has its stream ended (a browser's `EventSource` then reconnects and
//! starts from the newest snapshot). The stream also ends when the manager
//! drains, so an open dashboard never holds up a graceful shutdown. When no
//! event goes out for 15 s, a `: ping` comment keeps proxies from closing
//! the connection.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::Stream;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use super::{View, Viewer, hidden, no_store, process::Process};
use crate::{health::PoolHealth, manager::PoolManager, stats::StatsSnapshot};

/// Time between snapshots.
pub(super) const PERIOD: Duration = Duration::from_secs(1);

/// A stream whose client took nothing for this long ends.
pub(super) const STALLED: Duration = Duration::from_secs(30);

/// How long a browser waits before reconnecting, sent with the first event.
const RECONNECT: Duration = Duration::from_secs(2);

/// One event of `GET /pools/events` (event name `snapshot`): what the
/// dashboard draws.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Snapshot {
    /// When it was taken, in milliseconds since the Unix epoch.
    at_ms: u64,
    /// Every pool's statistics, in registration order; of the `server`
    /// facts only `tls` without full health details.
    pools: Vec<StatsSnapshot>,
    /// Every pool's latest health, shown as the health routes show it to
    /// the same request.
    health: Vec<PoolHealth>,
    /// The process's figures, where `/proc/self` tells them (Linux).
    process: Option<ProcessFigures>,
}

/// The process figures of a [`Snapshot`]; the same readings as the
/// `process_*` and `tokio_*` series of `/pools/metrics`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ProcessFigures {
    /// User and system CPU time, in seconds.
    cpu_seconds: f64,
    /// Resident memory, in bytes.
    resident_bytes: i64,
    /// OS threads.
    threads: i64,
    /// Open file descriptors.
    open_fds: i64,
    /// The limit of open file descriptors, when known.
    max_fds: Option<i64>,
    /// Start time, in seconds since the Unix epoch.
    start_time_seconds: f64,
    /// Worker threads of the tokio runtime serving the stream.
    tokio_workers: usize,
    /// Tasks alive in that runtime.
    tokio_alive_tasks: usize,
}

impl ProcessFigures {
    fn read() -> Option<Self> {
        let p = Process::read()?;
        let runtime = tokio::runtime::Handle::current().metrics();
        Some(Self {
            cpu_seconds: p.cpu_seconds,
            resident_bytes: p.resident_bytes,
            threads: p.threads,
            open_fds: p.open_fds,
            max_fds: p.max_fds,
            start_time_seconds: p.start_time_seconds,
            tokio_workers: runtime.num_workers(),
            tokio_alive_tasks: runtime.num_alive_tasks(),
        })
    }
}

/// A snapshot of `manager` as `view` shows it.
pub(super) async fn snapshot(manager: &PoolManager, view: View) -> Snapshot {
    let pools = manager.stats().into_iter().map(|s| view.stats(s)).collect();
    let health = manager.health().await.pools;
    let health = health.into_iter().map(|h| view.health(h)).collect();
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Snapshot {
        at_ms,
        pools,
        health,
        process: ProcessFigures::read(),
    }
}

/// The answers of `GET /pools/events`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description for the OpenAPI document, never built
enum EventsAnswers {
    /// `text/event-stream`: an event `snapshot` at once and then every
    /// second, its data a `Snapshot` as JSON; `: ping` comments while idle.
    /// The stream ends when the manager drains.
    #[response(status = 200, content_type = "text/event-stream")]
    Stream(Snapshot),
    /// The health details policy hides the pools from this request.
    #[response(status = 403, content_type = "application/problem+json")]
    Hidden(crate::problem::ProblemDoc),
}

/// Live statistics, health and process figures as Server-Sent Events.
#[utoipa::path(get, path = "/pools/events", responses(EventsAnswers))]
pub(super) async fn events(State(manager): State<PoolManager>, Viewer(view): Viewer) -> Response {
    let Some(view) = view else {
        return hidden();
    };
    no_store(
        Sse::new(stream(manager, view))
            .keep_alive(
                KeepAlive::new()
                    .interval(Duration::from_secs(15))
                    .text("ping"),
            )
            .into_response(),
    )
}

/// The event stream: a snapshot at once, then one each [`PERIOD`], made
/// when polled; it ends when a poll comes [`STALLED`] after the last event,
/// or at the first tick after the manager began to drain.
pub(super) fn stream(
    manager: PoolManager,
    view: View,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let state = (manager, ticks, None::<Instant>);
    futures_util::stream::unfold(state, move |(manager, mut ticks, last)| async move {
        if last.is_some_and(|last| last.elapsed() >= STALLED) {
            tracing::debug!("pools events: the client took nothing for 30 s; ending its stream");
            return None;
        }
        ticks.tick().await;
        if manager.is_draining() {
            // Graceful shutdown waits for every connection: end this one.
            return None;
        }
        let snapshot = snapshot(&manager, view).await;
        let mut event = Event::default().event("snapshot");
        if last.is_none() {
            event = event.retry(RECONNECT);
        }
        let event = event
            .json_data(snapshot)
            .unwrap_or_else(|_| Event::default().comment("snapshot not serializable"));
        Some((Ok(event), (manager, ticks, Some(Instant::now()))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn manager() -> PoolManager {
        PoolManager::builder().build().await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn one_snapshot_at_once_then_one_a_second_and_a_stalled_client_is_dropped() {
        let manager = manager().await;
        let start = Instant::now();
        let mut events = Box::pin(stream(manager, View::Summary));
        assert!(events.next().await.is_some());
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first one comes at once"
        );
        for n in 1..=3 {
            assert!(events.next().await.is_some());
            assert_eq!(start.elapsed(), PERIOD * n, "then one a second");
        }
        // The client reads late: it gets one snapshot, the newest, not the
        // ones it missed.
        tokio::time::advance(Duration::from_millis(5500)).await;
        let late = Instant::now();
        assert!(events.next().await.is_some());
        assert_eq!(late.elapsed(), Duration::ZERO);
        assert!(events.next().await.is_some());
        assert!(late.elapsed() <= PERIOD, "no backlog of missed snapshots");
        // It takes nothing for 30 s: the stream ends.
        tokio::time::advance(STALLED).await;
        assert!(events.next().await.is_none());
    }
}
