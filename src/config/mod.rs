//! Pool configuration: the knobs every pool shares, their defaults, and the
//! validation that runs when the manager is built.
//!
//! Every knob can come from code, from serde (durations as `"5s"`,
//! `"250ms"`; `"off"` turns an optional one off) or from environment
//! variables through [`PoolConfig::from_env`].
//!
//! ```
//! use std::time::Duration;
//! use axum_pools::{DbConfig, PoolConfig};
//!
//! let config = DbConfig::from_url("postgres://app@127.0.0.1/app")
//!     .max_size(16)
//!     .min_size(2)
//!     .acquire_timeout(Duration::from_secs(2));
//! assert_eq!(config.pool.max_size, 16);
//!
//! let from_json: PoolConfig =
//!     serde_json::from_str(r#"{"max_size": 8, "idle_timeout": "off", "acquire_timeout": "750ms"}"#)?;
//! assert_eq!(from_json.acquire_timeout, Duration::from_millis(750));
//! assert_eq!(from_json.idle_timeout, None);
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod env;
mod error;
mod macros;

pub(crate) use self::env::{
    EnvReader, is_off, opt_duration, parse_bool, parse_count, parse_duration, parse_opt_duration,
};
pub use self::error::ConfigError;

/// The knobs every pool shares.
///
/// Build one with [`PoolConfig::default`] and the builder methods (each
/// named after its field), deserialize one with serde, or read one from the
/// environment with [`PoolConfig::from_env`]. The manager validates it when it
/// is built ([`PoolConfig::validate`]).
///
/// `idle_timeout`, `max_lifetime`, `alive_bypass_window` and `leak_threshold`
/// are measured on the monotonic system clock, which a paused tokio clock
/// does not stop; with the `test-util` feature they follow tokio's clock, so
/// tests can advance it. The other durations are tokio timers either way.
///
/// ```
/// use std::time::Duration;
/// use axum_pools::PoolConfig;
///
/// let config = PoolConfig::default()
///     .max_size(32)
///     .max_waiting(Some(64))
///     .health_check_interval(None); // no periodic checks
/// assert!(config.validate().is_ok());
/// assert!(PoolConfig::default().max_size(0).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[must_use]
pub struct PoolConfig {
    /// Connections opened at build and kept open while idle (the reaper never
    /// closes below it, and tops the pool back up to it).
    ///
    /// Default: `1`.
    pub min_size: usize,
    /// Most connections open at once; further requests wait.
    ///
    /// Default: `10`.
    pub max_size: usize,
    /// Longest a request waits for a connection (including opening a new
    /// one) before it is answered 503 with `Retry-After`.
    ///
    /// Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// An idle connection unused for longer is closed by the reaper (never
    /// below `min_size`). `None` keeps idle connections.
    ///
    /// Default: `10min`.
    #[serde(with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// A connection older than this (minus a small per-connection jitter of
    /// up to 2.5 %) is closed when idle and never handed out again; one in
    /// use is retired only after it is returned. `None`: no limit.
    ///
    /// Default: `30min`.
    #[serde(with = "opt_duration")]
    pub max_lifetime: Option<Duration>,
    /// Period of the background health check (a real `SELECT 1`/`PING`
    /// bounded by `validation_timeout`) whose latest result the health routes
    /// serve. `None` turns periodic checks off; the routes then check on
    /// demand, at most once a second.
    ///
    /// Default: `10s`.
    #[serde(with = "opt_duration")]
    pub health_check_interval: Option<Duration>,
    /// Bound on one validation: the ping of a connection that sat idle
    /// longer than `alive_bypass_window`, and the health check.
    ///
    /// Default: `2s`.
    #[serde(with = "humantime_serde")]
    pub validation_timeout: Duration,
    /// A connection returned less than this long ago is handed out without a
    /// ping (only the cheap local "is it broken" check runs); one idle for
    /// longer is pinged first. HikariCP's `aliveBypassWindow`.
    ///
    /// Default: `500ms`.
    #[serde(with = "humantime_serde")]
    pub alive_bypass_window: Duration,
    /// When this many requests already wait for a connection, the next one
    /// is refused at once with 503 instead of queueing (load shedding).
    /// `None`: no cap.
    ///
    /// Default: `None`.
    pub max_waiting: Option<usize>,
    /// A lease held longer than this is logged as a possible leak (pool,
    /// route, how long; `warn`), once, and again (`info`) when it is
    /// returned; counted in the stats as `leaks`. `None`: not watched, and
    /// the lease path notes nothing.
    ///
    /// Default: `None`.
    #[serde(with = "opt_duration")]
    pub leak_threshold: Option<Duration>,
    /// An acquisition that waited at least this long is logged (`warn`),
    /// like sqlx's `acquire_slow_threshold`. `None`: never.
    ///
    /// Default: `1s`.
    #[serde(with = "opt_duration")]
    pub slow_acquire_threshold: Option<Duration>,
    /// Bound on one round trip of a leased connection: a query (or Redis
    /// command) the server has not started to answer within it fails, the
    /// connection is discarded (never reused in an unknown state), the pool
    /// opens another, and a request whose handler then fails answers 504
    /// problem+json (`…:query-timeout`, naming the pool; behind
    /// [`PoolLayer`](crate::PoolLayer)). Counted as `query_timeouts` in the
    /// stats and metrics.
    ///
    /// Where the server can enforce it too it is also set there on each new
    /// connection (Postgres `statement_timeout`, MariaDB
    /// `max_statement_time`, MySQL `max_execution_time`), so a slow query
    /// on a healthy server is cancelled by the server and its connection
    /// survives ([`DbError`](crate::DbError) answers 504). Per backend:
    ///
    /// | backend | the server's bound | the client's bound |
    /// |---|---|---|
    /// | Postgres | `statement_timeout` | the connection fails when the server, owing an answer, sends nothing for `query_timeout` + 50 ms |
    /// | MySQL/MariaDB | `max_execution_time` / `max_statement_time` | the connection is cut when no answer starts within `query_timeout` + 50 ms (a loopback relay in front of each connection) |
    /// | Redis | – | the client's response timeout (without this knob, the redis crate's 500 ms) |
    /// | HTTP | – | each attempt, with `request_timeout` (the shorter of the two) |
    /// | SQLite | – | – |
    ///
    /// `None`: off, as in HikariCP and sqlx.
    ///
    /// Default: `None`.
    #[serde(with = "opt_duration")]
    pub query_timeout: Option<Duration>,
    /// The pool's circuit breaker.
    pub breaker: BreakerConfig,
    /// Whether the service needs this pool: a required database or Redis
    /// pool that cannot connect, or whose first health check fails (a
    /// Redis that answers `NOAUTH`), fails `build()`, and one that fails
    /// later makes `/pools/health` and `/pools/health/ready` fail; an
    /// optional one builds with a warning and only warns in health.
    ///
    /// Default: `true`.
    pub required: bool,
}

/// The circuit breaker of one pool: when acquisitions keep failing (connect
/// refused, validation failed, no connection within `acquire_timeout`), it
/// opens and the pool refuses at once with 503 and `Retry-After` instead of
/// letting every request wait; after `open_duration` a few probe leases
/// decide whether it closes again.
///
/// ```
/// use std::time::Duration;
/// use axum_pools::{BreakerConfig, PoolConfig};
///
/// let config = PoolConfig::default().breaker(BreakerConfig {
///     open_duration: Duration::from_secs(2),
///     ..BreakerConfig::default()
/// });
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether the breaker runs at all.
    ///
    /// Default: `true`.
    pub enabled: bool,
    /// Opens when at least this percentage of the calls in the window failed
    /// (and there were at least `min_calls`).
    ///
    /// Default: `50`.
    pub failure_rate_percent: u8,
    /// Calls the window needs before the failure rate counts.
    ///
    /// Default: `10`.
    pub min_calls: u32,
    /// The sliding window the failure rate is taken over (two halves, the
    /// older dropped every `window / 2`).
    ///
    /// Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Also bound the window by calls: only about the last `window_calls`
    /// count (the older half dropped every `window_calls / 2` calls); `0`
    /// keeps the window time-based only.
    ///
    /// Default: `0`.
    pub window_calls: u32,
    /// Also opens after this many failures in a row, whatever the rate; `0`
    /// turns this trigger off.
    ///
    /// Default: `5`.
    pub consecutive_failures: u32,
    /// How long it stays open before probing.
    ///
    /// Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Probe acquisitions let through when half-open; all must succeed to
    /// close, one failure opens again.
    ///
    /// Default: `2`.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate_percent: 50,
            min_calls: 10,
            window: Duration::from_secs(10),
            window_calls: 0,
            consecutive_failures: 5,
            open_duration: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }
}

impl BreakerConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.failure_rate_percent) {
            return Err(ConfigError::new(
                "breaker.failure_rate_percent",
                self.failure_rate_percent.to_string(),
                "must be between 1 and 100",
            ));
        }
        for (field, value) in [
            ("breaker.window", self.window),
            ("breaker.open_duration", self.open_duration),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "0s", "must be greater than zero"));
            }
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::new(
                "breaker.half_open_probes",
                "0",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_size: 1,
            max_size: 10,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            health_check_interval: Some(Duration::from_secs(10)),
            validation_timeout: Duration::from_secs(2),
            alive_bypass_window: Duration::from_millis(500),
            max_waiting: None,
            leak_threshold: None,
            slow_acquire_threshold: Some(Duration::from_secs(1)),
            query_timeout: None,
            breaker: BreakerConfig::default(),
            required: true,
        }
    }
}

pub(crate) use self::macros::{from_env, pool_setters, setters, url_config};

impl PoolConfig {
    from_env! {
        /// Reads the knobs from environment variables named `{PREFIX}_MIN_SIZE`,
        /// `{PREFIX}_MAX_SIZE`, `{PREFIX}_ACQUIRE_TIMEOUT`,
        /// `{PREFIX}_IDLE_TIMEOUT`, `{PREFIX}_MAX_LIFETIME`,
        /// `{PREFIX}_HEALTH_CHECK_INTERVAL`, `{PREFIX}_VALIDATION_TIMEOUT`,
        /// `{PREFIX}_ALIVE_BYPASS_WINDOW`, `{PREFIX}_MAX_WAITING`,
        /// `{PREFIX}_LEAK_THRESHOLD`, `{PREFIX}_QUERY_TIMEOUT` and
        /// `{PREFIX}_REQUIRED`; an unset variable keeps the default.
        /// Durations are written like `5s`, `250ms`, `1m 30s`; `off` turns an
        /// optional knob off.
        ///
        /// The error names the variable and its value.
        ///
        /// ```no_run
        /// let config = axum_pools::PoolConfig::from_env("DB")?; // DB_MAX_SIZE=16 ...
        /// # Ok::<(), axum_pools::ConfigError>(())
        /// ```
    }

    /// [`PoolConfig::from_env`] over any source of variables.
    ///
    /// ```
    /// use std::{collections::HashMap, time::Duration};
    /// use axum_pools::PoolConfig;
    ///
    /// let vars = HashMap::from([
    ///     ("DB_MAX_SIZE", "16"),
    ///     ("DB_ACQUIRE_TIMEOUT", "250ms"),
    ///     ("DB_IDLE_TIMEOUT", "off"),
    /// ]);
    /// let config = PoolConfig::from_lookup("DB", |k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!(config.max_size, 16);
    /// assert_eq!(config.acquire_timeout, Duration::from_millis(250));
    /// assert_eq!(config.idle_timeout, None);
    ///
    /// let bad = HashMap::from([("DB_MAX_SIZE", "sixteen")]);
    /// let err = PoolConfig::from_lookup("DB", |k| bad.get(k).map(|v| v.to_string())).unwrap_err();
    /// assert!(err.to_string().contains("DB_MAX_SIZE"));
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::default().overridden_by(prefix, lookup)
    }

    /// These knobs with the `{PREFIX}_*` variables that `lookup` finds
    /// applied over them (the names and forms of
    /// [`from_env`](Self::from_env)); what it does not find keeps its
    /// value. See `knobs_from_env` for the process environment.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use axum_pools::PoolConfig;
    ///
    /// let vars = HashMap::from([("DB_MAX_SIZE", "8")]);
    /// let lookup = |k: &str| vars.get(k).map(|v| v.to_string());
    /// let config = PoolConfig::default().min_size(4).overridden_by("DB", lookup)?;
    /// assert_eq!((config.min_size, config.max_size), (4, 8));
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn overridden_by(
        self,
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = self;
        let env = EnvReader { prefix, lookup };
        env.read("MIN_SIZE", &mut c.min_size, parse_count)?;
        env.read("MAX_SIZE", &mut c.max_size, parse_count)?;
        env.read("ACQUIRE_TIMEOUT", &mut c.acquire_timeout, parse_duration)?;
        env.read("IDLE_TIMEOUT", &mut c.idle_timeout, parse_opt_duration)?;
        env.read("MAX_LIFETIME", &mut c.max_lifetime, parse_opt_duration)?;
        env.read(
            "HEALTH_CHECK_INTERVAL",
            &mut c.health_check_interval,
            parse_opt_duration,
        )?;
        env.read(
            "VALIDATION_TIMEOUT",
            &mut c.validation_timeout,
            parse_duration,
        )?;
        env.read(
            "ALIVE_BYPASS_WINDOW",
            &mut c.alive_bypass_window,
            parse_duration,
        )?;
        env.read("MAX_WAITING", &mut c.max_waiting, |v| {
            if is_off(v) {
                Ok(None)
            } else {
                parse_count(v).map(Some)
            }
        })?;
        env.read("LEAK_THRESHOLD", &mut c.leak_threshold, parse_opt_duration)?;
        env.read("QUERY_TIMEOUT", &mut c.query_timeout, parse_opt_duration)?;
        env.read("REQUIRED", &mut c.required, parse_bool)?;
        Ok(c)
    }

    /// Checks the knobs; the error names the field and the value.
    ///
    /// Rejected: `max_size == 0`; `max_size < min_size`; a zero
    /// `acquire_timeout`, `validation_timeout`, `health_check_interval`,
    /// `idle_timeout`, `max_lifetime`, `leak_threshold` or `query_timeout` (use `None` to turn
    /// the optional ones off).
    ///
    /// ```
    /// use axum_pools::PoolConfig;
    ///
    /// let err = PoolConfig::default().min_size(4).max_size(2).validate().unwrap_err();
    /// assert_eq!(err.field(), "max_size");
    /// assert_eq!(err.to_string(), "invalid pool config: max_size = 2: must be at least min_size (4)");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_size == 0 {
            return Err(ConfigError::new("max_size", "0", "must be at least 1"));
        }
        if self.max_size < self.min_size {
            return Err(ConfigError::new(
                "max_size",
                self.max_size.to_string(),
                format!("must be at least min_size ({})", self.min_size),
            ));
        }
        for (field, value) in [
            ("acquire_timeout", Some(self.acquire_timeout)),
            ("validation_timeout", Some(self.validation_timeout)),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(ConfigError::new(field, "0s", "must be greater than zero"));
            }
        }
        for (field, value) in [
            ("health_check_interval", self.health_check_interval),
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
            ("leak_threshold", self.leak_threshold),
            ("query_timeout", self.query_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(ConfigError::new(
                    field,
                    "0s",
                    "must be greater than zero; use `None` (\"off\") to turn it off",
                ));
            }
        }
        self.breaker.validate()
    }

    fn knobs(&mut self) -> &mut PoolConfig {
        self
    }

    pool_setters!();
}

/// `{PREFIX}_URL` (required) and the knobs of [`PoolConfig::from_env`], for
/// the backends' `from_env`.
pub(crate) fn url_and_knobs(
    prefix: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, PoolConfig), ConfigError> {
    let key = format!("{prefix}_URL");
    let url = lookup(&key).ok_or_else(|| ConfigError {
        pool: None,
        field: key.clone(),
        value: None,
        reason: "is not set: set it to the server URL".into(),
    })?;
    Ok((url, PoolConfig::from_lookup(prefix, lookup)?))
}

#[cfg(test)]
mod tests;

/// The pool knobs flattened into a pool's config, as strictly as
/// [`PoolConfig`] alone: serde's `deny_unknown_fields` has no effect under
/// `#[serde(flatten)]`, so the keys the outer config does not claim are
/// gathered here and read by `PoolConfig`'s own (strict) `Deserialize`,
/// which names an unknown key (`{"max_sise": 3}`) and the known ones. A
/// value of the wrong type or out of range is reported after the path of
/// its key (`min_size: invalid value: integer `-1`, expected usize`,
/// `breaker.window: ...`), which serde alone leaves out.
pub(crate) fn strict_knobs<'de, D>(deserializer: D) -> Result<PoolConfig, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let rest = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    serde_path_to_error::deserialize(serde_json::Value::Object(rest)).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => serde::de::Error::custom(e.into_inner()),
            _ => serde::de::Error::custom(format_args!("{path}: {}", e.into_inner())),
        }
    })
}
