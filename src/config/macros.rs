//! The builder methods and constructors every config type shares, as
//! macros: the knob setters, `from_env`, and the URL-plus-knobs configs
//! (`DbConfig`, `RedisConfig`).

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
    ($($extra:ident: $var:literal),*) => {
        /// Applies the pool knobs an operator set in the environment
        /// (`{PREFIX}_MAX_SIZE`, `{PREFIX}_ACQUIRE_TIMEOUT`,
        /// `{PREFIX}_QUERY_TIMEOUT`, …: the names and forms of
        /// [`PoolConfig::from_env`](crate::PoolConfig::from_env)) over those
        /// set so far, so the code gives the defaults and a deployment
        /// changes them without a rebuild (with the type's own switches, such
        /// as `{PREFIX}_TRANSACTION_POOLING` of a `DbConfig`). The error names
        /// the variable and its value.
        ///
        /// ```no_run
        /// // DB_MAX_SIZE=8 DB_QUERY_TIMEOUT=1s override the 16 and the default.
        /// let knobs = axum_pools::PoolConfig::default().max_size(16).knobs_from_env("DB")?;
        /// # Ok::<(), axum_pools::ConfigError>(())
        /// ```
        pub fn knobs_from_env(mut self, prefix: &str) -> Result<Self, $crate::ConfigError> {
            let knobs = ::std::mem::take(self.knobs());
            let lookup = |key: &str| ::std::env::var(key).ok();
            *self.knobs() = knobs.overridden_by(prefix, lookup)?;
            let _env = $crate::config::EnvReader { prefix, lookup };
            $(_env.read($var, &mut self.$extra, $crate::config::parse_bool)?;)*
            Ok(self)
        }

        $crate::config::setters! { knobs;
            /// Sets [`PoolConfig::min_size`].
            min_size: usize,
            /// Sets [`PoolConfig::max_size`].
            max_size: usize,
            /// Sets [`PoolConfig::acquire_timeout`].
            acquire_timeout: ::std::time::Duration,
            /// Sets [`PoolConfig::idle_timeout`].
            idle_timeout: Option<::std::time::Duration>,
            /// Sets [`PoolConfig::max_lifetime`].
            max_lifetime: Option<::std::time::Duration>,
            /// Sets [`PoolConfig::health_check_interval`].
            health_check_interval: Option<::std::time::Duration>,
            /// Sets [`PoolConfig::validation_timeout`].
            validation_timeout: ::std::time::Duration,
            /// Sets [`PoolConfig::alive_bypass_window`].
            alive_bypass_window: ::std::time::Duration,
            /// Sets [`PoolConfig::max_waiting`].
            max_waiting: Option<usize>,
            /// Sets [`PoolConfig::leak_threshold`].
            leak_threshold: Option<::std::time::Duration>,
            /// Sets [`PoolConfig::slow_acquire_threshold`].
            slow_acquire_threshold: Option<::std::time::Duration>,
            /// Sets [`PoolConfig::query_timeout`].
            query_timeout: Option<::std::time::Duration>,
            /// Sets [`PoolConfig::breaker`].
            breaker: $crate::config::BreakerConfig,
            /// Sets [`PoolConfig::required`].
            required: bool,
        }
    };
}

/// `from_env(prefix)`: the type's `from_lookup` over the process
/// environment, with the docs given.
macro_rules! from_env {
    ($(#[$doc:meta])*) => {
        $(#[$doc])*
        pub fn from_env(prefix: &str) -> Result<Self, $crate::ConfigError> {
            Self::from_lookup(prefix, |key| ::std::env::var(key).ok())
        }
    };
}

/// The methods of a config that is a server URL plus the shared knobs
/// (`DbConfig`, `RedisConfig`): `from_url`, `from_env`, `from_lookup`, the
/// knob setters, and a `Debug` that redacts the URL. `$prefix` and `$url`
/// make the examples. `$extra` are the type's own switches (`bool`, off by
/// default, read from `{PREFIX}_$var`); each has its setter.
macro_rules! url_config {
    ($name:ident, $prefix:literal, $url:literal $(; $($(#[$doc:meta])* $extra:ident: $var:literal),*)?) => {
        impl $name {
            /// A config for `url` with default knobs.
            pub fn from_url(url: impl Into<$crate::ConnectionUrl>) -> Self {
                Self {
                    url: url.into(),
                    pool: $crate::PoolConfig::default(),
                    $($($extra: false,)*)?
                }
            }

            $($(
                $(#[$doc])*
                pub fn $extra(mut self, $extra: bool) -> Self {
                    self.$extra = $extra;
                    self
                }
            )*)?

            $crate::config::from_env! {
                #[doc = concat!(
                    "Reads `{PREFIX}_URL` (required) and the knobs of ",
                    "[`PoolConfig::from_env`](crate::PoolConfig::from_env).\n\n",
                    "```no_run\nlet config = axum_pools::", stringify!($name),
                    "::from_env(\"", $prefix, "\")?; // ", $prefix, "_URL, ", $prefix,
                    "_MAX_SIZE, ...\n# Ok::<(), axum_pools::ConfigError>(())\n```"
                )]
            }

            #[doc = concat!(
                "[`", stringify!($name), "::from_env`] over any source of variables.\n\n",
                "```\nuse std::collections::HashMap;\nuse axum_pools::", stringify!($name), ";\n\n",
                "let vars = HashMap::from([(\"", $prefix, "_URL\", \"", $url, "\"), (\"", $prefix,
                "_MAX_SIZE\", \"4\")]);\n",
                "let config = ", stringify!($name), "::from_lookup(\"", $prefix,
                "\", |k| vars.get(k).map(|v| v.to_string()))?;\n",
                "assert_eq!(config.url.to_string(), \"", $url, "\");\n",
                "assert_eq!(config.pool.max_size, 4);\n\n",
                "let err = ", stringify!($name), "::from_lookup(\"", $prefix, "\", |_| None).unwrap_err();\n",
                "assert_eq!(err.to_string(), \"invalid pool config: ", $prefix,
                "_URL is not set: set it to the server URL\");\n",
                "# Ok::<(), axum_pools::ConfigError>(())\n```"
            )]
            pub fn from_lookup(
                prefix: &str,
                lookup: impl Fn(&str) -> Option<String>,
            ) -> Result<Self, $crate::ConfigError> {
                let (url, pool) = $crate::config::url_and_knobs(prefix, &lookup)?;
                #[allow(unused_mut)]
                let mut config = Self { url: url.into(), pool, $($($extra: false,)*)? };
                let _env = $crate::config::EnvReader { prefix, lookup };
                $($(_env.read($var, &mut config.$extra, $crate::config::parse_bool)?;)*)?
                Ok(config)
            }

            fn knobs(&mut self) -> &mut $crate::PoolConfig {
                &mut self.pool
            }

            $crate::config::pool_setters!($($($extra: $var),*)?);
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("url", &self.url.to_string())
                    .field("pool", &self.pool)
                    $($(.field(stringify!($extra), &self.$extra))*)?
                    .finish()
            }
        }
    };
}

pub(crate) use {from_env, pool_setters, setters, url_config};
