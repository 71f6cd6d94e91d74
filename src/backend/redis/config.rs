//! [`RedisConfig`]: a Redis pool's URL and knobs.

use serde::{Deserialize, Serialize};

use crate::{
    config::{PoolConfig, url_config},
    secret::ConnectionUrl,
};

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
    /// The Redis URL, its password or token held as a secret: shown and
    /// serialized masked.
    pub url: ConnectionUrl,
    /// The pool knobs; an unknown key among them is an error naming it.
    #[serde(flatten, deserialize_with = "crate::config::strict_knobs")]
    pub pool: PoolConfig,
}

url_config!(RedisConfig, "REDIS", "redis://127.0.0.1:6379/1");

impl RedisConfig {
    /// A Redis Cluster pool that starts from `nodes` (`host:port` each; any
    /// reachable master or replica will do, the pool learns the rest): the
    /// same as `from_url("redis+cluster://h1:p1,h2:p2/")`. For credentials
    /// or TLS, write the URL (`rediss+cluster://user:password@h1:p1,…/`).
    ///
    /// ```
    /// use axum_pools::RedisConfig;
    ///
    /// let config = RedisConfig::cluster(["10.0.0.1:7000", "10.0.0.2:7000"]).max_size(8);
    /// assert_eq!(config.url.to_string(), "redis+cluster://10.0.0.1:7000,10.0.0.2:7000/");
    /// ```
    pub fn cluster<I>(nodes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::from_url(format!("redis+cluster://{}/", joined(nodes)))
    }

    /// A pool behind Redis Sentinel: each new connection asks `sentinels`
    /// (`host[:port]` each, port 26379 by default) for the master called
    /// `master_name`, so a failover is followed without a restart. The same
    /// as `from_url("redis+sentinel://s1:p1,s2:p2/mymaster")`; for the
    /// master's credentials, a database or TLS, write the URL
    /// (`rediss+sentinel://:password@s1:p1,…/mymaster/2`).
    ///
    /// ```
    /// use axum_pools::RedisConfig;
    ///
    /// let config = RedisConfig::sentinel(["10.0.0.5:26379", "10.0.0.6"], "mymaster");
    /// assert_eq!(config.url.to_string(), "redis+sentinel://10.0.0.5:26379,10.0.0.6/mymaster");
    /// ```
    pub fn sentinel<I>(sentinels: I, master_name: &str) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::from_url(format!(
            "redis+sentinel://{}/{master_name}",
            joined(sentinels)
        ))
    }
}

fn joined<I>(hosts: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let hosts: Vec<String> = hosts
        .into_iter()
        .map(|h| h.as_ref().trim().to_owned())
        .collect();
    hosts.join(",")
}
