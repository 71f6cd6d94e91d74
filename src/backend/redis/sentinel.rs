//! Redis Sentinel: the `redis+sentinel://` URL form, and finding the
//! current master for each new connection.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use redis::{
    IntoConnectionInfo, TlsCertificates, TlsMode,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};

/// A pool behind Sentinel: the sentinels to ask (with the master's name
/// and how to log in to it), and the master seen last.
pub(super) struct Sentinels {
    client: tokio::sync::Mutex<SentinelClient>,
    name: String,
    pub(super) db: i64,
    /// `host:port` of the master the last connection went to.
    current: Mutex<Option<String>>,
    failovers: AtomicU64,
}

/// A sentinel's port when the URL names none.
const SENTINEL_PORT: u16 = 26379;

impl Sentinels {
    /// From `redis+sentinel://[user:password@]s1:p1,s2:p2/name[/db]`, or
    /// `rediss+sentinel://` where the sentinels and the master speak TLS
    /// (checked against `certs`' CA when given, else the platform's roots);
    /// `None` for any other URL. The credentials and database are the
    /// master's; the sentinels are asked without them. The error never
    /// shows the credentials.
    pub(super) fn parse(url: &str, certs: Option<TlsCertificates>) -> Result<Option<Self>, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            ("rediss", rest)
        } else {
            return Ok(None);
        };
        let parts = super::url::hosts(rest);
        let (credentials, path, query) = (&parts.credentials, parts.path, &parts.query);
        let mut path = path.split('/').filter(|s| !s.is_empty());
        let usage = "e.g. redis+sentinel://s1:26379,s2:26379/mymaster or …/mymaster/2";
        let Some(name) = path.next() else {
            return Err(format!(
                "redis+sentinel: name the master after the hosts, {usage}"
            ));
        };
        let db = match path.next() {
            None => "0",
            Some(db) if db.parse::<i64>().is_ok() => db,
            Some(db) => {
                return Err(format!(
                    "redis+sentinel: database {db:?} is not a number, {usage}"
                ));
            }
        };
        let sentinels = parts
            .hosts
            .iter()
            .map(|host| {
                let has_port = host
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
                let host = if has_port {
                    (*host).to_owned()
                } else {
                    format!("{host}:{SENTINEL_PORT}")
                };
                format!("{scheme}://{host}/")
                    .into_connection_info()
                    .map(|info| info.addr().clone())
                    .map_err(|e| format!("redis+sentinel: sentinel {host}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sentinels.is_empty() {
            return Err(format!("redis+sentinel: name the sentinels, {usage}"));
        }
        // How to log in to whichever master: the redis crate's parse of a
        // one-server URL with these credentials, database and query.
        let failed = |e: redis::RedisError| format!("redis+sentinel: {e}");
        let template = redis::Client::open(format!("redis://{credentials}localhost/{db}{query}"))
            .map_err(failed)?;
        let settings = template.get_connection_info().redis_settings();
        let mut builder = SentinelClientBuilder::new(sentinels, name, SentinelServerType::Master)
            .map_err(failed)?
            .set_client_to_redis_db(settings.db())
            .set_client_to_redis_protocol(settings.protocol());
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if scheme == "rediss" {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certs) = certs {
                builder = builder
                    .set_client_to_sentinel_certificates(certs.clone())
                    .set_client_to_redis_certificates(certs);
            }
        }
        Ok(Some(Self {
            client: tokio::sync::Mutex::new(builder.build().map_err(failed)?),
            name: name.to_owned(),
            db: settings.db(),
            current: Mutex::new(None),
            failovers: AtomicU64::new(0),
        }))
    }

    /// A client of the current master: the sentinels name it, and it says
    /// it is a master (`ROLE`). A change of master is logged and counted.
    pub(super) async fn master(&self, pool: &str) -> redis::RedisResult<redis::Client> {
        let client = self.client.lock().await.async_get_client().await?;
        let address = client.get_connection_info().addr().to_string();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = current.as_ref().filter(|before| **before != address) {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pool, master = %self.name, from = %before, to = %address, "redis master changed");
        }
        *current = Some(address);
        Ok(client)
    }

    /// The changes of master seen.
    pub(super) fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// The master's name, its address last seen and the changes counted.
    pub(super) fn facts(&self) -> [(String, String); 3] {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        [
            ("sentinel_master".to_owned(), self.name.clone()),
            ("master".to_owned(), current.unwrap_or_default()),
            (
                "failovers".to_owned(),
                self.failovers.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_master_and_refuse_what_they_cannot_mean() {
        assert!(Sentinels::parse("redis://h:1/0", None).unwrap().is_none());
        for url in [
            "redis+sentinel://:s3cret@s1:1,s2:2/mymaster/3",
            "rediss+sentinel://:s3cret@s1,[::1]:2/mymaster/3",
        ] {
            let s = Sentinels::parse(url, None).unwrap().unwrap();
            assert_eq!((s.name.as_str(), s.db), ("mymaster", 3));
        }
        for (url, says) in [
            ("redis+sentinel://:s3cret@s1:1/", "name the master"),
            ("redis+sentinel://:s3cret@/m", "name the sentinels"),
            ("redis+sentinel://:s3cret@s1:1/m/x", "is not a number"),
        ] {
            let e = Sentinels::parse(url, None).err().unwrap();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
