//! [`HttpConfig`]: the upstream's base URL, the pool knobs and the HTTP
//! settings of one outbound HTTP pool.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::{
        ConfigError, EnvReader, PoolConfig, from_env, parse_bool, parse_count, parse_duration,
        pool_setters, setters, url_and_knobs,
    },
    secret::ConnectionUrl,
};

/// Configuration of one outbound HTTP pool (feature `http`): the upstream's
/// base URL, the pool knobs (`max_size` is a real cap on open connections;
/// a request waits for one under `acquire_timeout`), and HTTP settings.
///
/// `https://` upstreams are checked against the platform's roots and
/// [`tls_ca_file`](Self::tls_ca_file), and speak HTTP/2 or HTTP/1.1 as ALPN
/// decides.
///
/// ```
/// use std::time::Duration;
/// use axum_pools::HttpConfig;
///
/// let config = HttpConfig::new("http://billing.internal:8080/api")
///     .max_size(32)
///     .request_timeout(Duration::from_secs(3))
///     .retries(1);
/// assert_eq!(config.pool.max_size, 32);
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub struct HttpConfig {
    /// `http://host[:port][/base/path]`; request paths are appended to it.
    /// It carries no credentials and no query (the build refuses both:
    /// send a key as a header); should one slip in, it is shown and
    /// serialized masked, as every pool URL is.
    pub base_url: ConnectionUrl,
    /// The pool knobs; an unknown key among them is an error naming it.
    #[serde(flatten, deserialize_with = "crate::config::strict_knobs")]
    pub pool: PoolConfig,
    /// Bound on one attempt, from sending it until the response headers
    /// arrive (waiting for a pooled connection is bounded by
    /// `acquire_timeout` instead), and on reading a body with
    /// [`HttpResponse::bytes`](super::HttpResponse::bytes) and its kin.
    ///
    /// Default: `30s`.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Bound on opening a TCP connection.
    ///
    /// Default: `5s`.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Speak HTTP/2 (prior knowledge) instead of HTTP/1.1.
    ///
    /// Default: `false`.
    #[serde(default)]
    pub http2: bool,
    /// Further attempts after a failed one, for idempotent methods (`GET`,
    /// `HEAD`, `PUT`, `DELETE`, `OPTIONS`) only, unless
    /// `retry_non_idempotent`. An attempt fails when no response arrives
    /// (refused, reset, timed out) or it answers 502, 503 or 504.
    ///
    /// Default: `2`.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one (up to
    /// 1024 times this), each plus up to half of itself at random so that
    /// clients do not retry in step. `0` retries at once.
    ///
    /// Default: `100ms`.
    #[serde(with = "humantime_serde", default = "default_retry_backoff")]
    pub retry_backoff: Duration,
    /// Retry `POST` and `PATCH` too (only if the upstream deduplicates them).
    ///
    /// Default: `false`.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Redirects followed, to the same upstream (origin) only; `0` returns
    /// the 3xx as is. A 303, and a 301 or 302 answering a `POST`, is
    /// followed with a `GET` without body; 307 and 308 send the same
    /// method and body again.
    ///
    /// Default: `0`.
    #[serde(default)]
    pub max_redirects: u32,
    /// Largest response body, in bytes, that
    /// [`HttpResponse::bytes`](super::HttpResponse::bytes) (and `text`,
    /// `json`) reads into memory. A longer one fails with
    /// [`HttpError::BodyTooLarge`](super::HttpError::BodyTooLarge) (502) and
    /// its connection is closed (unless the whole body had already arrived:
    /// read to its end, the connection goes back). A body streamed through
    /// [`HttpResponse::into_parts`](super::HttpResponse::into_parts) is not
    /// bounded: its reader decides what to keep.
    ///
    /// Default: `10485760` (10 MiB).
    #[serde(default = "default_max_response_body")]
    pub max_response_body: u64,
    /// Path the health check sends `HEAD` to (then `GET` on 405).
    ///
    /// Default: `/`.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// For an `https://` upstream: a PEM file of CA certificates trusted
    /// besides the platform's roots (which honour `SSL_CERT_FILE`).
    ///
    /// Default: none.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// For an `https://` upstream that asks for one (mutual TLS): a PEM
    /// client certificate chain, with [`tls_client_key`](Self::tls_client_key).
    ///
    /// Default: none.
    #[serde(default)]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of [`tls_client_cert`](Self::tls_client_cert).
    ///
    /// Default: none.
    #[serde(default)]
    pub tls_client_key: Option<std::path::PathBuf>,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    2
}
fn default_retry_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_response_body() -> u64 {
    10 * 1024 * 1024
}
fn default_health_path() -> String {
    "/".to_owned()
}

impl HttpConfig {
    /// A config for the upstream at `base_url` with default settings.
    pub fn new(base_url: impl Into<ConnectionUrl>) -> Self {
        Self {
            base_url: base_url.into(),
            pool: PoolConfig::default(),
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
            http2: false,
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
            retry_non_idempotent: false,
            max_redirects: 0,
            max_response_body: default_max_response_body(),
            health_path: default_health_path(),
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }

    from_env! {
        /// Reads `{PREFIX}_URL` (the base URL, required), the pool knobs of
        /// [`PoolConfig::from_env`] and the HTTP settings
        /// `{PREFIX}_REQUEST_TIMEOUT`, `{PREFIX}_CONNECT_TIMEOUT`,
        /// `{PREFIX}_HTTP2`, `{PREFIX}_RETRIES`, `{PREFIX}_RETRY_BACKOFF`,
        /// `{PREFIX}_RETRY_NON_IDEMPOTENT`, `{PREFIX}_MAX_REDIRECTS`,
        /// `{PREFIX}_MAX_RESPONSE_BODY` (bytes), `{PREFIX}_HEALTH_PATH`,
        /// `{PREFIX}_TLS_CA_FILE`, `{PREFIX}_TLS_CLIENT_CERT` and
        /// `{PREFIX}_TLS_CLIENT_KEY`; an unset variable keeps the default.
        ///
        /// ```no_run
        /// let config = axum_pools::HttpConfig::from_env("HTTP")?; // HTTP_URL, HTTP_MAX_SIZE, HTTP_RETRIES, ...
        /// # Ok::<(), axum_pools::ConfigError>(())
        /// ```
    }

    /// [`HttpConfig::from_env`] over any source of variables.
    ///
    /// ```
    /// use std::{collections::HashMap, time::Duration};
    /// use axum_pools::HttpConfig;
    ///
    /// let vars = HashMap::from([
    ///     ("BILLING_URL", "http://billing.internal:8080"),
    ///     ("BILLING_MAX_SIZE", "32"),
    ///     ("BILLING_REQUEST_TIMEOUT", "3s"),
    ///     ("BILLING_MAX_RESPONSE_BODY", "1048576"),
    ///     ("BILLING_TLS_CLIENT_CERT", "/etc/ssl/me.pem"),
    ///     ("BILLING_TLS_CLIENT_KEY", "/etc/ssl/me.key"),
    /// ]);
    /// let config = HttpConfig::from_lookup("BILLING", |k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!(config.pool.max_size, 32);
    /// assert_eq!(config.request_timeout, Duration::from_secs(3));
    /// assert_eq!(config.max_response_body, 1 << 20);
    /// assert_eq!(config.tls_client_key.as_deref(), Some(std::path::Path::new("/etc/ssl/me.key")));
    ///
    /// let bad = HashMap::from([("B_URL", "http://b"), ("B_MAX_RESPONSE_BODY", "lots")]);
    /// let err = HttpConfig::from_lookup("B", |k| bad.get(k).map(|v| v.to_string())).unwrap_err();
    /// assert_eq!(err.field(), "B_MAX_RESPONSE_BODY");
    /// # Ok::<(), axum_pools::ConfigError>(())
    /// ```
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (url, pool) = url_and_knobs(prefix, &lookup)?;
        let mut c = Self::new(url);
        c.pool = pool;
        let env = EnvReader { prefix, lookup };
        env.read("REQUEST_TIMEOUT", &mut c.request_timeout, parse_duration)?;
        env.read("CONNECT_TIMEOUT", &mut c.connect_timeout, parse_duration)?;
        env.read("HTTP2", &mut c.http2, parse_bool)?;
        env.read("RETRIES", &mut c.retries, parse_number)?;
        env.read("RETRY_BACKOFF", &mut c.retry_backoff, parse_duration)?;
        env.read(
            "RETRY_NON_IDEMPOTENT",
            &mut c.retry_non_idempotent,
            parse_bool,
        )?;
        env.read("MAX_REDIRECTS", &mut c.max_redirects, parse_number)?;
        env.read("MAX_RESPONSE_BODY", &mut c.max_response_body, parse_number)?;
        env.read("HEALTH_PATH", &mut c.health_path, |v| Ok(v.to_owned()))?;
        env.read("TLS_CA_FILE", &mut c.tls_ca_file, |v| Ok(Some(v.into())))?;
        env.read("TLS_CLIENT_CERT", &mut c.tls_client_cert, |v| {
            Ok(Some(v.into()))
        })?;
        env.read("TLS_CLIENT_KEY", &mut c.tls_client_key, |v| {
            Ok(Some(v.into()))
        })?;
        Ok(c)
    }

    fn knobs(&mut self) -> &mut PoolConfig {
        &mut self.pool
    }

    fn this(&mut self) -> &mut Self {
        self
    }

    pool_setters!();

    setters! { this;
        /// Sets [`HttpConfig::request_timeout`].
        request_timeout: Duration,
        /// Sets [`HttpConfig::connect_timeout`].
        connect_timeout: Duration,
        /// Sets [`HttpConfig::http2`].
        http2: bool,
        /// Sets [`HttpConfig::retries`].
        retries: u32,
        /// Sets [`HttpConfig::retry_backoff`].
        retry_backoff: Duration,
        /// Sets [`HttpConfig::retry_non_idempotent`].
        retry_non_idempotent: bool,
        /// Sets [`HttpConfig::max_redirects`].
        max_redirects: u32,
        /// Sets [`HttpConfig::max_response_body`].
        max_response_body: u64,
    }

    /// Sets [`HttpConfig::health_path`].
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    /// Sets [`HttpConfig::tls_ca_file`].
    ///
    /// ```
    /// let config = axum_pools::HttpConfig::new("https://billing.internal").tls_ca_file("/etc/ssl/internal-ca.pem");
    /// assert!(config.tls_ca_file.is_some());
    /// ```
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Sets [`HttpConfig::tls_client_cert`] and
    /// [`HttpConfig::tls_client_key`]: the certificate this pool shows an
    /// upstream that asks for one.
    ///
    /// ```
    /// let config = axum_pools::HttpConfig::new("https://billing.internal")
    ///     .tls_client_identity("/etc/ssl/me.pem", "/etc/ssl/me.key");
    /// assert!(config.tls_client_key.is_some());
    /// ```
    pub fn tls_client_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls_client_cert = Some(cert.into());
        self.tls_client_key = Some(key.into());
        self
    }

    /// The bound on one attempt, from sending until the response head:
    /// `request_timeout`, or the pool's `query_timeout` when that is set and
    /// shorter.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.pool
            .query_timeout
            .map_or(self.request_timeout, |q| q.min(self.request_timeout))
    }

    /// Checks the HTTP settings; the error names the field and the value.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "0s", "must be greater than zero"));
            }
        }
        if self.max_response_body == 0 {
            return Err(ConfigError::new(
                "max_response_body",
                "0",
                "must be at least 1 (bytes)",
            ));
        }
        if !self.health_path.starts_with('/') {
            return Err(ConfigError::new(
                "health_path",
                &self.health_path,
                "must start with '/'",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("base_url", &self.base_url.to_string())
            .field("pool", &self.pool)
            .field("request_timeout", &self.request_timeout)
            .field("http2", &self.http2)
            .field("retries", &self.retries)
            .field("max_response_body", &self.max_response_body)
            .finish_non_exhaustive()
    }
}

/// A non-negative whole number (a count, or bytes).
fn parse_number<T: TryFrom<usize>>(v: &str) -> Result<T, String> {
    parse_count(v)?
        .try_into()
        .map_err(|_| "is too large".to_owned())
}
