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

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;

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
    /// The pool's circuit breaker.
    pub breaker: BreakerConfig,
    /// Whether the service needs this pool: a required pool that fails makes
    /// `/pools/health` and `/pools/health/ready` fail; an optional one only
    /// warns.
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
    fn validate(&self) -> Result<(), ConfigError> {
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
            breaker: BreakerConfig::default(),
            required: true,
        }
    }
}

macro_rules! setters {
    ($access:ident; $($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, $field: $ty) -> Self {
                self.$access().$field = $field;
                self
            }
        )*
    };
}

/// The builder methods of the pool knobs, for a config type with a
/// `knobs(&mut self) -> &mut PoolConfig` method (so
/// `DbConfig::from_url(..).max_size(4)` reads like
/// `PoolConfig::default().max_size(4)`).
macro_rules! pool_setters {
    () => {
        setters! { knobs;
            /// Sets [`PoolConfig::min_size`].
            min_size: usize,
            /// Sets [`PoolConfig::max_size`].
            max_size: usize,
            /// Sets [`PoolConfig::acquire_timeout`].
            acquire_timeout: Duration,
            /// Sets [`PoolConfig::idle_timeout`].
            idle_timeout: Option<Duration>,
            /// Sets [`PoolConfig::max_lifetime`].
            max_lifetime: Option<Duration>,
            /// Sets [`PoolConfig::health_check_interval`].
            health_check_interval: Option<Duration>,
            /// Sets [`PoolConfig::validation_timeout`].
            validation_timeout: Duration,
            /// Sets [`PoolConfig::alive_bypass_window`].
            alive_bypass_window: Duration,
            /// Sets [`PoolConfig::max_waiting`].
            max_waiting: Option<usize>,
            /// Sets [`PoolConfig::leak_threshold`].
            leak_threshold: Option<Duration>,
            /// Sets [`PoolConfig::slow_acquire_threshold`].
            slow_acquire_threshold: Option<Duration>,
            /// Sets [`PoolConfig::breaker`].
            breaker: $crate::config::BreakerConfig,
            /// Sets [`PoolConfig::required`].
            required: bool,
        }
    };
}

#[cfg(feature = "http")]
pub(crate) use {pool_setters, setters};

impl PoolConfig {
    /// Reads the knobs from environment variables named `{PREFIX}_MIN_SIZE`,
    /// `{PREFIX}_MAX_SIZE`, `{PREFIX}_ACQUIRE_TIMEOUT`,
    /// `{PREFIX}_IDLE_TIMEOUT`, `{PREFIX}_MAX_LIFETIME`,
    /// `{PREFIX}_HEALTH_CHECK_INTERVAL`, `{PREFIX}_VALIDATION_TIMEOUT`,
    /// `{PREFIX}_ALIVE_BYPASS_WINDOW`, `{PREFIX}_MAX_WAITING`,
    /// `{PREFIX}_LEAK_THRESHOLD` and `{PREFIX}_REQUIRED`; an unset variable
    /// keeps the default.
    /// Durations are written like `5s`, `250ms`, `1m 30s`; `off` turns an
    /// optional knob off.
    ///
    /// The error names the variable and its value.
    ///
    /// ```no_run
    /// let config = axum_pools::PoolConfig::from_env("DB")?; // DB_MAX_SIZE=16 ...
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(prefix, |key| std::env::var(key).ok())
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
        let mut c = Self::default();
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
        env.read("REQUIRED", &mut c.required, parse_bool)?;
        Ok(c)
    }

    /// Checks the knobs; the error names the field and the value.
    ///
    /// Rejected: `max_size == 0`; `max_size < min_size`; a zero
    /// `acquire_timeout`, `validation_timeout`, `health_check_interval`,
    /// `idle_timeout`, `max_lifetime` or `leak_threshold` (use `None` to turn
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

/// Configuration of one SQL pool: the database URL plus the shared
/// [`PoolConfig`] knobs.
///
/// URLs: `postgres://user:password@host:port/db` (any `tokio-postgres`
/// form), `mysql://user:password@host:port/db`, and for SQLite a file path
/// or a `file:` URI. A SQLite `:memory:` database is one database *per
/// connection*, so connections of one pool would not see each other's
/// data: use a file, or a shared-cache URI such as
/// `file:notes?mode=memory&cache=shared`.
///
/// The URL is never shown unredacted: `Debug`, errors and logs print
/// `postgres://user:***@host/db`.
///
/// ```
/// use std::time::Duration;
/// use axum_pools::DbConfig;
///
/// let config = DbConfig::from_url("postgres://app:s3cret@127.0.0.1/app")
///     .max_size(16)
///     .acquire_timeout(Duration::from_secs(1));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub struct DbConfig {
    /// The database URL (see the type docs for the forms).
    pub url: String,
    /// The pool knobs.
    #[serde(flatten)]
    pub pool: PoolConfig,
}

impl DbConfig {
    /// A config for `url` with default knobs.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool: PoolConfig::default(),
        }
    }

    /// Reads `{PREFIX}_URL` (required) and the knobs of
    /// [`PoolConfig::from_env`].
    ///
    /// ```no_run
    /// let config = axum_pools::DbConfig::from_env("DATABASE")?; // DATABASE_URL, DATABASE_MAX_SIZE, ...
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(prefix, |key| std::env::var(key).ok())
    }

    /// [`DbConfig::from_env`] over any source of variables.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use axum_pools::DbConfig;
    ///
    /// let vars = HashMap::from([("DB_URL", "notes.db"), ("DB_MAX_SIZE", "4")]);
    /// let config = DbConfig::from_lookup("DB", |k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!((config.url.as_str(), config.pool.max_size), ("notes.db", 4));
    ///
    /// let err = DbConfig::from_lookup("DB", |_| None).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid pool config: DB_URL is not set: set it to the server URL");
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let key = format!("{prefix}_URL");
        let url = lookup(&key).ok_or_else(|| ConfigError {
            pool: None,
            field: key.clone(),
            value: None,
            reason: "is not set: set it to the server URL".into(),
        })?;
        Ok(Self {
            url,
            pool: PoolConfig::from_lookup(prefix, lookup)?,
        })
    }

    fn knobs(&mut self) -> &mut PoolConfig {
        &mut self.pool
    }

    pool_setters!();
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(feature = "redis")]
pub use self::redis_config::*;

#[cfg(feature = "redis")]
mod redis_config {
    use std::{fmt, time::Duration};

    use serde::{Deserialize, Serialize};

    use super::{ConfigError, DbConfig, PoolConfig, redact_url};

    /// Configuration of one Redis pool (feature `redis`): the URL plus the
    /// shared [`PoolConfig`] knobs.
    ///
    /// URLs: `redis://[user][:password@]host[:port][/db]`. The URL is never shown
    /// unredacted.
    ///
    /// ```
    /// use axum_pools::RedisConfig;
    ///
    /// let config = RedisConfig::from_url("redis://:s3cret@127.0.0.1:6379/2").max_size(32);
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// ```
    #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[must_use]
    pub struct RedisConfig {
        /// The Redis URL.
        pub url: String,
        /// The pool knobs.
        #[serde(flatten)]
        pub pool: PoolConfig,
    }

    impl RedisConfig {
        /// A config for `url` with default knobs.
        pub fn from_url(url: impl Into<String>) -> Self {
            Self {
                url: url.into(),
                pool: PoolConfig::default(),
            }
        }

        /// Reads `{PREFIX}_URL` (required) and the knobs of
        /// [`PoolConfig::from_env`].
        ///
        /// ```no_run
        /// let config = axum_pools::RedisConfig::from_env("REDIS")?; // REDIS_URL, REDIS_MAX_SIZE, ...
        /// # Ok::<(), axum_pools::ConfigError>(())
        /// ```
        pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
            let DbConfig { url, pool } = DbConfig::from_env(prefix)?;
            Ok(Self { url, pool })
        }

        fn knobs(&mut self) -> &mut PoolConfig {
            &mut self.pool
        }

        pool_setters!();
    }

    impl fmt::Debug for RedisConfig {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisConfig")
                .field("url", &redact_url(&self.url))
                .field("pool", &self.pool)
                .finish()
        }
    }
}

/// A rejected configuration value: names the pool (once known), the field
/// (or environment variable) and the value, and says what is allowed.
///
/// ```
/// use axum_pools::PoolConfig;
///
/// let err = PoolConfig::default().max_size(0).validate().unwrap_err();
/// assert_eq!(err.field(), "max_size");
/// assert_eq!(err.value(), Some("0"));
/// assert_eq!(err.to_string(), "invalid pool config: max_size = 0: must be at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pool: Option<String>,
    field: String,
    value: Option<String>,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            pool: None,
            field: field.into(),
            value: Some(value.into()),
            reason: reason.into(),
        }
    }

    pub(crate) fn for_pool(mut self, pool: &str) -> Self {
        self.pool = Some(pool.to_owned());
        self
    }

    /// The pool the value belongs to, once the manager knows it.
    #[must_use]
    pub fn pool(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    /// The field or environment variable that holds the bad value.
    #[must_use]
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rejected value, as written (never a secret: URLs are redacted).
    #[must_use]
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            Some(pool) => write!(f, "invalid config for pool '{pool}': ")?,
            None => f.write_str("invalid pool config: ")?,
        }
        match &self.value {
            Some(value) => write!(f, "{} = {value}: {}", self.field, self.reason),
            None => write!(f, "{} {}", self.field, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) struct EnvReader<'a, L> {
    pub(crate) prefix: &'a str,
    pub(crate) lookup: L,
}

impl<L: Fn(&str) -> Option<String>> EnvReader<'_, L> {
    pub(crate) fn read<T>(
        &self,
        name: &str,
        slot: &mut T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        let key = format!("{}_{name}", self.prefix);
        if let Some(raw) = (self.lookup)(&key) {
            *slot = parse(raw.trim()).map_err(|reason| ConfigError::new(&key, raw, reason))?;
        }
        Ok(())
    }
}

fn is_off(v: &str) -> bool {
    ["off", "none", "disabled"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w))
}

pub(crate) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

pub(crate) fn parse_count(v: &str) -> Result<usize, String> {
    v.parse()
        .map_err(|_| "must be a whole number, e.g. 16".to_owned())
}

pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v)
        .map_err(|e| format!("must be a duration like `5s` or `250ms` ({e})"))
}

fn parse_opt_duration(v: &str) -> Result<Option<Duration>, String> {
    if is_off(v) {
        Ok(None)
    } else {
        parse_duration(v).map(Some)
    }
}

/// serde for `Option<Duration>` as `"5s"` or `"off"`/`null`.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(v) => super::parse_opt_duration(&v).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn field_of(c: PoolConfig) -> String {
        c.validate().unwrap_err().field().to_owned()
    }

    #[test]
    fn defaults_are_valid() {
        PoolConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_what_the_original_rejected() {
        assert_eq!(field_of(PoolConfig::default().max_size(0)), "max_size");
        assert_eq!(
            field_of(PoolConfig::default().min_size(5).max_size(4)),
            "max_size"
        );
        assert_eq!(
            field_of(PoolConfig::default().acquire_timeout(Duration::ZERO)),
            "acquire_timeout"
        );
        assert_eq!(
            field_of(PoolConfig::default().health_check_interval(Some(Duration::ZERO))),
            "health_check_interval"
        );
        assert_eq!(
            field_of(PoolConfig::default().validation_timeout(Duration::ZERO)),
            "validation_timeout"
        );
        // Checks off is fine.
        PoolConfig::default()
            .health_check_interval(None)
            .validate()
            .unwrap();
    }

    #[test]
    fn messages_name_pool_field_and_value() {
        let err = PoolConfig::default()
            .health_check_interval(Some(Duration::ZERO))
            .validate()
            .unwrap_err()
            .for_pool("primary");
        assert_eq!(
            err.to_string(),
            "invalid config for pool 'primary': health_check_interval = 0s: must be greater than zero; use `None` (\"off\") to turn it off"
        );
    }

    #[test]
    fn env_reads_every_knob() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("P_MIN_SIZE", "2"),
            ("P_MAX_SIZE", "8"),
            ("P_ACQUIRE_TIMEOUT", "1s 500ms"),
            ("P_IDLE_TIMEOUT", "off"),
            ("P_MAX_LIFETIME", "1h"),
            ("P_HEALTH_CHECK_INTERVAL", "none"),
            ("P_VALIDATION_TIMEOUT", "3s"),
            ("P_ALIVE_BYPASS_WINDOW", "100ms"),
            ("P_MAX_WAITING", "32"),
            ("P_LEAK_THRESHOLD", "30s"),
            ("P_REQUIRED", "no"),
        ]);
        let c = PoolConfig::from_lookup("P", |k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(
            c,
            PoolConfig {
                min_size: 2,
                max_size: 8,
                acquire_timeout: Duration::from_millis(1500),
                idle_timeout: None,
                max_lifetime: Some(Duration::from_secs(3600)),
                health_check_interval: None,
                validation_timeout: Duration::from_secs(3),
                alive_bypass_window: Duration::from_millis(100),
                max_waiting: Some(32),
                leak_threshold: Some(Duration::from_secs(30)),
                slow_acquire_threshold: Some(Duration::from_secs(1)),
                breaker: BreakerConfig::default(),
                required: false,
            }
        );
    }

    #[test]
    fn env_error_names_variable_and_value() {
        let err = PoolConfig::from_lookup("APP_DB", |k| {
            (k == "APP_DB_ACQUIRE_TIMEOUT").then(|| "soon".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.field(), "APP_DB_ACQUIRE_TIMEOUT");
        assert!(
            err.to_string().starts_with(
                "invalid pool config: APP_DB_ACQUIRE_TIMEOUT = soon: must be a duration"
            ),
            "{err}"
        );
    }

    #[test]
    fn serde_round_trip_and_unknown_field() {
        let c = PoolConfig::default()
            .max_waiting(Some(3))
            .idle_timeout(None);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<PoolConfig>(&json).unwrap(), c);
        let err = serde_json::from_str::<PoolConfig>(r#"{"max_sise": 3}"#).unwrap_err();
        assert!(err.to_string().contains("max_sise"), "{err}");
        let db: DbConfig = serde_json::from_str(r#"{"url": "x.db", "max_size": 3}"#).unwrap();
        assert_eq!(db.pool.max_size, 3);
    }
}
