//! [`ConfigError`]: a rejected configuration value, naming pool, field and
//! value.

use std::fmt;

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
    pub(super) pool: Option<String>,
    pub(super) field: String,
    pub(super) value: Option<String>,
    pub(super) reason: String,
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
