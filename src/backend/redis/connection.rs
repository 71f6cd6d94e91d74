//! [`RedisConnection`]: the pooled connection, and the state its user may
//! leave behind, tracked as commands go out.

use std::sync::Arc;

use redis::{Cmd, aio::MultiplexedConnection, cluster_async::ClusterConnection};

use crate::pool::RoundTrip;

/// A pooled Redis connection: `redis`'s multiplexed connection (or, for a
/// `redis+cluster://` pool, its cluster connection, which routes each
/// command to the node owning its keys) plus the state its user may leave
/// behind (see the [module docs](super)).
/// Use it with [`redis::AsyncCommands`] or `cmd(..).query_async(&mut *conn)`.
///
/// ```no_run
/// use axum_pools::RedisConn;
/// use redis::AsyncCommands;
///
/// async fn visits(mut redis: RedisConn) -> Result<String, axum_pools::PoolError> {
///     let n: i64 = redis.incr("visits", 1).await.expect("INCR");
///     Ok(n.to_string())
/// }
/// ```
pub struct RedisConnection {
    inner: Link,
    /// The database the pool's URL names.
    pub(super) home_db: i64,
    /// The database selected now (`None`: unknown, reset it).
    pub(super) db: Option<i64>,
    pub(super) multi: bool,
    pub(super) watch: bool,
    /// In a state no command can undo: discard.
    pub(super) poisoned: bool,
    /// The pool's `query_timeout` watch, fired when a command times out.
    round_trip: Option<Arc<RoundTrip>>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("db", &self.db)
            .field("multi", &self.multi)
            .field("watch", &self.watch)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// The driver's connection: to one server, or to a cluster.
pub(super) enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// What a cluster connection refuses, and why.
const NOT_IN_A_CLUSTER: &str = "MULTI, WATCH and SELECT as separate commands do not work on a \
    Redis Cluster connection (each command goes to the node owning its keys, over a connection \
    shared with other leases; a cluster has database 0 only): use an atomic pipeline \
    (redis::pipe().atomic()) whose keys share one hash slot, e.g. {user:1}:a and {user:1}:b";

impl RedisConnection {
    pub(super) fn new(inner: Link, db: i64, round_trip: Option<Arc<RoundTrip>>) -> Self {
        Self {
            inner,
            home_db: db,
            db: Some(db),
            multi: false,
            watch: false,
            poisoned: false,
            round_trip,
        }
    }

    pub(super) fn dirty(&self) -> bool {
        self.multi || self.watch || self.db != Some(self.home_db)
    }

    /// Notes what `cmd` does to the connection's state before it is sent;
    /// on a cluster, refuses what cannot work there.
    fn track(&mut self, cmd: &Cmd) -> redis::RedisResult<()> {
        let mut args = cmd.args_iter().filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        });
        let Some(name) = args.next() else {
            return Ok(());
        };
        let is = |word: &str| name.eq_ignore_ascii_case(word.as_bytes());
        if matches!(self.inner, Link::Cluster(_))
            && ["MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT"]
                .iter()
                .any(|w| is(w))
        {
            return Err((redis::ErrorKind::Client, NOT_IN_A_CLUSTER).into());
        }
        if is("MULTI") {
            self.multi = true;
        } else if is("EXEC") || is("DISCARD") {
            self.multi = false;
            self.watch = false;
        } else if is("WATCH") {
            self.watch = true;
        } else if is("UNWATCH") {
            self.watch = false;
        } else if is("SELECT") {
            self.db = args
                .next()
                .and_then(|db| std::str::from_utf8(db).ok()?.parse().ok());
        } else if is("CLIENT") {
            if args
                .next()
                .is_some_and(|sub| sub.eq_ignore_ascii_case(b"REPLY"))
            {
                self.poisoned = true;
            }
        } else if [
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "MONITOR",
            "AUTH",
            "HELLO",
            "RESET",
            "QUIT",
        ]
        .iter()
        .any(|w| is(w))
        {
            self.poisoned = true;
        }
        Ok(())
    }

    fn note_error(&mut self, e: &redis::RedisError) {
        if e.is_timeout() {
            // The answer may still come, to whatever is sent next.
            self.poisoned = true;
            if let Some(round_trip) = &self.round_trip {
                round_trip.fire();
            }
        }
        // READONLY: a demoted master, which a failover left this
        // connection on.
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        {
            self.poisoned = true;
        }
    }
}

/// Writes a [`ConnectionLike`](redis::aio::ConnectionLike) impl from its
/// three bodies, `$this` standing for `self`: the trait's signatures stand
/// once, for [`RedisConnection`] below and for
/// [`RedisConn`](super::RedisConn), which forwards to it.
macro_rules! connection_like {
    (
        impl<$($p:ident: $bound:path),*> for $ty:ty, |$this:ident| {
            command($cmd:ident) => $one:expr,
            pipeline($pipeline:ident, $offset:ident, $count:ident) => $many:expr,
            db => $db:expr $(,)?
        }
    ) => {
        impl<$($p: $bound),*> ::redis::aio::ConnectionLike for $ty {
            fn req_packed_command<'a>(
                &'a mut self,
                $cmd: &'a ::redis::Cmd,
            ) -> ::redis::RedisFuture<'a, ::redis::Value> {
                let $this = self;
                $one
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                $pipeline: &'a ::redis::Pipeline,
                $offset: usize,
                $count: usize,
            ) -> ::redis::RedisFuture<'a, Vec<::redis::Value>> {
                let $this = self;
                $many
            }

            fn get_db(&self) -> i64 {
                let $this = self;
                $db
            }
        }
    };
}
pub(super) use connection_like;

connection_like!(impl<> for RedisConnection, |this| {
    command(cmd) => {
        let tracked = this.track(cmd);
        Box::pin(async move {
            tracked?;
            let result = match &mut this.inner {
                Link::Single(c) => c.req_packed_command(cmd).await,
                Link::Cluster(c) => c.req_packed_command(cmd).await,
            };
            if let Err(e) = &result {
                this.note_error(e);
            }
            result
        })
    },
    pipeline(pipeline, offset, count) => {
        let tracked: redis::RedisResult<()> = pipeline.cmd_iter().try_for_each(|c| this.track(c));
        Box::pin(async move {
            tracked?;
            let result = match &mut this.inner {
                Link::Single(c) => c.req_packed_commands(pipeline, offset, count).await,
                Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
            };
            if let Err(e) = &result {
                this.note_error(e);
            }
            result
        })
    },
    db => this.db.unwrap_or(this.home_db),
});
